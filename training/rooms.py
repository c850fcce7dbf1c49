"""Rooms and microphones on the fly: simulated reverberation, noise and babble, microphone colouring,
band limits, telephone codecs and level, each with its own probability.

Synthetic training speech is clean and close; captions are asked of people in rooms, through laptop
microphones and phone lines. Room impulse responses come from pyroomacoustics' image-source model
of shoebox rooms (Scheibler et al., ICASSP 2018), computed once per run into a seeded bank so a
batch only convolves; codecs go through sox.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.signal import fftconvolve, sosfilt

from engine.timebase import SAMPLE_RATE

PEAK_LIMIT = 0.98  # level changes never push a sample past this
CODECS: tuple[str, ...] = ("gsm", "mu-law", "a-law")


@dataclass(frozen=True, slots=True)
class Acoustics:
    """Probabilities and ranges of the room and microphone simulation (each step independent)."""

    reverb_prob: float = 0.3
    noise_prob: float = 0.25
    babble_prob: float = 0.1
    eq_prob: float = 0.3
    band_prob: float = 0.15
    codec_prob: float = 0.08
    level_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.15, 0.8)
    snr_db: tuple[float, float] = (5.0, 30.0)  # additive (coloured) noise
    babble_snr_db: tuple[float, float] = (5.0, 20.0)
    babble_voices: tuple[int, int] = (3, 6)
    eq_gain_db: float = 8.0  # each of 3 peaking filters gains +- this
    rms_dbfs: tuple[float, float] = (-40.0, -15.0)
    rir_bank: int = 64

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "noise_prob", "babble_prob", "eq_prob", "band_prob", "codec_prob", "level_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for name in ("rt60_s", "snr_db", "babble_snr_db", "babble_voices", "rms_dbfs"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), got {(lo, hi)}")
        if self.rir_bank < 1:
            raise ValueError(f"rir_bank must be at least 1, got {self.rir_bank}")

    @property
    def active(self) -> bool:
        """Whether any step can happen."""
        return any(getattr(self, n) > 0 for n in ("reverb_prob", "noise_prob", "babble_prob", "eq_prob",
                                                  "band_prob", "codec_prob", "level_prob"))


def room_impulse_responses(count: int, seed: int, rt60_s: tuple[float, float] = (0.15, 0.8)) -> list[np.ndarray]:
    """`count` simulated room impulse responses (16 kHz, unit energy, direct path at sample 0):
    shoebox rooms 3x3x2.4 to 10x8x3.5 m, wall absorption set by Sabine's formula for an RT60 drawn
    from `rt60_s`, source and microphone at random places, image-source order up to 40."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, 22])
    out = []
    while len(out) < count:
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 3.5])
        rt60 = float(rng.uniform(*rt60_s))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # the room is too small for that RT60
            continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 40))
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[max(0, int(np.argmax(np.abs(rir))) - 8):]  # keep the labels' timing: direct path first
        out.append((rir / np.sqrt(np.sum(rir ** 2))).astype(np.float32))
    return out


def rms(audio: np.ndarray) -> float:
    """Root mean square of `audio` (0 for empty)."""
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`audio` convolved with `rir`, cut to the input's length, at the input's RMS."""
    wet = fftconvolve(audio.astype(np.float64), rir.astype(np.float64))[: len(audio)]
    return (wet * (rms(audio) / max(rms(wet), 1e-12))).astype(np.float32)


def add_at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`audio` plus `noise` (tiled or cut to length) scaled to `snr_db` below the speech power."""
    if len(noise) == 0 or rms(noise) <= 1e-12:
        return audio.astype(np.float32, copy=True)
    noise = np.resize(noise, len(audio))
    scale = rms(audio) / rms(noise) / 10 ** (snr_db / 20)
    return (audio + noise * scale).astype(np.float32)


def colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance noise with a spectral slope of 0 to -2 (white to brown), drawn from `rng`."""
    spec = np.fft.rfft(rng.standard_normal(n))
    slope = float(rng.uniform(0.0, 1.0))  # amplitude ~ f^-slope
    spec = spec / np.maximum(np.arange(len(spec)), 1) ** slope
    noise = np.fft.irfft(spec, n)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)


def _peaking_sos(f0: float, gain_db: float, q: float) -> np.ndarray:
    """One second-order section of an RBJ-cookbook peaking equaliser."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def microphone_eq(rng: np.random.Generator, audio: np.ndarray, gain_db: float = 8.0) -> np.ndarray:
    """A random microphone / channel colouring: three peaking filters (150 Hz-6 kHz, gains +-
    `gain_db`, Q 0.7-2.5); same RMS as the input."""
    sos = np.concatenate([_peaking_sos(float(np.exp(rng.uniform(np.log(150), np.log(6000)))),
                                       float(rng.uniform(-gain_db, gain_db)), float(rng.uniform(0.7, 2.5)))
                          for _ in range(3)])
    out = sosfilt(sos, audio.astype(np.float64))
    return (out * (rms(audio) / max(rms(out), 1e-12))).astype(np.float32)


