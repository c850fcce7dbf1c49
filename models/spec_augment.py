"""SpecAugment span masks, drawn with numpy exactly as transformers' `_compute_mask_indices`
(so a fixed numpy seed gives transformers' masks)."""

from __future__ import annotations

import numpy as np
import torch


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    attention_mask: torch.Tensor | None = None,
    min_masks: int = 0,
) -> np.ndarray:
    """SpecAugment span mask (B,L) bool, drawn with numpy exactly as transformers' `_compute_mask_indices`."""
    batch_size, sequence_length = shape
    if mask_length < 1:
        raise ValueError("`mask_length` has to be bigger than 0.")
    if mask_length > sequence_length:
        raise ValueError(
            f"`mask_length` ({mask_length}) has to be smaller than `sequence_length` ({sequence_length})"
        )
    epsilon = np.random.rand(1).item()

    def num_spans(input_length: int) -> int:
        n = max(int(mask_prob * input_length / mask_length + epsilon), min_masks)
        if n * mask_length > sequence_length:
            n = sequence_length // mask_length
        if input_length - (mask_length - 1) < n:
            n = max(input_length - (mask_length - 1), 0)
        return n

    input_lengths = (
        attention_mask.detach().sum(-1).tolist() if attention_mask is not None else [sequence_length] * batch_size
    )
    mask = np.zeros((batch_size, sequence_length), dtype=bool)
    max_spans = num_spans(sequence_length)
    if max_spans == 0:
        return mask
    starts = []
    for input_length in input_lengths:
        n = num_spans(input_length)
        idx = np.random.choice(np.arange(input_length - (mask_length - 1)), n, replace=False)
        dummy = sequence_length - 1 if len(idx) == 0 else idx[0]
        starts.append(np.concatenate([idx, np.ones(max_spans - n, dtype=np.int32) * dummy]))
    starts = np.array(starts)
    spans = np.broadcast_to(starts[:, :, None], (batch_size, max_spans, mask_length))
    spans = spans.reshape(batch_size, max_spans * mask_length) + np.broadcast_to(
        np.arange(mask_length)[None, None, :], (batch_size, max_spans, mask_length)
    ).reshape(batch_size, max_spans * mask_length)
    spans = np.minimum(spans, sequence_length - 1)
    np.put_along_axis(mask, spans, 1, -1)
    return mask
