"""Conversations, utterance mixing, augmentation, and exact frame labels / RTTM.

All placement happens in integer samples on a 10 ms grid, so RTTM times written with three
decimals are exact, and the 20 ms frame labels follow from the segments by one rule (a frame is
active for a speaker when its centre sample lies inside one of that speaker's segments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.scoring import Segment, read_rttm  # noqa: F401  (read_rttm re-exported)
from engine.timebase import FRAME_SAMPLES as FRAME_HOP_SAMPLES, SAMPLE_RATE

GRID_SAMPLES = 160  # 10 ms placement grid
FRAME_WINDOW_SAMPLES = 400  # receptive field of the standard conv front-end
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True, slots=True)
class Mixture:
    """A mixed recording and the segments it was made of (sorted by start)."""

    audio: np.ndarray  # (samples,) float32
    segments: tuple[Segment, ...]

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance."""
        return list(dict.fromkeys(s.speaker for s in self.segments))


def frame_count(n_samples: int, kernels: tuple[int, ...] = CONV_KERNELS,
                strides: tuple[int, ...] = CONV_STRIDES) -> int:
    """Number of encoder frames for `n_samples` input samples (the conv output-length formula)."""
    length = n_samples
    for k, s in zip(kernels, strides):
        length = (length - k) // s + 1
        if length <= 0:
            return 0
    return length


def frame_labels(segments: tuple[Segment, ...] | list[Segment], speakers: list[str], n_frames: int) -> np.ndarray:
    """Return (n_frames, len(speakers)) float32 activity: 1 where a frame centre lies in a segment."""
    labels = np.zeros((n_frames, len(speakers)), dtype=np.float32)
    centres = np.arange(n_frames) * FRAME_HOP_SAMPLES + FRAME_WINDOW_SAMPLES // 2
    col = {name: i for i, name in enumerate(speakers)}
    for seg in segments:
        if seg.speaker not in col:
            raise ValueError(f"segment speaker {seg.speaker!r} not in {speakers!r}")
        labels[(centres >= seg.start) & (centres < seg.end), col[seg.speaker]] = 1.0
    return labels


def rttm_lines(file_id: str, segments: tuple[Segment, ...] | list[Segment]) -> list[str]:
    """RTTM SPEAKER lines for `segments` (times in seconds, exact for 1 ms-aligned samples)."""
    return [
        f"SPEAKER {file_id} 1 {s.start / SAMPLE_RATE:.3f} {(s.end - s.start) / SAMPLE_RATE:.3f} "
        f"<NA> <NA> {s.speaker} <NA> <NA>"
        for s in sorted(segments, key=lambda s: (s.start, s.speaker))
    ]


def _grid(x: float) -> int:
    return int(round(x * SAMPLE_RATE / GRID_SAMPLES)) * GRID_SAMPLES


def build_conversation(
    rng: np.random.Generator,
    pools: dict[str, list[tuple[np.ndarray, str]]],
    target_samples: int,
    overlap_prob: float = 0.3,
    gap_s: tuple[float, float] = (0.1, 1.0),
    gain_db: tuple[float, float] = (-4.0, 0.0),
    truncate: bool = False,
) -> Mixture:
    """Lay out turns of the speakers in `pools` until `target_samples` is reached.

    Each turn takes the next unused utterance of a speaker (not the previous one when there is a
    choice); it starts after a pause drawn from `gap_s`, or with probability `overlap_prob`
    overlaps the previous turn by 0.2 s to half the shorter turn. A speaker never overlaps
    itself. With `truncate`, the audio is cut to exactly `target_samples` and segments clipped.
    """
    names = list(pools)
    if not names or any(not pools[n] for n in names):
        raise ValueError("every speaker needs at least one utterance")
    used = {n: 0 for n in names}
    gains = {n: float(10 ** (rng.uniform(*gain_db) / 20)) for n in names}
    turns: list[tuple[str, np.ndarray, str]] = []
    prev_name: str | None = None
    length = 0
    while length < target_samples * 1.2 + SAMPLE_RATE:
        choices = [n for n in names if n != prev_name or len(names) == 1]
        fresh = [n for n in choices if used[n] < len(pools[n])]
        if not fresh:
            break
        name = fresh[int(rng.integers(len(fresh)))]
        audio, text = pools[name][used[name]]
        used[name] += 1
        turns.append((name, audio * gains[name], text))
        length += len(audio)
        prev_name = name
    return place_turns(rng, turns, target_samples, truncate, overlap_prob, gap_s)


