"""What the voiceprint service answers: an enrollment's result with its per-recording checks,
a 1:1 verification, and the ranked candidates of a 1:N identification (each with `to_dict` for JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.timebase import samples_to_seconds


@dataclass(frozen=True, slots=True)
class RecordingCheck:
    """Consistency of one new enrollment recording with all the person's other recordings.

    `score` is the cosine between this recording's embedding and the voiceprint of all the
    others (None when there is no other recording); `outlier` when it is below the threshold,
    i.e. verification would say this recording is not the same speaker.
    """

    index: int
    net_speech_samples: int
    score: float | None
    outlier: bool

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "net_speech_s": samples_to_seconds(self.net_speech_samples),
                "score": self.score, "outlier": self.outlier}


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What one enrollment did: the person's voiceprint totals and a check per new recording."""

    name: str
    fingerprint: str
    created: bool
    replaced: bool
    n_recordings: int  # in this enrollment
    net_speech_samples: int  # in this enrollment
    total_recordings: int  # in the voiceprint now
    total_net_speech_samples: int
    threshold: float
    checks: tuple[RecordingCheck, ...]
    left_out: tuple[int, ...] = ()  # indices of outlier recordings not stored (no --keep-outliers)
    low_quality: bool = False  # enrolled under the documented lower minimum (a TUI track)

    @property
    def outliers(self) -> tuple[RecordingCheck, ...]:
        return tuple(c for c in self.checks if c.outlier)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "created": self.created,
                "replaced": self.replaced, "n_recordings": self.n_recordings,
                "net_speech_s": samples_to_seconds(self.net_speech_samples),
                "total_recordings": self.total_recordings,
                "total_net_speech_s": samples_to_seconds(self.total_net_speech_samples),
                "threshold": self.threshold, "checks": [c.to_dict() for c in self.checks],
                "outliers": [c.index for c in self.outliers], "left_out": list(self.left_out),
                "low_quality": self.low_quality}


@dataclass(frozen=True, slots=True)
class Verification:
    """A 1:1 decision: `score` (cosine, higher = same speaker) against `threshold`."""

    name: str
    score: float
    threshold: float
    accepted: bool
    calibrated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "threshold": self.threshold,
                "accepted": self.accepted, "calibrated": self.calibrated}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ranked 1:N candidate."""

    name: str
    score: float
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "accepted": self.accepted}


__all__ = ["Candidate", "EnrollResult", "RecordingCheck", "Verification"]
