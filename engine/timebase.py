"""The engine's integer time base: 16 kHz samples and 20 ms frames; seconds exist only at the edges."""

from __future__ import annotations

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 320  # one encoder frame: the product of the conv strides (5*2*2*2*2*2*2)
FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 20
FRAMES_PER_SECOND = SAMPLE_RATE // FRAME_SAMPLES  # 50


def frames_to_seconds(frames: int) -> float:
    """Seconds at the start of `frames`, for wire formats and display only."""
    return frames * FRAME_SAMPLES / SAMPLE_RATE


def samples_to_seconds(samples: int) -> float:
    """Seconds of `samples`, for wire formats and display only."""
    return samples / SAMPLE_RATE


def seconds_to_samples(seconds: float) -> int:
    """Nearest whole sample of `seconds` (configuration and user input only)."""
    return int(round(seconds * SAMPLE_RATE))
