"""What the terminal UI shows, folded from engine events: captions, the speaker timeline, gauges.

Plain objects with no textual in them, so tests drive them with events and read the text they
render. `CaptionBoard` applies revisions with `engine.events.apply_revision`, the reducer the
output files use, so the screen and the files agree.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from rich.text import Text

from engine.events import (
    CaptionFinal,
    CaptionPartial,
    CaptionRevision,
    Event,
    SpeakerActivity,
    SpeakerMatch,
    SpeakerTurn,
    Stats,
    apply_revision,
)
from engine.timebase import FRAMES_PER_SECOND

PALETTE = ("cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "bright_cyan", "orange1")
TIMELINE_S = 30
UNKNOWN = "unknown"  # the engine's label for speech no x-vector has named yet
MAX_CAPTIONS = 300


class SpeakerColours:
    """A stable colour per speaker label, in order of first appearance."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def __call__(self, speaker: str | None) -> str:
        if speaker is None:
            return "white"
        if speaker not in self._map:
            self._map[speaker] = PALETTE[len(self._map) % len(PALETTE)]
        return self._map[speaker]


class CaptionBoard:
    """Final captions (revisions applied) plus the current partial, for rendering."""

    def __init__(self, colours: SpeakerColours) -> None:
        self.colours = colours
        self.lines: dict[int, CaptionFinal] = {}  # as revised, by `apply_revision`, as the files are
        self.order: deque[int] = deque()
        self.partial: CaptionPartial | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, CaptionPartial):
            self.partial = event if event.text.strip() else None
        elif isinstance(event, CaptionFinal):
            self.lines[event.caption_id] = event
            self.order.append(event.caption_id)
            if self.partial is not None and self.partial.end_frame <= event.end_frame:
                self.partial = None
            while len(self.order) > MAX_CAPTIONS:
                self.lines.pop(self.order.popleft(), None)
        elif isinstance(event, CaptionRevision) and event.caption_id in self.lines:
            self.lines[event.caption_id] = apply_revision(self.lines[event.caption_id], event)

    def render(self) -> Text:
        out = Text()
        prev: str | None | bool = False
        for cid in self.order:
            line = self.lines[cid]
            if not line.text.strip():
                continue
            colour = self.colours(line.speaker)
            if line.speaker != prev:
                if prev is not False:
                    out.append("\n")
                out.append(f"{line.speaker or 'unknown'}: ", style=f"bold {colour}")
                prev = line.speaker
            else:
                out.append(" ")
            out.append(line.text, style=colour)
        if self.partial is not None:
            colour = self.colours(self.partial.speaker)
            if prev is not False and self.partial.speaker != prev:
                out.append("\n")
                out.append(f"{self.partial.speaker or '…'}: ", style=f"dim {colour}")
            elif prev is False:
                out.append(f"{self.partial.speaker or '…'}: ", style=f"dim {colour}")
            out.append(" " + self.partial.text, style=f"dim italic {colour}")
        return out

    def plain(self) -> str:
        return self.render().plain


