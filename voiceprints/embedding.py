"""Speaker embeddings of speech: the `Embedder` protocol and one unit embedding per recording.

Scoring is the cosine similarity between L2-normalised embeddings. The x-vector head is trained
with an additive-margin softmax, which compares the *direction* of the embedding with each
speaker's class weight; the norm carries level and duration, not identity. Embeddings are made
from speech frames only (pauses cut out by the speech detector), since the pooled statistics of
silence say nothing about the voice.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from engine.speech_detect import SpeechDetector, speech_mask, speech_only
from engine.speech_model import default_detector
from engine.timebase import SAMPLE_RATE
from voiceprints.errors import InvalidAudioError, VoiceprintError


@runtime_checkable
class Embedder(Protocol):
    """A speaker-embedding model: one vector per recording, tagged with the model's identity.

    `fingerprint` names the embedding space (same weights and preprocessing, same fingerprint);
    `threshold` is the score at or above which two recordings are judged the same speaker. An
    embedder may also carry `calibration: Calibration` (where the threshold came from) and
    `description: str` (shown in errors and `speakers list`).
    """

    fingerprint: str
    threshold: float

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """(dim,) embedding of `samples`: 1-D float32, 16 kHz, at least about 0.5 s long."""
        ...


def check_audio(samples: Any, what: str = "audio") -> np.ndarray:
    """`samples` as contiguous 1-D float32, or InvalidAudioError saying what is wrong."""
    try:
        x = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidAudioError(f"{what}: not an array of samples ({exc})") from exc
    if x.ndim != 1:
        raise InvalidAudioError(f"{what}: expected mono 1-D samples at {SAMPLE_RATE} Hz, got shape {x.shape}")
    if x.size == 0:
        raise InvalidAudioError(f"{what}: no samples")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise InvalidAudioError(f"{what}: {bad} NaN or infinite samples")
    return np.ascontiguousarray(x)


def embed_recording(
    embedder: Embedder, samples: np.ndarray, detector: SpeechDetector | None = None, trim: bool = True,
    min_speech_samples: int = 1,
) -> tuple[np.ndarray | None, int]:
    """(unit embedding of the speech in `samples`, net speech samples); the embedding is None when
    there is less than `min_speech_samples` of speech (the embedder is not called then)."""
    x = check_audio(samples)
    mask = speech_mask(x, detector or getattr(embedder, "speech_detector", None) or default_detector())
    speech = speech_only(x, mask)
    if speech.size == 0 or speech.size < min_speech_samples:
        return None, int(speech.size)
    vector = np.asarray(embedder.embed(speech if trim else x), dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise VoiceprintError(f"the embedder returned an unusable embedding of shape {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise VoiceprintError("the embedder returned a zero embedding")
    return (vector / norm).astype(np.float32), int(speech.size)



__all__ = ["Embedder", "check_audio", "embed_recording"]
