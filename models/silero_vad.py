"""Silero VAD (v5/v6, 16 kHz) in plain PyTorch, loading the weights the `silero-vad` wheel ships.

Why a re-implementation: the wheel's own loaders give a TorchScript or ONNX model that keeps its
LSTM state inside the object (one object per stream) and `import silero_vad` sets
`torch.set_num_threads(1)` for the whole process. This module is the same network with the state
passed in and out, so one shared, stateless module serves every stream in a batch, and nothing is
imported from the package: its `data/silero_vad_16k.safetensors` file is located and read.
The architecture follows the wheel's `tinygrad_model.py`; `tests/test_silero_vad.py` checks our
outputs against the wheel's TorchScript model chunk by chunk.

The network looks at 512-sample chunks (32 ms) plus the 64 samples before each chunk, and returns
one speech probability per chunk. Model licence: MIT (Silero Team), see the wheel's LICENSE.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

CHUNK_SAMPLES = 512  # samples per decision at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous chunk each decision also sees
STATE_SIZE = 128
WEIGHTS_FILE = "silero_vad.jit"  # the model `silero_vad.load_silero_vad()` gives
# the TorchScript file's parameter names -> ours
_JIT_KEYS = {
    "stft.forward_basis_buffer": "stft_conv.weight",
    **{f"encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}" for i in range(4) for p in ("weight", "bias")},
    **{f"decoder.rnn.{p}": f"lstm.{p}_l0" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "decoder.decoder.2.weight": "final_conv.weight",
    "decoder.decoder.2.bias": "final_conv.bias",
}


class SileroVad(nn.Module):
    """Silero's 16 kHz VAD: STFT conv, four conv blocks, an LSTM over the chunks, a 1x1 decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.n_fft, self.stride, self.pad = 256, 128, 64
        self.cutoff = self.n_fft // 2 + 1
        self.stft_conv = nn.Conv1d(1, 2 * self.cutoff, kernel_size=self.n_fft, stride=self.stride, bias=False)
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, stride=1, padding=1)
        self.lstm = nn.LSTM(128, STATE_SIZE, batch_first=True)  # silero's LSTMCell, run over all chunks at once
        self.final_conv = nn.Conv1d(128, 1, 1)

    def encode(self, chunks: torch.Tensor) -> torch.Tensor:
        """(N, 576) context + chunk samples -> (N, 128) features for the LSTM."""
        x = nn.functional.pad(chunks, (0, self.pad), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, : self.cutoff] ** 2 + x[:, self.cutoff :] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return x.squeeze(-1)  # (N, 128)

    def forward(self, audio: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Speech probability per 512-sample chunk, for a batch of streams.

        `audio`: (B, 64 + 512 * n) float32: the 64 samples before the first chunk (zeros at a
        stream's start), then n chunks. `state`: (2, B, 128) LSTM (h, c) after the previous chunk,
        or None for a fresh stream. Returns probs (B, n) and the state after the last chunk.
        """
        b, length = audio.shape
        n = (length - CONTEXT_SAMPLES) // CHUNK_SAMPLES
        if n < 1 or length != CONTEXT_SAMPLES + n * CHUNK_SAMPLES:
            raise ValueError(f"audio must be 64 + 512*n samples per row, got {length}")
        # every chunk with its 64 samples of context: (B, n, 576)
        frames = audio.unfold(1, CONTEXT_SAMPLES + CHUNK_SAMPLES, CHUNK_SAMPLES)
        feats = self.encode(frames.reshape(b * n, -1)).reshape(b, n, -1)
        if state is None:
            state = audio.new_zeros(2, b, STATE_SIZE)
        out, (h, c) = self.lstm(feats, (state[0:1].contiguous(), state[1:2].contiguous()))  # out: (B, n, 128)
        logits = torch.relu(out) @ self.final_conv.weight[:, :, 0].T + self.final_conv.bias  # the 1x1 conv
        return torch.sigmoid(logits[..., 0]), torch.cat([h, c])


def weights_path() -> Path:
    """Where the installed `silero-vad` wheel keeps its TorchScript model (16 and 8 kHz).

    Raises FileNotFoundError with an install hint when the package or the file is missing.
    """
    spec = importlib.util.find_spec("silero_vad")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"silero-vad is installed but has no {WEIGHTS_FILE} (need silero-vad >= 6): {path}")
    return path


def load_silero_vad(path: str | Path | None = None, device: str | torch.device = "cpu") -> SileroVad:
    """The network with the wheel's weights (or those of the TorchScript file at `path`), in eval mode."""
    scripted = torch.jit.load(str(path or weights_path()), map_location="cpu")
    found = {k[len("_model."):]: v for k, v in scripted.state_dict().items() if k.startswith("_model.")}
    missing = sorted(set(_JIT_KEYS) - set(found))
    if missing:
        raise ValueError(f"{path or weights_path()} is not a 16 kHz silero VAD v5/v6 file: no {missing}")
    model = SileroVad()
    model.load_state_dict({_JIT_KEYS[k]: found[k] for k in _JIT_KEYS})
    return model.to(device).eval()