class Timeline:
    """Who spoke when over the last `TIMELINE_S` seconds: one lane per speaker, overlaps marked."""

    def __init__(self, colours: SpeakerColours) -> None:
        self.colours = colours
        self.spans: deque[tuple[str, int, int, int]] = deque(maxlen=4000)  # (speaker, start, end, channel)
        self.now_frame = 0
        self.renames: dict[str, str] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, SpeakerActivity):
            for k, speaker in enumerate(event.speakers):
                run_start = None
                for i, row in enumerate(event.probs + ((0.0,) * len(event.speakers),)):
                    active = row[k] >= 0.5
                    if active and run_start is None:
                        run_start = i
                    elif not active and run_start is not None:
                        self.spans.append((speaker, event.start_frame + run_start, event.start_frame + i, k))
                        run_start = None
            self.now_frame = max(self.now_frame, event.start_frame + len(event.probs))
        elif isinstance(event, SpeakerTurn):
            self.now_frame = max(self.now_frame, event.end_frame)
            if event.speaker != UNKNOWN:
                self._claim(event.speaker, event.start_frame, event.end_frame)
        elif isinstance(event, (CaptionFinal, CaptionPartial)):
            self.now_frame = max(self.now_frame, event.end_frame)
        elif isinstance(event, Stats):
            self.now_frame = max(self.now_frame, event.audio_frames)

    def rename(self, old: str, new: str) -> None:
        self.spans = deque((((new if s == old else s), a, b, c) for s, a, b, c in self.spans), maxlen=4000)

    def _claim(self, speaker: str, start: int, end: int) -> None:
        """Move `unknown` activity inside a settled turn to its speaker's lane: a run is drawn as
        `unknown` until its first x-vector (2 s of speech), and short turns only get one at the end.
        Turns carry no channel: the channel whose `unknown` activity covers the turn most is its
        own, so another voice overlapping it stays apart."""
        cover: dict[int, int] = {}
        for s, a, b, c in self.spans:
            if s == UNKNOWN and a < end and b > start:
                cover[c] = cover.get(c, 0) + min(b, end) - max(a, start)
        if not cover:
            return
        channel = max(cover, key=lambda c: (cover[c], -c))
        spans: deque[tuple[str, int, int, int]] = deque(maxlen=4000)
        for s, a, b, c in self.spans:
            if s != UNKNOWN or c != channel or b <= start or a >= end:
                spans.append((s, a, b, c))
                continue
            if a < start:
                spans.append((s, a, start, c))
            spans.append((speaker, max(a, start), min(b, end), c))
            if b > end:
                spans.append((s, end, b, c))
        self.spans = spans

    def lanes(self, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(speaker -> active per column, overlap per column) over the last TIMELINE_S seconds.

        Activity is painted per 20 ms frame first, so a column shows overlap only where two
        speakers were active in the same frame, not where one's turn ends and another's begins.
        """
        width = max(10, width)
        n = TIMELINE_S * FRAMES_PER_SECOND
        start = self.now_frame - n
        frames: dict[str, np.ndarray] = {}
        for speaker, a, b, _ in self.spans:
            lane = frames.setdefault(speaker, np.zeros(n, dtype=bool))
            a, b = max(a - start, 0), min(b - start, n)
            if b > a:
                lane[a:b] = True
        if not frames:
            return {}, np.zeros(width, dtype=bool)
        edges = np.linspace(0, n, width + 1).astype(int)
        overlap_frames = np.sum(list(frames.values()), axis=0) > 1
        cols = lambda x: np.maximum.reduceat(x, edges[:-1])  # noqa: E731 - any() per column
        return ({s: cols(f) for s, f in frames.items() if f.any()}, cols(overlap_frames))

    def render(self, width: int = 60) -> Text:
        label_w = 12
        ncols = max(10, width - label_w - 2)
        lanes, overlap = self.lanes(ncols)
        if not lanes:
            return Text(f"no speech in the last {TIMELINE_S} s", style="dim")
        out = Text()
        for speaker, lane in lanes.items():
            colour = self.colours(speaker)
            out.append(f"{speaker[:label_w]:<{label_w}} ", style=f"bold {colour}")
            for active, both in zip(lane, overlap):
                out.append("█" if active and both else ("▆" if active else "·"),
                           style=colour if active else "grey30")
            out.append("\n")
        out.append(f"{'overlap':<{label_w}} ", style="dim")
        out.append("".join("^" if o else " " for o in overlap), style="red")
        out.append(f"\n{'':<{label_w}} -{TIMELINE_S}s{'now':>{ncols - 4}}", style="dim")
        return out


class Gauges:
    """The latest figures to show: matches, stats, dropped events."""

    def __init__(self) -> None:
        self.matches: dict[str, SpeakerMatch] = {}
        self.stats: Stats | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, SpeakerMatch):
            self.matches[event.track] = event
        elif isinstance(event, Stats):
            self.stats = event

    def rename(self, old: str, new: str) -> None:
        if old in self.matches:
            self.matches[new] = self.matches.pop(old)
