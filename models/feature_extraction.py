"""Waveform preprocessing as transformers' Wav2Vec2FeatureExtractor, driven by preprocessor_config.json.

Per utterance: float32, optional zero-mean/unit-variance normalisation (numpy float32, eps 1e-7
inside the square root, over the utterance's own samples), right padding with `padding_value`,
and a (B,N) attention mask only when the checkpoint asks for one (`return_attention_mask`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from models.loading import CheckpointError, load_json, resolve_pretrained

PREPROCESSOR_NAME = "preprocessor_config.json"


@dataclass(frozen=True, slots=True)
class FeatureExtractor:
    """Turns mono float waveforms into the model's `input_values` (and `attention_mask`)."""

    sampling_rate: int = 16000
    do_normalize: bool = True
    return_attention_mask: bool = False
    padding_value: float = 0.0
    feature_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sampling_rate, int) or self.sampling_rate <= 0:
            raise ValueError(f"preprocessor field 'sampling_rate' must be a positive integer, got {self.sampling_rate!r}")
        if self.feature_size != 1:
            raise ValueError(f"preprocessor field 'feature_size' must be 1 (raw mono audio), got {self.feature_size!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureExtractor":
        data = dict(data)
        kwargs = {k: data.pop(k) for k in ("sampling_rate", "do_normalize", "return_attention_mask",
                                           "padding_value", "feature_size") if k in data}
        return cls(**kwargs, extra=data)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path) -> "FeatureExtractor":
        """Read `preprocessor_config.json` from a checkpoint folder or hub repo id."""
        folder = resolve_pretrained(path_or_repo_id, weights=False)
        try:
            return cls.from_dict(load_json(folder, PREPROCESSOR_NAME))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{folder / PREPROCESSOR_NAME}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "padding_side": "right", **self.extra}
        out.update(sampling_rate=self.sampling_rate, do_normalize=self.do_normalize,
                   return_attention_mask=self.return_attention_mask, padding_value=self.padding_value,
                   feature_size=self.feature_size)
        return out

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / PREPROCESSOR_NAME
        target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return target

    def normalize(self, samples: np.ndarray) -> np.ndarray:
        """Zero mean, unit variance in float32 (transformers' formula)."""
        x = np.asarray(samples, dtype=np.float32)
        return (x - x.mean()) / np.sqrt(x.var() + 1e-7)

    def __call__(
        self, audio: np.ndarray | Sequence[np.ndarray], sampling_rate: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One 1-D waveform or a list of them -> (input_values (B,N) float32, attention_mask (B,N) long or None).

        Unlike transformers with padding and no attention mask, normalisation never sees the padding.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"audio sampled at {sampling_rate} Hz, but this model expects {self.sampling_rate} Hz: resample it first"
            )
        items = [audio] if isinstance(audio, np.ndarray) and audio.ndim == 1 else list(audio)
        if not items:
            raise ValueError("no audio given")
        arrays = []
        for i, item in enumerate(items):
            x = np.asarray(item)
            if x.ndim != 1:
                raise ValueError(f"audio item {i} must be 1-D mono samples, got shape {x.shape}")
            if x.size == 0:
                raise ValueError(f"audio item {i} is empty")
            x = x.astype(np.float32)  # float64 -> float32 before normalising, as transformers
            arrays.append(self.normalize(x) if self.do_normalize else x)
        longest = max(len(x) for x in arrays)
        values = np.full((len(arrays), longest), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(arrays), longest), dtype=np.int64)
        for i, x in enumerate(arrays):
            values[i, : len(x)] = x
            mask[i, : len(x)] = 1
        return torch.from_numpy(values), (torch.from_numpy(mask) if self.return_attention_mask else None)
