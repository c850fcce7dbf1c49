"""Net-speech measurement: which 20 ms frames of a recording hold speech, and how much there is.

Enrollment needs at least 5 s of *net* speech (pauses and silence excluded), and embeddings are
better made from speech only. `EnergySpeechDetector` is a deliberately simple, documented detector
that needs no model: per-frame RMS energy in dBFS against a threshold set from the recording's own
noise floor, short bursts dropped, and a hangover that keeps the quiet ends of words. A model that
knows better (the diarization head's frame activity) can stand in through the `SpeechDetector`
protocol. The default detector is Silero VAD (`engine.speech_model.default_detector()`), which was
trained on real speech; the energy detector stands in only when Silero cannot load.

Limits of the energy detector, by design: a loud non-speech sound (a door, music) counts as speech;
speech that never pauses is measured against its own quietest frames, so whispered parts of
continuous speech may be missed. Both are acceptable for a 5 s lower bound on enrollment audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from engine.timebase import FRAME_SAMPLES

_DB_FLOOR = -120.0  # the dBFS given to digital silence, so log(0) never appears


@runtime_checkable
class SpeechDetector(Protocol):
    """Anything that marks speech frames: one bool per whole or partial 20 ms frame."""

    def speech_frames(self, samples: np.ndarray) -> np.ndarray:
        """(ceil(len(samples) / FRAME_SAMPLES),) bool: True where the frame holds speech."""
        ...


@dataclass(frozen=True, slots=True)
class EnergySpeechDetector:
    """Energy detector on 20 ms frames with an adaptive threshold, burst removal and hangover.

    A frame is a speech candidate when its RMS level exceeds
    `max(min_level_db, noise_floor_db + margin_db)`, where the noise floor is the
    `floor_percentile`-th percentile of the recording's frame levels (the quietest stretch is
    taken to be background). Runs of candidates shorter than `min_speech_frames` (clicks) are
    dropped; each remaining run is extended by `hangover_frames` so word endings, which fade
    below the threshold, are kept. A recording of constant noise has no frame `margin_db` above
    its own floor and so has no speech.
    """

    margin_db: float = 10.0
    min_level_db: float = -55.0
    floor_percentile: float = 5.0
    min_speech_frames: int = 3  # 60 ms
    hangover_frames: int = 8  # 160 ms

    def __post_init__(self) -> None:
        if not self.margin_db > 0:
            raise ValueError(f"margin_db must be > 0, got {self.margin_db}")
        if not 0 <= self.floor_percentile < 50:
            raise ValueError(f"floor_percentile must be in [0, 50), got {self.floor_percentile}")
        if self.min_speech_frames < 1:
            raise ValueError(f"min_speech_frames must be >= 1, got {self.min_speech_frames}")
        if self.hangover_frames < 0:
            raise ValueError(f"hangover_frames must be >= 0, got {self.hangover_frames}")

    def speech_frames(self, samples: np.ndarray) -> np.ndarray:
        """(frames,) bool speech mask of `samples` (1-D float, 16 kHz, full scale 1.0)."""
        levels = frame_levels_db(samples)
        if levels.size == 0:
            return np.zeros(0, dtype=bool)
        floor_db = float(np.percentile(levels, self.floor_percentile))
        threshold_db = max(self.min_level_db, floor_db + self.margin_db)
        candidates = levels > threshold_db
        return _hangover(_drop_short_runs(candidates, self.min_speech_frames), self.hangover_frames)


def frame_levels_db(samples: np.ndarray) -> np.ndarray:
    """(frames,) RMS level in dBFS of each 20 ms frame; a partial last frame is zero-padded."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D samples, got shape {x.shape}")
    n_frames = -(-x.size // FRAME_SAMPLES)
    padded = np.zeros(n_frames * FRAME_SAMPLES)
    padded[: x.size] = x
    power = np.mean(padded.reshape(n_frames, FRAME_SAMPLES) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(power), _DB_FLOOR)


def padded_speech(probs: np.ndarray, threshold: float, pad_frames: int) -> np.ndarray:
    """Speech frames from per-frame speech probabilities: at or above `threshold`, each widened by
    `pad_frames` on both sides (word edges and short pauses stay in)."""
    mask = (np.asarray(probs) >= threshold).astype(np.int32)
    if pad_frames and mask.size:
        mask = np.convolve(mask, np.ones(2 * pad_frames + 1, np.int32), mode="same")
    return mask > 0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a 1-D bool array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _drop_short_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for start, end in _runs(mask):
        if end - start >= min_len:
            out[start:end] = True
    return out


def _hangover(mask: np.ndarray, frames: int) -> np.ndarray:
    out = mask.copy()
    for _, end in _runs(mask):
        out[end : end + frames] = True
    return out


def speech_mask(samples: np.ndarray, detector: SpeechDetector) -> np.ndarray:
    """(frames,) bool speech mask from `detector`, shape-checked (the default detector, Silero, is
    `engine.speech_model.default_detector()`)."""
    mask = np.asarray(detector.speech_frames(samples), dtype=bool)
    expected = -(-len(samples) // FRAME_SAMPLES)
    if mask.shape != (expected,):
        raise ValueError(
            f"speech detector returned shape {mask.shape} for {len(samples)} samples; "
            f"expected ({expected},) frames of {FRAME_SAMPLES} samples"
        )
    return mask


def net_speech_samples(samples: np.ndarray, detector: SpeechDetector) -> int:
    """Samples of speech in `samples`: speech frames times 320, the partial last frame counted exactly."""
    mask = speech_mask(samples, detector)
    return int(speech_only(samples, mask).size)


def speech_only(samples: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The samples of the speech frames of `mask`, concatenated in order (pauses cut out)."""
    keep = np.repeat(mask, FRAME_SAMPLES)[: len(samples)]
    return np.asarray(samples)[keep]
