"""Score the streaming engine on a folder of recordings: DER split into its parts, WER and CER.

    python -m app.evaluate_folder DIR [--out REPORT.json] [--save-hyp DIR] [model options]

Every `NAME.wav` in DIR needs `NAME.rttm` (reference speaker turns) and/or `NAME.txt` (reference
words). Each file runs through the same engine and session code as `run_live.py --input NAME.wav
--headless --fast --rttm OUT` (default settings, models loaded once, an empty speaker store so the
user's enrolled voices play no part), in this process, as fast as compute allows. Scoring
(`engine.scoring`) follows md-eval: 0.25 s collar each side of every reference boundary,
overlapped speech scored, the whole file as the scored region, the optimal one-to-one speaker
mapping. Words are the final captions with revisions applied (what `--transcript` writes), compared
after `normalize_words`. Per-file and pooled figures go to stdout, the full report to `--out` as
JSON, progress to stderr; a bad folder is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from app.errors import AppError
from app.writers import SessionRecord, check_writable, rttm_text, transcript_text, write_atomically
from engine.scoring import (
    DEFAULT_COLLAR_S,
    DerResult,
    Segment,
    diarization_error,
    edit_distance,
    normalize_words,
    read_rttm,
)
from engine.timebase import SAMPLE_RATE

RULES = {
    "collar_s": DEFAULT_COLLAR_S,
    "collar": "each side of every reference segment boundary",
    "overlap": "scored",
    "scored_region": "the whole file",
    "grid_ms": 1,
    "speaker_mapping": "optimal one-to-one (maximum jointly active time)",
    "words": "final captions with revisions applied; upper case, punctuation dropped, in-word apostrophes kept",
}


@dataclass(frozen=True, slots=True)
class Recording:
    """One WAV of the folder and its references (None where that reference is absent)."""

    name: str
    wav: str
    turns: tuple[Segment, ...] | None
    words: str | None  # normalised reference words


# --- the folder ----------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError:
        raise AppError(f"{path}: is not UTF-8 text") from None
    except OSError as exc:
        raise AppError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def read_reference_turns(path: str, name: str) -> tuple[Segment, ...]:
    """Reference turns of recording `name` from an RTTM file.

    The lines whose file id is `name` are used; a file that holds a single file id is taken whole
    (whatever the id); an RTTM with no SPEAKER line means no speech.
    """
    try:
        by_file = read_rttm(_read_text(path))
    except ValueError as exc:
        raise AppError(f"{path}: {exc}") from None
    if name in by_file:
        return tuple(by_file[name])
    if len(by_file) == 1:
        return tuple(next(iter(by_file.values())))
    if not by_file:
        return ()
    ids = ", ".join(sorted(by_file))
    raise AppError(f"{path}: holds turns of several files ({ids}) and none of them is {name!r}")


def read_reference_words(path: str) -> str:
    """Normalised reference words from a text file (any layout: lines are joined)."""
    words = normalize_words(_read_text(path))
    if not words:
        raise AppError(f"{path}: holds no words to score against")
    return words


def _check_audio(path: str) -> None:
    import soundfile as sf

    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AppError(f"{path}: cannot read it as audio ({reason})") from None
    if info.frames == 0:
        raise AppError(f"{path}: the file holds no samples")


def find_recordings(folder: str) -> list[Recording]:
    """Every `NAME.wav` in `folder` (sorted, not recursive) with its `NAME.rttm` / `NAME.txt`.

    Everything is read and checked before any audio is processed, so a bad folder fails at once.
    """
    if not os.path.exists(folder):
        raise AppError(f"{folder}: no such folder")
    if not os.path.isdir(folder):
        raise AppError(f"{folder}: is not a folder; give the folder that holds the WAV files")
    entries = sorted(os.listdir(folder))
    wavs = [e for e in entries if e.lower().endswith(".wav") and os.path.isfile(os.path.join(folder, e))]
    if not wavs:
        raise AppError(f"{folder}: holds no .wav file (expected NAME.wav with NAME.rttm and/or NAME.txt)")
    recordings = []
    for wav in wavs:
        name = wav[: -len(".wav")]
        rttm, txt = (os.path.join(folder, name + ext) for ext in (".rttm", ".txt"))
        has_rttm, has_txt = os.path.isfile(rttm), os.path.isfile(txt)
        if not has_rttm and not has_txt:
            raise AppError(f"{os.path.join(folder, wav)} has no reference: put {name}.rttm (speaker turns) "
                           f"and/or {name}.txt (words) beside it")
        path = os.path.join(folder, wav)
        _check_audio(path)
        recordings.append(Recording(
            name, path,
            read_reference_turns(rttm, name) if has_rttm else None,
            read_reference_words(txt) if has_txt else None,
        ))
    return recordings


# --- running the engine --------------------------------------------------------------------


async def _run_session(engine: Any, speakers: Any, samples: np.ndarray, label: str) -> SessionRecord:
    from app.session import InputChoice, LiveSession, SessionOptions

    source = InputChoice("file", label, samples=samples, speed=None)  # speed None: --fast
    session = LiveSession(engine, source, SessionOptions(headless=True), speakers)
    try:
        await session.start()
        await session.run_input()
    finally:
        await session.close()
    return session.record


def run_recording(engine: Any, speakers: Any, samples: np.ndarray, label: str) -> SessionRecord:
    """The session record (final captions, speaker turns) of one file run as `--fast` runs it."""
    return asyncio.run(_run_session(engine, speakers, samples, label))


# --- scoring -------------------------------------------------------------------------------


def _der_entry(result: DerResult, ref_speakers: int | None = None, hyp_speakers: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "scored_s": round(result.scored_s, 3), "miss_s": round(result.miss_s, 3),
        "false_alarm_s": round(result.false_alarm_s, 3), "confusion_s": round(result.confusion_s, 3),
        **result.rates(),
    }
    if ref_speakers is not None:
        entry["ref_speakers"] = ref_speakers
        entry["hyp_speakers"] = hyp_speakers
    return entry


def _text_entry(ref_words: int, word_errors: int, ref_chars: int, char_errors: int) -> dict[str, Any]:
    return {"ref_words": ref_words, "word_errors": word_errors, "wer": word_errors / ref_words,
            "ref_chars": ref_chars, "char_errors": char_errors, "cer": char_errors / ref_chars}


def score_recording(recording: Recording, record: SessionRecord, n_samples: int) -> dict[str, Any]:
    """Per-file figures: DER parts against the RTTM, WER/CER against the TXT (None where absent)."""
    hypothesis = read_rttm(rttm_text(record, "hyp")).get("hyp", [])
    words = normalize_words(transcript_text(record))
    entry: dict[str, Any] = {"file": os.path.basename(recording.wav), "audio_s": round(n_samples / SAMPLE_RATE, 3),
                             "der": None, "text": None, "hypothesis_words": words}
    if recording.turns is not None:
        result = diarization_error(list(recording.turns), hypothesis, end_sample=n_samples)
        entry["der"] = _der_entry(result, len({s.speaker for s in recording.turns}),
                                  len({s.speaker for s in hypothesis}))
    if recording.words is not None:
        ref = recording.words
        entry["text"] = _text_entry(len(ref.split()), edit_distance(ref.split(), words.split()),
                                    len(ref), edit_distance(ref, words))
    return entry


def pool(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures: error time over scored time summed over files, word/char edits likewise."""
    scored = [f["der"] for f in files if f["der"] is not None]
    texts = [f["text"] for f in files if f["text"] is not None]
    out: dict[str, Any] = {"files": len(files), "audio_s": round(sum(f["audio_s"] for f in files), 3),
                           "der": None, "text": None}
    if scored:
        total = DerResult(0.0, 0.0, 0.0, 0.0)
        for d in scored:
            total = total + DerResult(d["scored_s"], d["miss_s"], d["false_alarm_s"], d["confusion_s"])
        out["der"] = _der_entry(total)
        out["der"]["files"] = len(scored)
    if texts:
        out["text"] = _text_entry(*(sum(t[k] for t in texts) for k in ("ref_words", "word_errors", "ref_chars",
                                                                        "char_errors")))
        out["text"]["files"] = len(texts)
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """The per-file and pooled table printed on stdout."""
    head = f"{'file':<24} {'audio':>7} {'spk ref/hyp':>11} {'DER':>7} {'miss':>7} {'FA':>7} {'conf':>7} {'WER':>7} {'CER':>7}"
    lines = [head, "-" * len(head)]

    def row(label: str, audio_s: float, spk: str, der: dict | None, text: dict | None) -> str:
        d = der or {}
        t = text or {}
        return (f"{label:<24} {audio_s:>6.1f}s {spk:>11} {_pct(d.get('der')):>7} {_pct(d.get('miss')):>7} "
                f"{_pct(d.get('false_alarm')):>7} {_pct(d.get('confusion')):>7} {_pct(t.get('wer')):>7} "
                f"{_pct(t.get('cer')):>7}")

    for f in report["files"]:
        spk = f"{f['der']['ref_speakers']}/{f['der']['hyp_speakers']}" if f["der"] else "-"
        lines.append(row(f["file"], f["audio_s"], spk, f["der"], f["text"]))
    p = report["pooled"]
    lines.append("-" * len(head))
    lines.append(row(f"pooled ({p['files']} file{'s' if p['files'] != 1 else ''})", p["audio_s"], "", p["der"],
                     p["text"]))
    lines.append(f"DER: md-eval rules, {DEFAULT_COLLAR_S} s collar each side, overlap scored, whole file scored; "
                 f"{report['wall_s']:.1f} s wall for {p['audio_s']:.1f} s of audio")
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------


