"""Verification thresholds from measured score distributions, and the `verification.json` they live in.

A threshold on a cosine score means nothing until it is measured for the checkpoint that makes the
embeddings. This module scores labelled clips the way `VoiceprintService` does (enroll from at
least 5 s of net speech, test one clip), collects target (same speaker) and impostor (different
speaker) scores, finds the equal error rate and its threshold and thresholds at chosen false-accept
rates, and writes them beside the checkpoint as `verification.json`, which `XVectorEmbedder` loads.

    python -m engine.calibration --sv-model models/embedded/sv --trials DIR_OR_JSON [--far 0.01]

Trials are a folder of audio files named `SPEAKER__CLIP.wav` (or `SPEAKER/CLIP.wav`), or a JSON
file: `[{"speaker": "s1", "path": "a.wav"}, ...]` or `{"s1": ["a.wav", ...], ...}`, paths relative
to the JSON file. Format of verification.json: docs/voiceprints.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.audio import to_mono_16k
from engine.scoring import equal_error_rate, threshold_at_far  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from engine.speech_detect import SpeechDetector
    from engine.voiceprints import Embedder

VERIFICATION_FILE = "verification.json"
FORMAT_NAME = "unispeech-live verification calibration"
FORMAT_VERSION = 1
SCORING = "cosine of L2-normalised embeddings; voiceprint = speech-weighted mean of unit per-recording embeddings"

# Used only when a checkpoint has no verification.json (or one measured for other weights); every
# result made with it says `calibrated: false`. 0.89 is the value in the usage example of the
# microsoft/unispeech-sat-base-plus-sv model card ("the optimal threshold is dataset-dependent"),
# not a measurement of ours; for any other checkpoint it is a guess. Run this module to replace it.
FALLBACK_THRESHOLD = 0.89


@dataclass(frozen=True, slots=True)
class Calibration:
    """The threshold a model's scores are judged by, and where it came from."""

    threshold: float
    calibrated: bool
    operating_point: str = "eer"  # "eer", "far=0.01", ... or "fallback"/"given"
    fingerprint: str | None = None
    eer: float | None = None
    n_target: int = 0
    n_impostor: int = 0
    note: str = ""
    # Cosine at or above which a run's embedding joins an unknown in-session cluster (None: use
    # `threshold`). Measured separately (training.tune_clustering): runs are embedded from 1-8 s
    # of conversation speech, not from 5 s enrollments, so their same-speaker scores sit lower.
    cluster_threshold: float | None = None
    # Cosine below which 1 s of a run's new speech, against the run's x-vector, splits the run at
    # a speaker change (None: not measured, no splitting); measured with `cluster_threshold`.
    change_threshold: float | None = None

    @staticmethod
    def given(threshold: float, note: str = "set by the caller") -> Calibration:
        """A threshold set by hand or by a scripted model: counts as calibrated."""
        return Calibration(float(threshold), True, "given", note=note)

    @staticmethod
    def fallback(note: str) -> Calibration:
        """The documented uncalibrated fallback (FALLBACK_THRESHOLD), with why it is used."""
        return Calibration(FALLBACK_THRESHOLD, False, "fallback", note=note)


def load_calibration(model_dir: str | os.PathLike[str], fingerprint: str) -> Calibration:
    """The calibration in `model_dir/verification.json` if it was measured for `fingerprint`.

    Missing file, or one measured for other weights: the uncalibrated fallback with a note saying
    why. A file that is present but malformed is an error (ValueError naming the problem).
    """
    path = Path(model_dir) / VERIFICATION_FILE
    if not path.is_file():
        return Calibration.fallback(f"no {VERIFICATION_FILE} in {model_dir}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{path}: 'threshold' must be a finite number, got {threshold!r}")
    measured_for = data.get("fingerprint")
    if not isinstance(measured_for, str):
        raise ValueError(f"{path}: 'fingerprint' must be a string, got {measured_for!r}")
    if measured_for != fingerprint:
        return Calibration.fallback(
            f"{path} was measured for model {measured_for}, but the checkpoint is {fingerprint}; "
            "run python -m engine.calibration again"
        )
    eer = data.get("eer")
    clustering = data.get("clustering")
    cluster_threshold = change_threshold = None
    if clustering is not None:
        value = clustering.get("threshold") if isinstance(clustering, dict) else None
        if not _is_cosine(value):
            raise ValueError(f"{path}: 'clustering.threshold' must be a number in [-1, 1], got {value!r}")
        cluster_threshold = float(value)
        change = clustering.get("change_threshold")
        if change is not None and not _is_cosine(change):
            raise ValueError(f"{path}: 'clustering.change_threshold' must be null or a number in [-1, 1], got {change!r}")
        change_threshold = None if change is None else float(change)
    return Calibration(
        threshold=float(threshold),
        calibrated=True,
        operating_point=str(data.get("operating_point", "eer")),
        fingerprint=measured_for,
        eer=float(eer) if isinstance(eer, (int, float)) else None,
        n_target=int(data.get("n_target", 0)),
        n_impostor=int(data.get("n_impostor", 0)),
        note=str(path),
        cluster_threshold=cluster_threshold,
        change_threshold=change_threshold,
    )


