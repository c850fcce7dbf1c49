"""Standard output files from a session's events: plain transcript, SRT, WebVTT and RTTM.

`SessionRecord` folds the event stream into final captions (revisions applied by
`engine.events.apply_revision`, as in the TUI) and speaker turns; the `*_text` functions render them; `write_atomically` writes through a temporary file in
the same folder and `os.replace`, so a reader never sees a half-written file, even after Ctrl-C.
Files get the mode the umask gives (like any other program's output).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from engine.events import (
    CaptionFinal,
    CaptionRevision,
    Event,
    SpeakerTurn,
    apply_revision,
)
from engine.timebase import frames_to_seconds


class SessionRecord:
    """Final captions (revisions applied) and speaker turns of one session, in arrival order."""

    def __init__(self) -> None:
        self.captions: dict[int, CaptionFinal] = {}
        self.turns: list[SpeakerTurn] = []

    def add(self, event: Event | None) -> None:
        """Fold one event into the record; other event types are ignored."""
        if isinstance(event, CaptionFinal):
            self.captions[event.caption_id] = event
        elif isinstance(event, CaptionRevision) and event.caption_id in self.captions:
            self.captions[event.caption_id] = apply_revision(self.captions[event.caption_id], event)
        elif isinstance(event, SpeakerTurn):
            self.turns.append(event)

    def ordered_captions(self) -> list[CaptionFinal]:
        """Non-empty captions in time order."""
        caps = [c for c in self.captions.values() if c.text.strip()]
        return sorted(caps, key=lambda c: (c.start_frame, c.caption_id))

    def speaker_turn_lines(self) -> list[tuple[str | None, str]]:
        """(speaker, text) per speaker turn: consecutive captions of one speaker are joined."""
        lines: list[tuple[str | None, str]] = []
        for cap in self.ordered_captions():
            text = " ".join(cap.text.split())
            if lines and lines[-1][0] == cap.speaker:
                lines[-1] = (cap.speaker, lines[-1][1] + " " + text)
            else:
                lines.append((cap.speaker, text))
        return lines


def transcript_text(record: SessionRecord) -> str:
    """Final words only, in time order, one line per speaker turn; no labels, times or markup."""
    return "".join(text + "\n" for _, text in record.speaker_turn_lines())


def _stamp(frames: int, sep: str) -> str:
    ms = round(frames_to_seconds(frames) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _label(speaker: str | None) -> str:
    return speaker if speaker else "unknown"


def srt_text(record: SessionRecord) -> str:
    """SubRip cues, one per final caption, each prefixed with its speaker's label."""
    cues = []
    for n, cap in enumerate(record.ordered_captions(), start=1):
        cues.append(
            f"{n}\n{_stamp(cap.start_frame, ',')} --> {_stamp(cap.end_frame, ',')}\n"
            f"[{_label(cap.speaker)}] {cap.text}\n"
        )
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_text(record: SessionRecord) -> str:
    """WebVTT cues with the speaker as a voice span (`<v name>`)."""
    parts = ["WEBVTT\n"]
    for cap in record.ordered_captions():
        parts.append(
            f"{_stamp(cap.start_frame, '.')} --> {_stamp(cap.end_frame, '.')}\n"
            f"<v {_vtt_escape(_label(cap.speaker))}>{_vtt_escape(cap.text)}\n"
        )
    return "\n".join(parts)


def rttm_text(record: SessionRecord, file_id: str = "live") -> str:
    """NIST RTTM `SPEAKER` lines, one per speaker turn, in time order (overlaps kept)."""
    lines = []
    for t in sorted(record.turns, key=lambda t: (t.start_frame, t.speaker)):
        start = frames_to_seconds(t.start_frame)
        dur = frames_to_seconds(t.end_frame - t.start_frame)
        name = "".join(ch if not ch.isspace() else "_" for ch in t.speaker)
        lines.append(f"SPEAKER {file_id} 1 {start:.3f} {dur:.3f} <NA> <NA> {name} <NA> <NA>\n")
    return "".join(lines)


TEMP_PREFIX = ".tmp-unispeech-"  # + "<pid>-<random>-<target name>": whose temp file it is


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so nothing is changed even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and `os.replace`.

    The file gets the mode a plain `open()` would give it (0666 minus the umask), not mkstemp's
    0600; the temporary file is removed on any error, and one left by a killed process is
    removed by the next run (`remove_stale_temp_files`).
    """
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix="-" + os.path.basename(target),
                               dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[str]:
    """Remove temporary files for `path` left by runs that no longer exist; returns what was removed.

    Only files named by `write_atomically` for this target whose writing process is gone are
    touched, so a concurrent run writing the same file keeps its temporary file.
    """
    target = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(target)
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        if not (entry.startswith(TEMP_PREFIX) and entry.endswith("-" + name)):
            continue
        pid_text = entry[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
            removed.append(os.path.join(folder, entry))
        except OSError:
            pass
    return removed


RENDERERS: dict[str, Callable[[SessionRecord], str]] = {
    "transcript": transcript_text,
    "srt": srt_text,
    "vtt": vtt_text,
    "rttm": rttm_text,
}


def check_writable(path: str) -> None:
    """Fail early (before any audio is processed) if `path`'s folder does not exist or is not writable."""
    from app.errors import AppError

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise AppError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise AppError(f"{path}: folder {folder} is not writable")
    if os.path.isdir(path):
        raise AppError(f"{path}: is a folder")


def write_outputs(record: SessionRecord, outputs: dict[str, str], file_id: str = "live") -> None:
    """Write every requested output (kind -> path) atomically."""
    for kind, path in outputs.items():
        if kind == "rttm":
            write_atomically(path, rttm_text(record, file_id))
        else:
            write_atomically(path, RENDERERS[kind](record))
