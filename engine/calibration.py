"""The verification threshold a model's scores are judged by, and where it came from: a plain value.

Measuring it (trial scoring, the equal error rate) and reading it from a checkpoint's
`verification.json` are in `voiceprints.calibration` and `voiceprints.trials`; the engine only
carries the value (clustering and speaker-change thresholds included).
"""

from __future__ import annotations

from dataclasses import dataclass


# Used only when a checkpoint has no verification.json (or one measured for other weights); every
# result made with it says `calibrated: false`. 0.89 is the value in the usage example of the
# microsoft/unispeech-sat-base-plus-sv model card ("the optimal threshold is dataset-dependent"),
# not a measurement of ours; for any other checkpoint it is a guess. `python -m voiceprints.calibrate`
# measures one.
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



__all__ = ["FALLBACK_THRESHOLD", "Calibration"]
