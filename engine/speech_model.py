"""The speech detector on the model side: speech probability per 20 ms frame of a batch of windows.

`SileroDetector` runs Silero VAD (models/silero_vad.py, trained on real speech in real rooms) over
each window from a fresh state and puts its 32 ms decisions on the engine's 20 ms frame grid.
Windows are independent, so the detector is shared and stateless like the encoders and batches
across streams; the window's left context (1 s by default) warms the detector up before the frames
a window commits. `EnergyDetector` is the fallback when Silero cannot load: frame energy against the
window's own noise floor, which cannot tell speech from other sounds. Both also mark the speech of
whole recordings (`speech_frames`), which enrollment uses to measure net speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import frames_in
from engine.speech_detect import EnergySpeechDetector
from engine.timebase import FRAME_SAMPLES

DETECTORS = ("silero", "energy", "off")


class SileroDetector:
    """Silero VAD as a batched, stateless frame-probability model."""

    name = "silero"

    def __init__(self, device: Any = "cpu", path: str | None = None) -> None:
        import torch

        from models.silero_vad import CHUNK_SAMPLES, CONTEXT_SAMPLES, load_silero_vad

        self._torch = torch
        self.device = torch.device(device)
        self.model = load_silero_vad(path, device=self.device)
        self.chunk, self.context = CHUNK_SAMPLES, CONTEXT_SAMPLES

    def chunk_probs(self, batch: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """(B, N) audio -> (B, N // 512) probabilities per 32 ms chunk and the state after them."""
        torch = self._torch
        n = batch.shape[1] // self.chunk
        if n == 0:
            return np.zeros((batch.shape[0], 0), np.float32), state
        x = np.zeros((batch.shape[0], self.context + n * self.chunk), np.float32)
        x[:, self.context :] = batch[:, : n * self.chunk]
        with torch.inference_mode():
            probs, state = self.model(torch.from_numpy(x).to(self.device), state)
        return probs.float().cpu().numpy(), state

    def frame_probs(self, batch: np.ndarray) -> np.ndarray:
        """(B, N) windows -> (B, T) speech probability per encoder frame (T = frames of N samples)."""
        probs, _ = self.chunk_probs(np.asarray(batch, np.float32))
        return _on_frame_grid(probs, batch.shape[1], self.chunk)

    def speech_frames(self, samples: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Speech mask of a whole recording (one bool per whole or partial 20 ms frame)."""
        x = np.asarray(samples, np.float32)
        probs, state = [], None
        step = self.chunk * 600  # about 19 s per call, state carried across
        for lo in range(0, len(x), step):
            piece = x[lo : lo + step]
            pad = -len(piece) % self.chunk
            p, state = self.chunk_probs(np.pad(piece, (0, pad))[None], state)
            probs.append(p[0])
        chunk_p = np.concatenate(probs) if probs else np.zeros(0, np.float32)
        n_frames = -(-len(x) // FRAME_SAMPLES)
        centres = np.arange(n_frames) * FRAME_SAMPLES + FRAME_SAMPLES // 2
        if len(chunk_p) == 0:
            return np.zeros(n_frames, bool)
        return chunk_p[np.minimum(centres // self.chunk, len(chunk_p) - 1)] >= threshold


def _on_frame_grid(chunk_probs: np.ndarray, n_samples: int, chunk: int) -> np.ndarray:
    """Per-chunk probabilities -> per-frame (the chunk holding each frame's centre)."""
    t = frames_in(n_samples)
    if chunk_probs.shape[1] == 0:
        return np.zeros((chunk_probs.shape[0], t), np.float32)
    centres = np.arange(t) * FRAME_SAMPLES + 200  # a frame sees samples [320 t, 320 t + 400)
    idx = np.minimum(centres // chunk, chunk_probs.shape[1] - 1)
    return chunk_probs[:, idx].astype(np.float32)


@dataclass
class EnergyDetector:
    """Fallback: the energy detector of engine.speech_detect, per window (probabilities 0.9 / 0.05)."""

    detector: EnergySpeechDetector = field(default_factory=EnergySpeechDetector)
    name: str = "energy"

    def frame_probs(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        for w in np.asarray(batch, np.float32):
            t = frames_in(len(w))
            mask = self.detector.speech_frames(w)[:t]
            rows.append(np.where(mask, 0.9, 0.05).astype(np.float32))
        return np.stack(rows)

    def speech_frames(self, samples: np.ndarray) -> np.ndarray:
        return self.detector.speech_frames(samples)


def load_detector(kind: str, device: Any = "cpu") -> "SileroDetector | EnergyDetector | None":
    """The speech detector `kind` ("silero", "energy" or "off": None).

    When Silero cannot load, the energy detector stands in, and `fallback_note` says why (the app
    prints it): the energy detector takes loud noise for speech, so real rooms suffer.
    """
    global fallback_note
    fallback_note = None
    if kind not in DETECTORS:
        raise ValueError(f"speech detector must be one of {', '.join(DETECTORS)}, got {kind!r}")
    if kind == "off":
        return None
    if kind == "energy":
        return EnergyDetector()
    try:
        return SileroDetector(device)
    except Exception as exc:  # a missing or broken package must not stop captions
        fallback_note = (f"the Silero speech detector could not load ({exc}); using the energy detector, "
                         f"which takes loud noise for speech (pip install silero-vad, or --vad energy to silence this)")
        return EnergyDetector()


fallback_note: str | None = None
_default: "SileroDetector | EnergyDetector | None" = None


def default_detector() -> "SileroDetector | EnergyDetector":
    """The detector enrollment and verification measure net speech with: Silero, loaded once
    (the energy detector when Silero cannot load)."""
    global _default
    if _default is None:
        _default = load_detector("silero")
    assert _default is not None
    return _default
