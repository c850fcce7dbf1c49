"""The energy speech detector (the fallback): silence, steady noise, bursts with hangover, clicks, speech in noise."""

from __future__ import annotations

import numpy as np
import pytest

from engine.speech_detect import (
    EnergySpeechDetector,
    frame_levels_db,
    net_speech_samples,
    speech_mask,
    speech_only,
)
from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE


def bursts(n_bursts: int, on_ms: int, off_ms: int, amp: float = 0.3, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """`n_bursts` tone bursts of `on_ms` separated (and followed) by `off_ms` of background."""
    rng = np.random.default_rng(seed)
    on, off = on_ms * SAMPLE_RATE // 1000, off_ms * SAMPLE_RATE // 1000
    t = np.arange(on) / SAMPLE_RATE
    burst = amp * np.sin(2 * np.pi * 180 * t)
    x = np.concatenate([np.concatenate([burst, np.zeros(off)]) for _ in range(n_bursts)])
    return (x + noise * rng.standard_normal(x.size)).astype(np.float32)


ENERGY = EnergySpeechDetector()


def test_silence_and_steady_noise_hold_no_speech():
    assert net_speech_samples(np.zeros(5 * SAMPLE_RATE, np.float32), ENERGY) == 0
    noise = 0.05 * np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE).astype(np.float32)
    assert net_speech_samples(noise, ENERGY) == 0


def test_bursts_count_with_their_hangover():
    det = EnergySpeechDetector()
    x = bursts(5, on_ms=400, off_ms=600, noise=1e-4)
    expected_ms = 5 * (400 + det.hangover_frames * 20)
    assert net_speech_samples(x, det) == expected_ms * SAMPLE_RATE // 1000
    no_hang = EnergySpeechDetector(hangover_frames=0)
    assert net_speech_samples(x, no_hang) == 5 * 400 * SAMPLE_RATE // 1000


def test_hangover_does_not_run_past_the_end_of_the_recording():
    x = np.concatenate([np.zeros(SAMPLE_RATE), bursts(1, 400, 0)]).astype(np.float32)
    assert net_speech_samples(x, ENERGY) == 400 * SAMPLE_RATE // 1000


def test_clicks_shorter_than_the_minimum_are_dropped():
    x = np.zeros(2 * SAMPLE_RATE, np.float32)
    x[SAMPLE_RATE : SAMPLE_RATE + 2 * FRAME_SAMPLES] = 0.5  # a 40 ms click
    assert net_speech_samples(x, ENERGY) == 0
    x[SAMPLE_RATE : SAMPLE_RATE + 3 * FRAME_SAMPLES] = 0.5  # 60 ms: kept
    assert net_speech_samples(x, EnergySpeechDetector(hangover_frames=0)) == 3 * FRAME_SAMPLES


def test_speech_in_noise_at_20_db_snr():
    x = bursts(8, on_ms=300, off_ms=300, amp=0.3, noise=0.3 / np.sqrt(2) / 10, seed=3)
    found_ms = net_speech_samples(x, ENERGY) * 1000 // SAMPLE_RATE
    assert 8 * 300 <= found_ms <= 8 * (300 + 160) + 40


def test_the_partial_last_frame_counts_exactly():
    x = bursts(1, 400, 0)[: 400 * SAMPLE_RATE // 1000 - 100]  # ends 100 samples into a frame
    x = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), x])
    assert net_speech_samples(x, EnergySpeechDetector(hangover_frames=0)) == 400 * SAMPLE_RATE // 1000 - 100


def test_speech_only_cuts_out_the_pauses():
    x = bursts(3, on_ms=200, off_ms=800)
    mask = speech_mask(x, EnergySpeechDetector(hangover_frames=0))
    cut = speech_only(x, mask)
    assert cut.size == 3 * 200 * SAMPLE_RATE // 1000
    assert np.all(frame_levels_db(cut) > -20.0)  # every frame kept is tone, none is pause


def test_frame_levels_are_dbfs():
    x = np.full(FRAME_SAMPLES * 2, 0.1, np.float32)
    np.testing.assert_allclose(frame_levels_db(x), [-20.0, -20.0], atol=1e-6)
    assert frame_levels_db(np.zeros(10))[0] == -120.0


class _Fixed:
    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def speech_frames(self, samples: np.ndarray) -> np.ndarray:
        return self.mask


def test_other_detectors_plug_in_and_are_shape_checked():
    x = np.zeros(10 * FRAME_SAMPLES, np.float32)
    assert net_speech_samples(x, _Fixed(np.array([True] * 4 + [False] * 6))) == 4 * FRAME_SAMPLES
    with pytest.raises(ValueError, match=r"expected \(10,\) frames"):
        net_speech_samples(x, _Fixed(np.ones(9, bool)))


@pytest.mark.parametrize("kwargs", [{"margin_db": 0}, {"floor_percentile": 60}, {"min_speech_frames": 0},
                                    {"hangover_frames": -1}])
def test_bad_detector_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EnergySpeechDetector(**kwargs)