def band_limit(rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
    """Butterworth high-pass at 80-400 Hz and low-pass at 3.4-7 kHz (phone to wide band)."""
    from scipy.signal import butter

    low, high = float(rng.uniform(80, 400)), float(rng.uniform(3400, 7000))
    sos = np.concatenate([butter(2, low, "highpass", fs=SAMPLE_RATE, output="sos"),
                          butter(6, high, "lowpass", fs=SAMPLE_RATE, output="sos")])
    out = sosfilt(sos, audio.astype(np.float64))
    return (out * (rms(audio) / max(rms(out), 1e-12))).astype(np.float32)


def codec_round_trip(audio: np.ndarray, codec: str) -> np.ndarray:
    """`audio` through a telephone codec at 8 kHz and back to 16 kHz with sox: "gsm" (GSM 06.10
    full rate), "mu-law" or "a-law" (G.711). Same length as the input."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    scale = 0.9 / peak if peak > 0.9 else 1.0  # the codecs clip at full scale
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE)]
    coded = ["-t", "gsm"] if codec == "gsm" else ["-t", "raw", "-e", codec, "-b", "8"]
    narrow = _sox([*raw, "-", "-r", "8000", "-c", "1", *coded, "-"], (audio * scale).astype("<f4").tobytes())
    wide = _sox([*coded, "-r", "8000", "-c", "1", "-", *raw, "-"], narrow)
    out = np.frombuffer(wide, dtype="<f4").astype(np.float32) / scale
    return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)]


def _sox(args: list[str], data: bytes) -> bytes:
    proc = subprocess.run(["sox", "-D", "-V1", *args], input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout


def set_level(rng: np.random.Generator, audio: np.ndarray, rms_dbfs: tuple[float, float]) -> np.ndarray:
    """`audio` scaled to an RMS drawn from `rms_dbfs` (dB re full scale), lowered if its peak would
    pass `PEAK_LIMIT` (no clipping)."""
    level = rms(audio)
    if level <= 1e-12:
        return audio.astype(np.float32, copy=True)
    gain = 10 ** (rng.uniform(*rms_dbfs) / 20) / level
    peak = float(np.max(np.abs(audio)))
    gain = min(gain, PEAK_LIMIT / peak)
    return (audio * gain).astype(np.float32)


class RoomSimulator:
    """Applies `Acoustics` to audio, reproducibly from the generator it is given; the RIR bank is
    computed once (seeded) on first use. `babble_source(rng)` returns one other utterance."""

    def __init__(self, acoustics: Acoustics, seed: int,
                 babble_source: Callable[[np.random.Generator], np.ndarray] | None = None) -> None:
        self.acoustics = acoustics
        self.seed = seed
        self.babble_source = babble_source
        self._rirs: list[np.ndarray] | None = None

    @property
    def rirs(self) -> list[np.ndarray]:
        """The seeded bank of room impulse responses (built on first access)."""
        if self._rirs is None:
            self._rirs = room_impulse_responses(self.acoustics.rir_bank, self.seed, self.acoustics.rt60_s)
        return self._rirs

    def babble(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """A few other utterances, each at its own level and offset, summed over `n` samples."""
        out = np.zeros(n, np.float32)
        if self.babble_source is None:
            return out
        for _ in range(int(rng.integers(self.acoustics.babble_voices[0], self.acoustics.babble_voices[1] + 1))):
            voice = self.babble_source(rng)
            if len(voice) == 0 or rms(voice) <= 1e-12:
                continue
            voice = voice / rms(voice) * 10 ** (rng.uniform(-6, 0) / 20)
            start = int(rng.integers(-len(voice) + 1, n)) if n > 0 else 0
            lo, hi = max(0, start), min(n, start + len(voice))
            if hi > lo:
                out[lo:hi] += voice[lo - start:hi - start]
        return out

    def apply(self, rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
        """Room, noise, microphone, channel and level, in that order, each with its probability;
        float32, same length, no sample past `PEAK_LIMIT`."""
        a = self.acoustics
        x = audio.astype(np.float32, copy=True)
        if len(x) == 0:
            return x
        if rng.random() < a.reverb_prob:
            x = reverberate(x, self.rirs[int(rng.integers(len(self.rirs)))])
        if rng.random() < a.babble_prob and self.babble_source is not None:
            x = add_at_snr(x, self.babble(rng, len(x)), float(rng.uniform(*a.babble_snr_db)))
        if rng.random() < a.noise_prob:
            x = add_at_snr(x, colored_noise(rng, len(x)), float(rng.uniform(*a.snr_db)))
        if rng.random() < a.eq_prob:
            x = microphone_eq(rng, x, a.eq_gain_db)
        if rng.random() < a.band_prob:
            x = band_limit(rng, x)
        if rng.random() < a.codec_prob:
            x = codec_round_trip(x, CODECS[int(rng.integers(len(CODECS)))])
        if rng.random() < a.level_prob:
            x = set_level(rng, x, a.rms_dbfs)
        peak = float(np.max(np.abs(x)))
        if peak > PEAK_LIMIT:  # the filters can overshoot; scale rather than clip
            x = x * np.float32(PEAK_LIMIT / peak)
        return x.astype(np.float32)