def _is_cosine(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and -1.0 <= value <= 1.0


def _summary(scores: np.ndarray) -> dict[str, float]:
    p = np.percentile(scores, [5, 50, 95])
    return {"mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
            "p5": float(p[0]), "p50": float(p[1]), "p95": float(p[2]), "max": float(scores.max())}


# -- trials ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrialScores:
    """Target and impostor scores of one measurement, and what was measured."""

    target: np.ndarray
    impostor: np.ndarray
    n_speakers: int
    n_clips: int
    protocol: str
    skipped: tuple[str, ...] = field(default=())  # clips left out, with why


def score_trials(
    embedder: Embedder,
    clips: dict[str, list[np.ndarray]],
    *,
    protocol: str = "enroll",
    min_enroll_speech_s: float = 5.0,
    min_test_speech_s: float = 1.0,
    detector: SpeechDetector | None = None,
) -> TrialScores:
    """Score labelled clips (speaker id -> 16 kHz float32 clips) as verification trials.

    `enroll` (default, mirrors VoiceprintService): each speaker's first clips, until they hold
    `min_enroll_speech_s` of net speech, make a voiceprint; every later clip of every speaker is a
    test clip scored against every voiceprint (own: target, others: impostor). Speakers whose clips
    all go to enrollment only serve as impostor tests. `pairs`: every pair of clips is a trial.
    """
    from engine.speaker_store import mean_voiceprint
    from engine.voiceprints import embed_recording

    if protocol not in ("enroll", "pairs"):
        raise ValueError(f"protocol must be 'enroll' or 'pairs', got {protocol!r}")
    skipped: list[str] = []
    embedded: dict[str, list[tuple[np.ndarray, int]]] = {}
    min_test = int(min_test_speech_s * 16000)
    for speaker, audio_list in clips.items():
        for n, audio in enumerate(audio_list):
            vector, speech = embed_recording(embedder, audio, detector, min_speech_samples=min_test)
            if vector is None or speech < min_test:
                skipped.append(f"{speaker}#{n}: {speech / 16000:.2f} s of speech")
                continue
            embedded.setdefault(speaker, []).append((vector, speech))
    if len(embedded) < 2:
        raise ValueError(f"need clips of at least 2 speakers with speech, got {len(embedded)}")
    target: list[float] = []
    impostor: list[float] = []
    if protocol == "pairs":
        items = [(s, v) for s, lst in embedded.items() for v, _ in lst]
        vecs = np.stack([v for _, v in items])
        labels = np.array([s for s, _ in items])
        sims = vecs @ vecs.T
        iu = np.triu_indices(len(items), k=1)
        same = labels[iu[0]] == labels[iu[1]]
        target, impostor = sims[iu][same].tolist(), sims[iu][~same].tolist()
    else:
        need = int(min_enroll_speech_s * 16000)
        prints: dict[str, np.ndarray] = {}
        tests: dict[str, list[np.ndarray]] = {}
        for speaker, lst in embedded.items():
            total, k = 0, 0
            while k < len(lst) and total < need:
                total += lst[k][1]
                k += 1
            if total >= need and k < len(lst):
                prints[speaker] = mean_voiceprint(np.stack([v for v, _ in lst[:k]]), np.array([s for _, s in lst[:k]]))
                tests[speaker] = [v for v, _ in lst[k:]]
            else:
                tests[speaker] = [v for v, _ in lst]
        if not prints:
            raise ValueError(
                f"no speaker has {min_enroll_speech_s} s of speech to enroll plus a clip left to test; "
                "add clips or use --protocol pairs"
            )
        for owner, vp in prints.items():
            for speaker, vecs in tests.items():
                scores = (np.stack(vecs) @ vp).tolist()
                (target if speaker == owner else impostor).extend(scores)
    return TrialScores(np.array(target), np.array(impostor), len(embedded),
                       sum(len(v) for v in embedded.values()), protocol, tuple(skipped))


def measure(scores: TrialScores, fingerprint: str, *, fars: tuple[float, ...] = (0.01, 0.001),
            operating_point: str = "eer", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verification.json content for `scores` (see docs/voiceprints.md for every field)."""
    eer, eer_threshold = equal_error_rate(scores.target, scores.impostor)
    far_points = [threshold_at_far(scores.target, scores.impostor, f) for f in fars]
    if operating_point == "eer":
        threshold = eer_threshold
    elif operating_point.startswith("far="):
        wanted = float(operating_point[4:])
        matches = [p for p in far_points if p["far"] == wanted]
        threshold = (matches[0] if matches else threshold_at_far(scores.target, scores.impostor, wanted))["threshold"]
    else:
        raise ValueError(f"operating point must be 'eer' or 'far=X', got {operating_point!r}")
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "threshold": threshold,
        "operating_point": operating_point,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "far_thresholds": far_points,
        "n_target": int(scores.target.size),
        "n_impostor": int(scores.impostor.size),
        "n_speakers": scores.n_speakers,
        "n_clips": scores.n_clips,
        "target_scores": _summary(scores.target),
        "impostor_scores": _summary(scores.impostor),
        "measured": {"protocol": scores.protocol, "scoring": SCORING, "skipped_clips": list(scores.skipped),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra or {})},
    }


def write_verification_json(path: str | os.PathLike[str], content: dict[str, Any]) -> None:
    """Write `content` to `path` atomically (a temporary file beside it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- command line ------------------------------------------------------------------------------


_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def list_trials(trials: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """speaker id -> clip paths, from a folder (SPEAKER__CLIP.wav or SPEAKER/CLIP.wav) or a JSON file."""
    root = Path(trials)
    out: dict[str, list[Path]] = {}
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in _AUDIO_SUFFIXES or not p.is_file():
                continue
            speaker = p.stem.split("__", 1)[0] if "__" in p.stem else (p.parent.name if p.parent != root else None)
            if not speaker:
                raise ValueError(f"{p}: name it SPEAKER__CLIP{p.suffix} or put it in a SPEAKER/ folder")
            out.setdefault(speaker, []).append(p)
    elif root.is_file():
        data = json.loads(root.read_text(encoding="utf-8"))
        pairs = (list(data.items()) if isinstance(data, dict)
                 else [(d["speaker"], [d["path"]]) for d in data] if isinstance(data, list) else None)
        if pairs is None:
            raise ValueError(f"{root}: expected a list of {{speaker, path}} or a {{speaker: [paths]}} object")
        for speaker, paths in pairs:
            out.setdefault(str(speaker), []).extend((root.parent / p) for p in paths)
    else:
        raise ValueError(f"no trials at {root}")
    if not out:
        raise ValueError(f"no audio files found in {root}")
    return out


def read_clip(path: Path) -> np.ndarray:
    """A file as 16 kHz mono float32 (`engine.audio.to_mono_16k`: channels averaged, resampled)."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return to_mono_16k(audio, int(rate))


def _is_rate(text: str) -> bool:
    try:
        return 0.0 <= float(text) < 1.0
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """CLI: measure a checkpoint's verification threshold and write its verification.json."""
    ap = argparse.ArgumentParser(prog="python -m engine.calibration", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sv-model", required=True, help="x-vector checkpoint folder")
    ap.add_argument("--trials", required=True, help="folder of SPEAKER__CLIP.wav, or a JSON list")
    ap.add_argument("--protocol", choices=["enroll", "pairs"], default="enroll")
    ap.add_argument("--far", type=float, action="append", help="also report a threshold at this FAR (repeatable)")
    ap.add_argument("--operating-point", default="eer", help="'eer' (default) or 'far=X': which threshold to use")
    ap.add_argument("--out", help="where to write (default: SV_MODEL/verification.json)")
    ap.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args(argv)
    point = args.operating_point
    if point != "eer" and not (point.startswith("far=") and _is_rate(point[4:])):
        ap.error(f"--operating-point must be 'eer' or 'far=X' with 0 <= X < 1, got {point!r}")
    try:
        from engine.voiceprints import XVectorEmbedder

        embedder = XVectorEmbedder(args.sv_model, device=args.device, dtype=args.dtype)
        paths = list_trials(args.trials)
        clips = {s: [read_clip(p) for p in ps] for s, ps in paths.items()}
        scores = score_trials(embedder, clips, protocol=args.protocol)
        fars = tuple(args.far) if args.far else (0.01, 0.001)
        content = measure(scores, embedder.fingerprint, fars=fars, operating_point=args.operating_point,
                          extra={"trials": str(args.trials), "model": str(args.sv_model), "dtype": args.dtype,
                                 "command": "python -m engine.calibration " + " ".join(argv or sys.argv[1:])})
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"calibration: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        write_verification_json(args.out or Path(args.sv_model) / VERIFICATION_FILE, content)
    print(json.dumps({k: content[k] for k in ("fingerprint", "threshold", "operating_point", "eer",
                                              "n_target", "n_impostor", "n_speakers", "n_clips")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