def evaluate(recordings: list[Recording], engine: Any, speakers: Any = None, save_hyp: str | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run and score every recording; returns the report (without the header fields `main` adds)."""
    from app.sources import check_samples, load_audio

    files = []
    started = time.perf_counter()
    for n, rec in enumerate(recordings, 1):
        t0 = time.perf_counter()
        samples = load_audio(rec.wav)
        check = check_samples(samples, rec.wav)
        if check.silent and progress is not None:
            progress(f"warning: {rec.wav} is silent")
        record = run_recording(engine, speakers, samples, os.path.basename(rec.wav))
        entry = score_recording(rec, record, len(samples))
        entry["wall_s"] = round(time.perf_counter() - t0, 3)
        files.append(entry)
        if save_hyp is not None:
            write_atomically(os.path.join(save_hyp, rec.name + ".rttm"), rttm_text(record, rec.name))
            write_atomically(os.path.join(save_hyp, rec.name + ".txt"), transcript_text(record))
        if progress is not None:
            progress(f"progress: {n}/{len(recordings)} files ({entry['file']}: {entry['audio_s']:.1f} s audio "
                     f"in {entry['wall_s']:.1f} s)")
    wall = time.perf_counter() - started
    return {"rules": RULES, "files": files, "pooled": pool(files), "wall_s": round(wall, 3)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one `error:` line, exit 2 (not argparse's usage dump)
        raise AppError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the folder, the outputs, and the live app's model options."""
    parser = _Parser(
        prog="python -m app.evaluate_folder",
        description="Run the streaming engine at default settings over every NAME.wav in DIR and score it "
                    "against NAME.rttm (DER: miss, false alarm, confusion; md-eval rules, 0.25 s collar each "
                    "side, overlap scored) and/or NAME.txt (WER, CER). See docs/evaluation.md.",
    )
    parser.add_argument("folder", metavar="DIR", help="folder of NAME.wav with NAME.rttm and/or NAME.txt")
    parser.add_argument("--out", metavar="REPORT.json", help="write the full report (per file and pooled) as JSON")
    parser.add_argument("--save-hyp", metavar="DIR",
                        help="write each file's hypothesis NAME.rttm and NAME.txt (transcript) into DIR")
    models = parser.add_argument_group("models (as for run_live.py; default: the embedded model)")
    models.add_argument("--asr-model", metavar="DIR|OWNER/NAME", help="CTC caption checkpoint, or none")
    models.add_argument("--diar-model", metavar="DIR|OWNER/NAME", help="frame speaker-activity checkpoint, or none")
    models.add_argument("--sv-model", metavar="DIR|OWNER/NAME", help="x-vector voiceprint checkpoint, or none")
    models.add_argument("--device", metavar="DEV", default="auto", help="auto (default), cpu, cuda, cuda:N")
    models.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="compute precision (default fp32; fp16 only on CUDA)")
    models.add_argument("--lm-beam", type=int, metavar="N",
                        help="beam width of the language-model decoder (default 512)")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.lm_beam is not None and args.lm_beam < 1:
        raise AppError(f"--lm-beam must be at least 1, got {args.lm_beam}")
    return args


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, engine_factory: Callable[[], Any] | None = None) -> int:
    """Run the command; returns the exit status (`engine_factory` replaces model loading, for tests)."""
    argv = sys.argv[1:] if argv is None else argv
    store_dir = None
    try:
        args = parse_args(argv)
        if args.out:
            check_writable(args.out)
        if args.save_hyp:
            if not os.path.isdir(args.save_hyp):
                raise AppError(f"--save-hyp {args.save_hyp}: no such folder")
            check_writable(os.path.join(args.save_hyp, "x.rttm"))
        recordings = find_recordings(args.folder)
        models = None
        if engine_factory is not None:
            engine = engine_factory()
        else:
            from app.engine_setup import choose_models, load_engine

            models = choose_models(args)
            _stderr(f"loading models ({', '.join(f'{k}={v}' for k, v in models.describe().items() if v)})")
            engine = load_engine(args, models)
        from app.engine_setup import attach_speakers

        store_dir = tempfile.mkdtemp(prefix="unispeech-evaluate-")
        speakers = attach_speakers(engine, os.path.join(store_dir, "speakers.db"))  # empty: nobody enrolled
        _stderr(f"evaluating {len(recordings)} files in {args.folder}")
        body = evaluate(recordings, engine, speakers, args.save_hyp, progress=_stderr)
        from app import __version__

        report = {"version": __version__, "folder": os.path.abspath(args.folder),
                  "models": models.describe() if models is not None else None,
                  "device": args.device, "dtype": args.dtype, **body}
        sys.stdout.write(format_report(report))
        if args.out:
            write_atomically(args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        return 0
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if store_dir is not None:
            shutil.rmtree(store_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
