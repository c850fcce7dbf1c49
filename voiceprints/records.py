"""The values the speaker store holds and returns: people's names, recordings and voiceprints.

A voiceprint is the speech-weighted mean of a person's unit recording embeddings (`mean_voiceprint`),
for one model fingerprint; embeddings of different checkpoints never compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from engine.timebase import samples_to_seconds
from voiceprints.errors import InvalidNameError

MAX_NAME_CHARS = 100
_RESERVED_NAME = re.compile(r"unknown-\d+", re.IGNORECASE)


def validate_name(name: str) -> str:
    """The name, stripped, or InvalidNameError saying what is wrong with it."""
    if not isinstance(name, str):
        raise InvalidNameError(f"a speaker name must be a string, got {type(name).__name__}")
    clean = name.strip()
    if not clean:
        raise InvalidNameError("a speaker name must not be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise InvalidNameError(f"a speaker name has at most {MAX_NAME_CHARS} characters, got {len(clean)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        raise InvalidNameError(f"a speaker name must not contain control characters: {clean!r}")
    if _RESERVED_NAME.fullmatch(clean):
        raise InvalidNameError(f"{clean!r} is reserved for unenrolled speaker tracks; choose another name")
    return clean


@dataclass(frozen=True, slots=True)
class NewRecording:
    """One enrollment recording to store: its L2-normalised embedding and how much speech it held."""

    embedding: np.ndarray  # (dim,) float32
    num_samples: int
    net_speech_samples: int
    audio: np.ndarray | None = None  # float32 16 kHz, kept for re-embedding with another model


@dataclass(frozen=True, slots=True)
class Voiceprint:
    """A person's voiceprint for one model: the weighted mean of their recordings' embeddings."""

    name: str
    fingerprint: str
    vector: np.ndarray  # (dim,) float32, unit length
    n_recordings: int
    net_speech_samples: int
    updated_at: str

    @property
    def net_speech_s(self) -> float:
        return samples_to_seconds(self.net_speech_samples)


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """One stored recording of a person, without its audio."""

    recording_id: int
    enrollment_id: int
    position: int
    num_samples: int
    net_speech_samples: int
    has_audio: bool
    fingerprints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PersonInfo:
    """A summary row of `SpeakerStore.people()`."""

    name: str
    created_at: str
    n_recordings: int
    net_speech_samples: int
    fingerprints: tuple[str, ...]  # models this person has a voiceprint for

    @property
    def net_speech_s(self) -> float:
        return samples_to_seconds(self.net_speech_samples)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "created_at": self.created_at, "n_recordings": self.n_recordings,
                "net_speech_s": self.net_speech_s, "fingerprints": list(self.fingerprints)}


def mean_voiceprint(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unit-length weighted mean of unit-length embeddings `vectors` (n, dim) with `weights` (n,).

    Each embedding is normalised before averaging so that no recording dominates through its
    norm (which reflects level and length, not identity), then the mean is normalised so that
    scoring is a plain dot product (cosine similarity).
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or w.shape != (v.shape[0],):
        raise ValueError(f"need (n>0, dim) vectors and (n,) weights, got {v.shape} and {w.shape}")
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights must be non-negative with a positive sum")
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    mean = (w[:, None] * unit).sum(axis=0) / w.sum()
    norm = np.linalg.norm(mean)
    if norm < 1e-8:
        raise ValueError("the embeddings cancel out: their weighted mean has no direction")
    return (mean / norm).astype(np.float32)



__all__ = ["MAX_NAME_CHARS", "NewRecording", "PersonInfo", "RecordingInfo", "Voiceprint", "mean_voiceprint",
           "validate_name"]
