"""Labelled clips scored as verification trials, the way `VoiceprintService` scores them.

Trials are a folder of audio files named `SPEAKER__CLIP.wav` (or `SPEAKER/CLIP.wav`), or a JSON
file: `[{"speaker": "s1", "path": "a.wav"}, ...]` or `{"s1": ["a.wav", ...], ...}`, paths relative
to the JSON file. `score_trials` gives target (same speaker) and impostor scores;
`voiceprints.calibration.measure` turns them into a threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.audio import to_mono_16k
from engine.timebase import SAMPLE_RATE
from voiceprints.embedding import embed_recording
from voiceprints.records import mean_voiceprint

if TYPE_CHECKING:
    from engine.speech_detect import SpeechDetector
    from voiceprints.embedding import Embedder


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
    if protocol not in ("enroll", "pairs"):
        raise ValueError(f"protocol must be 'enroll' or 'pairs', got {protocol!r}")
    skipped: list[str] = []
    embedded: dict[str, list[tuple[np.ndarray, int]]] = {}
    min_test = int(min_test_speech_s * SAMPLE_RATE)
    for speaker, audio_list in clips.items():
        for n, audio in enumerate(audio_list):
            vector, speech = embed_recording(embedder, audio, detector, min_speech_samples=min_test)
            if vector is None or speech < min_test:
                skipped.append(f"{speaker}#{n}: {speech / SAMPLE_RATE:.2f} s of speech")
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
        need = int(min_enroll_speech_s * SAMPLE_RATE)
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



__all__ = ["TrialScores", "list_trials", "read_clip", "score_trials"]
