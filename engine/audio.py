"""Audio at the engine's rate: mix any channel count down to mono and resample to 16 kHz float32.

The one implementation used by every place that reads audio files (the app's sources, the
calibration command); pure computation on arrays (soxr's high-quality resampler), no file I/O.
"""

from __future__ import annotations

import numpy as np

from engine.timebase import SAMPLE_RATE


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """(frames, channels) or (frames,) audio at `rate` Hz -> (frames',) float32 at 16 kHz.

    Channels are averaged; other rates go through `soxr.resample` (quality "HQ"). Raises
    ValueError naming the bad rate or shape.
    """
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    elif samples.ndim != 1:
        raise ValueError(f"audio must be 1-D or (frames, channels), got shape {samples.shape}")
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    import soxr

    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
