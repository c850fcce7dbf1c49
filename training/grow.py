"""Deepen a trained encoder by one transformer layer without changing what it computes.

A new training run from an exported model can add capacity this way instead of starting over: the
inserted layer is a copy of its successor whose two residual output projections (attention `out_proj`,
feed-forward `output_dense`) are zero, so in the pre-LN ("stable layer norm") encoder it passes its
input through unchanged; training then grows it from there. Heads that read a softmax-weighted sum of
the hidden states see the inserted position twice, so its weight logit is split in two
(`w - ln 2` each), which keeps the mixture exactly as it was.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

_LAYER = re.compile(r"^(.*\.encoder\.layers\.)(\d+)(\..*)$")
_ZEROED = (".attention.out_proj.", ".feed_forward.output_dense.")


def encoder_depth(state: dict[str, torch.Tensor]) -> int:
    """Number of transformer layers in a UniSpeech-SAT state dict."""
    indices = {int(m.group(2)) for key in state if (m := _LAYER.match(key))}
    if not indices:
        raise ValueError("no encoder layers in this state dict")
    return max(indices) + 1


def grow_state(state: dict[str, torch.Tensor], position: int) -> dict[str, torch.Tensor]:
    """Return `state` with an identity layer inserted before encoder layer `position` (0-based).

    `position` must lie in 0..depth-1: inserting after the last layer would add a hidden state
    (the last layer's output before the final layer norm) that no weighted sum has ever seen.
    """
    depth = encoder_depth(state)
    if not 0 <= position < depth:
        raise ValueError(f"grow position {position} outside 0..{depth - 1} for a {depth}-layer encoder")
    grown: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _LAYER.match(key)
        if m is None:
            grown[key] = value
            continue
        prefix, index, suffix = m.group(1), int(m.group(2)), m.group(3)
        grown[f"{prefix}{index + (index >= position)}{suffix}"] = value
        if index == position:
            copy = torch.zeros_like(value) if any(suffix.startswith(z) for z in _ZEROED) else value.clone()
            grown[f"{prefix}{position}{suffix}"] = copy
    if "layer_weights" in state:
        w = state["layer_weights"]
        half = (w[position] - math.log(2.0)).reshape(1)
        grown["layer_weights"] = torch.cat([w[:position], half, half, w[position + 1:]])
    return grown


def exported_depth(folder: Path) -> int:
    """Encoder depth of an exported model (`folder/ctc/config.json`)."""
    config = folder / "ctc" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"no exported CTC head config at {config}")
    return int(json.loads(config.read_text())["num_hidden_layers"])