def place_turns(
    rng: np.random.Generator,
    turns: list[tuple[str, np.ndarray, str]],
    stop_samples: int | None = None,
    truncate: bool = False,
    overlap_prob: float = 0.3,
    gap_s: tuple[float, float] = (0.1, 1.0),
) -> Mixture:
    """Place (speaker, audio, text) turns in order: each starts after a pause drawn from `gap_s`
    or, with probability `overlap_prob`, overlaps the previous turn by 0.2 s to half the shorter
    turn; a speaker never overlaps itself. No turn starts after `stop_samples` (None: all turns
    are placed); with `truncate` the audio is cut to exactly `stop_samples` and segments clipped,
    otherwise a short silent tail follows the last turn."""
    placed: list[tuple[Segment, np.ndarray]] = []
    last_end: dict[str, int] = {}
    cursor = _grid(rng.uniform(0.1, 0.6))
    prev: Segment | None = None
    for name, audio, text in turns:
        if stop_samples is not None and cursor >= stop_samples:
            break
        start = cursor
        if prev is not None and rng.random() < overlap_prob:
            max_ov = min(1.5, 0.5 * min(prev.end - prev.start, len(audio)) / SAMPLE_RATE)
            if max_ov > 0.2:
                start = prev.end - _grid(rng.uniform(0.2, max_ov))
        start = max(start, last_end.get(name, -GRID_SAMPLES) + GRID_SAMPLES, 0)
        seg = Segment(name, start, start + len(audio), text)
        placed.append((seg, audio))
        last_end[name] = seg.end
        cursor = max(cursor, seg.end) + _grid(rng.uniform(*gap_s))
        prev = seg
    if not placed:
        raise ValueError("no turn could be placed")
    if truncate and stop_samples is None:
        raise ValueError("truncate needs stop_samples")
    total = stop_samples if truncate else max(s.end for s, _ in placed) + _grid(rng.uniform(0.2, 0.6))
    mix = np.zeros(total, dtype=np.float32)
    segments = []
    for seg, audio in placed:
        if seg.start >= total:
            continue
        end = min(seg.end, total)
        mix[seg.start:end] += audio[: end - seg.start]
        segments.append(Segment(seg.speaker, seg.start, end, seg.text))
    return Mixture(mix, tuple(sorted(segments, key=lambda s: (s.start, s.speaker))))


def mix_utterance(rng: np.random.Generator, main: np.ndarray, other: np.ndarray,
                  max_fraction: float = 0.5, snr_db: tuple[float, float] = (5.0, 15.0)) -> np.ndarray:
    """Utterance mixing (UniSpeech-SAT): overlay a piece of `other` on part of `main`, quieter.

    The interfering piece covers at most `max_fraction` of `main`; `main` stays the target.
    """
    n = len(main)
    span = int(rng.uniform(0.15, max_fraction) * n)
    piece = other[: min(span, len(other))]
    if len(piece) == 0:
        return main.copy()
    start = int(rng.integers(0, n - len(piece) + 1))
    p_main = float(np.mean(main ** 2)) + 1e-10
    p_other = float(np.mean(piece ** 2)) + 1e-10
    scale = np.sqrt(p_main / p_other / 10 ** (rng.uniform(*snr_db) / 10))
    out = main.copy()
    out[start:start + len(piece)] += piece * scale
    return out


def _colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spec)), 1)
    spec = spec / (np.sqrt(f) if kind == 1 else f)  # pink or brown
    noise = np.fft.irfft(spec, n).astype(np.float32)
    return noise / (np.std(noise) + 1e-8)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """`audio` played `factor` times faster (pitch and tempo together, as Kaldi's speed
    perturbation and sox's `speed`): band-limited resampling to `len / factor` samples."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    n = len(audio)
    m = max(1, int(round(n / factor)))
    if n == 0 or m == n:
        return audio.astype(np.float32, copy=True)
    spec = np.fft.rfft(audio.astype(np.float64))
    keep = min(len(spec), m // 2 + 1)  # drop what would alias when the rate goes down
    out = np.fft.irfft(spec[:keep], m) * (m / n)
    return out.astype(np.float32)


def augment(rng: np.random.Generator, audio: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Random reverberation, band limits, additive noise and gain (`strength` 0 = none, 1 = full)."""
    x = audio.astype(np.float32)
    n = len(x)
    if n == 0 or strength <= 0:
        return x.copy()
    if rng.random() < 0.3 * strength:  # light reverberation: exponentially decaying noise RIR
        rt60 = rng.uniform(0.1, 0.5)
        taps = int(rt60 * SAMPLE_RATE)
        rir = rng.standard_normal(taps) * np.exp(-6.9 * np.arange(taps) / taps)
        rir[0] = 1.0 / rng.uniform(0.15, 0.5)
        rir /= np.sqrt(np.sum(rir ** 2))
        size = 1 << int(np.ceil(np.log2(n + taps)))
        x = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[:n].astype(np.float32)
    if rng.random() < 0.4 * strength:  # band limits (telephone-like to wide band)
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        lo, hi = rng.uniform(50, 350), rng.uniform(3400, 7800)
        mask = 1 / (1 + (lo / np.maximum(freqs, 1)) ** 4) / (1 + (freqs / hi) ** 8)
        x = np.fft.irfft(spec * mask, n).astype(np.float32)
    if rng.random() < 0.8 * strength:
        p = float(np.mean(x ** 2)) + 1e-10
        snr = rng.uniform(5, 40) if strength >= 1 else rng.uniform(20, 40)
        x = x + _colored_noise(rng, n) * np.float32(np.sqrt(p / 10 ** (snr / 10)))
    x = x * np.float32(10 ** (rng.uniform(-20, 4) * strength / 20))
    return np.clip(x, -1.0, 1.0).astype(np.float32)
