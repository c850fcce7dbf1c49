"""Scorers for training's evaluations.

DER, CER/WER, the RTTM reader and `Segment` live in `engine.scoring` (one implementation, shared
with the app's real-recording evaluation); they are re-exported here for training's modules, as
is the equal error rate of speaker verification (its threshold convention is in `engine.scoring`).
"""

from __future__ import annotations

from engine.scoring import (  # noqa: F401  (re-exported)
    MS_SAMPLES,
    DerResult,
    Segment,
    char_error_rate,
    diarization_error,
    edit_distance,
    equal_error_rate,
    normalize_words,
    oracle_named,
    word_error_rate,
)
