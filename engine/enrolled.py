"""The enrolled voices a stream is seeded with, as plain values: `{name: vector}`, threshold, fingerprint.

The engine never reads the speaker store: the app asks the store (`voiceprints.VoiceprintService
.enrolled()`) and hands the engine this value, so the engine and its tests need no database. The
fingerprint names the embedding space the vectors were made in; the engine refuses voices whose
fingerprint differs from its x-vector model's, since embeddings of different checkpoints do not compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True, slots=True)
class EnrolledVoices:
    """Enrolled voiceprints (`name -> (dim,) unit vector`), the score at or above which a voice is
    that person, and the fingerprint of the model that made the vectors ("" when not known)."""

    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    threshold: float = 0.5
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not (
                math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {self.threshold!r}")
        if not isinstance(self.fingerprint, str):
            raise ValueError(f"fingerprint must be a string, got {type(self.fingerprint).__name__}")
        clean: dict[str, np.ndarray] = {}
        dims = set()
        for name, vector in dict(self.vectors).items():
            v = np.array(vector, dtype=np.float32)  # a copy: later changes to the caller's array do not leak in
            if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
                raise ValueError(f"voiceprint of {name!r} must be a finite 1-D vector, got shape {v.shape}")
            v.setflags(write=False)
            clean[str(name)] = v
            dims.add(v.size)
        if len(dims) > 1:
            raise ValueError(f"voiceprints of different sizes {sorted(dims)}: they come from different models")
        object.__setattr__(self, "vectors", MappingProxyType(clean))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def names(self) -> list[str]:
        return list(self.vectors)


__all__ = ["EnrolledVoices"]
