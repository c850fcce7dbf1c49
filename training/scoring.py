"""Scorers for training's evaluations.

DER, CER/WER, the RTTM reader and `Segment` live in `engine.scoring` (one implementation, shared
with the app's real-recording evaluation); they are re-exported here for training's modules.
The equal error rate of speaker verification is here.
"""

from __future__ import annotations

import numpy as np

from engine.scoring import (  # noqa: F401  (re-exported)
    MS_SAMPLES,
    DerResult,
    Segment,
    char_error_rate,
    diarization_error,
    edit_distance,
    normalize_words,
    oracle_named,
    word_error_rate,
)


def equal_error_rate(target_scores: list[float] | np.ndarray, impostor_scores: list[float] | np.ndarray) -> tuple[float, float]:
    """Return (EER, threshold) where false acceptance and false rejection rates meet."""
    tgt = np.asarray(target_scores, dtype=np.float64)
    imp = np.asarray(impostor_scores, dtype=np.float64)
    if not len(tgt) or not len(imp):
        raise ValueError("need at least one target and one impostor score")
    thresholds = np.unique(np.concatenate([tgt, imp]))
    frr = np.array([(tgt < t).mean() for t in thresholds])
    far = np.array([(imp >= t).mean() for t in thresholds])
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2), float(thresholds[k])
