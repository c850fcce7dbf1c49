"""Voice variation on the fly: pitch, speaking rate and vocal-tract length.

Synthetic voices come in few timbres; people's vary in pitch, rate and vocal-tract length. Pitch
and rate change through one sox call (`pitch` then `tempo`, WSOLA: the other stays put); vocal-tract
length perturbation (VTLP, Jaitly and Hinton 2013) warps each short-time spectrum's frequency axis
by a factor near 1, which moves the formants as a shorter or longer vocal tract would.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import numpy as np

from engine.timebase import SAMPLE_RATE

VTLP_FRAME_SAMPLES = 512  # 32 ms analysis frames
VTLP_HOP_SAMPLES = 128  # 75 % overlap: Hann windows sum to a constant
VTLP_BOUNDARY_HZ = 4800.0  # the warp is linear below this and meets Nyquist above it


@dataclass(frozen=True, slots=True)
class VoiceVariation:
    """Ranges of the on-the-fly voice changes (each drawn uniformly)."""

    pitch_cents: float = 300.0  # pitch shift drawn from +- this (formants unchanged)
    tempo_range: float = 0.12  # tempo factor drawn from 1 +- this (pitch unchanged)
    warp_range: float = 0.1  # VTLP factor drawn from 1 +- this

    def __post_init__(self) -> None:
        if not 0 <= self.pitch_cents <= 1200:
            raise ValueError(f"pitch_cents must be in [0, 1200], got {self.pitch_cents}")
        if not 0 <= self.tempo_range < 0.5:
            raise ValueError(f"tempo_range must be in [0, 0.5), got {self.tempo_range}")
        if not 0 <= self.warp_range < 0.3:
            raise ValueError(f"warp_range must be in [0, 0.3), got {self.warp_range}")

    def apply(self, rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
        """`audio` with a pitch shift, tempo change and VTLP drawn from `rng`; same RMS as the input."""
        cents = float(rng.uniform(-self.pitch_cents, self.pitch_cents))
        tempo = float(rng.uniform(1 - self.tempo_range, 1 + self.tempo_range))
        alpha = float(rng.uniform(1 - self.warp_range, 1 + self.warp_range))
        out = vtlp(shift_pitch_tempo(audio, cents, tempo), alpha)
        return match_rms(out, audio)


def match_rms(audio: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`audio` scaled to the RMS of `reference` (float32)."""
    ref = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64)))) if len(reference) else 0.0
    own = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    if own <= 1e-12:
        return audio.astype(np.float32, copy=True)
    return (audio * (ref / own)).astype(np.float32)


def shift_pitch_tempo(audio: np.ndarray, cents: float, tempo: float) -> np.ndarray:
    """`audio` (16 kHz float32) with its pitch moved by `cents` and played `tempo` times faster,
    through sox's `pitch` and `tempo -s` (speech-tuned WSOLA). Deterministic."""
    if abs(cents) < 1 and abs(tempo - 1) < 1e-3:
        return audio.astype(np.float32, copy=True)
    fmt = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE)]
    cmd = ["sox", "-D", "-V1", *fmt, "-", *fmt, "-", "pitch", f"{cents:.0f}", "tempo", "-s", f"{tempo:.3f}"]
    proc = subprocess.run(cmd, input=audio.astype("<f4").tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def _warp_sources(alpha: float, n_bins: int) -> np.ndarray:
    """For each output bin, the (fractional) input bin it takes its magnitude from: the inverse of
    the piecewise-linear VTLP warp f -> alpha f below the boundary, meeting Nyquist above it."""
    nyquist = SAMPLE_RATE / 2
    f_out = np.linspace(0.0, nyquist, n_bins)
    knee = VTLP_BOUNDARY_HZ * min(alpha, 1.0) / alpha  # input frequency where the warp bends
    knee_out = alpha * knee
    f_in = np.where(f_out <= knee_out, f_out / alpha,
                    knee + (f_out - knee_out) * (nyquist - knee) / (nyquist - knee_out))
    return f_in / nyquist * (n_bins - 1)


def vtlp(audio: np.ndarray, alpha: float) -> np.ndarray:
    """Vocal-tract length perturbation: every 32 ms spectrum's magnitudes are read from frequency
    f / alpha (alpha > 1: formants move up, a shorter tract), phases kept; overlap-add resynthesis
    to the same length."""
    x = audio.astype(np.float32)
    n = len(x)
    if n == 0 or abs(alpha - 1) < 1e-4:
        return audio.astype(np.float32, copy=True)
    frame, hop = VTLP_FRAME_SAMPLES, VTLP_HOP_SAMPLES
    pad = frame
    padded = np.concatenate([np.zeros(pad, np.float32), x, np.zeros(pad + frame, np.float32)])
    n_frames = (len(padded) - frame) // hop + 1
    window = np.hanning(frame + 1)[:frame].astype(np.float32)
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]  # (frames, frame)
    spec = np.fft.rfft(padded[idx] * window, axis=1)  # (frames, bins)
    n_bins = spec.shape[1]
    src = _warp_sources(alpha, n_bins)
    lo = np.clip(np.floor(src).astype(int), 0, n_bins - 1)
    frac = (src - lo).astype(np.float32)
    interp = np.zeros((n_bins, n_bins), np.float32)  # magnitude interpolation as one matrix product
    interp[lo, np.arange(n_bins)] += 1 - frac
    interp[np.minimum(lo + 1, n_bins - 1), np.arange(n_bins)] += frac
    mag = np.abs(spec).astype(np.float32)
    gain = (mag @ interp) / np.maximum(mag, 1e-12)  # new magnitude, the frame's own phase
    frames = np.fft.irfft(spec * gain, frame, axis=1).astype(np.float32) * window
    k = frame // hop  # frames overlapping one hop-sized block
    out = np.zeros((n_frames + k - 1, hop), np.float32)
    norm = np.zeros((n_frames + k - 1, hop), np.float32)
    blocks, wins = frames.reshape(n_frames, k, hop), (window ** 2).reshape(k, hop)
    for j in range(k):
        out[j:j + n_frames] += blocks[:, j]
        norm[j:j + n_frames] += wins[j]
    out = (out / np.maximum(norm, 1e-8)).reshape(-1)
    return out[pad:pad + n].astype(np.float32)
