"""The convolutional feature encoder of UniSpeech-SAT: (B,N) samples -> (B,T,C) features.

Parameters keep transformers' names (`conv_layers.{i}.conv`, `conv_layers.{i}.layer_norm`). The
inference path does the same maths as Conv1d + GroupNorm/LayerNorm + GELU with less and
better-shaped work on CPU (see `FeatureEncoder`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.config import UniSpeechSatConfig

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def params_key(*params: torch.Tensor) -> tuple:
    """Identity of parameter values: changes when a parameter is replaced, moved or edited in place."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)


class ConvLayer(nn.Module):
    """One conv layer of the feature encoder; holds `conv` and (when the config has one) `layer_norm`.

    The layer is run by `FeatureEncoder` in (B,T,C) layout, not by this module's own forward.
    """

    def __init__(self, config: UniSpeechSatConfig, layer_id: int) -> None:
        super().__init__()
        in_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_dim = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(in_dim, out_dim, config.conv_kernel[layer_id], config.conv_stride[layer_id],
                              bias=config.conv_bias)
        if config.feat_extract_norm == "layer":
            self.layer_norm: nn.Module | None = nn.LayerNorm(out_dim, elementwise_affine=True)  # eps 1e-5, as HF
        elif layer_id == 0:
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True)  # per-channel norm over time
        else:
            self.layer_norm = None


class FeatureEncoder(nn.Module):
    """Conv front end: (B,N) samples -> (B,T,C) features (`feature_extractor` in the checkpoints).

    Runs in (time, channel) layout with every strided conv as matmuls over frames. Without autograd
    it does less work than Conv1d + GroupNorm + GELU over (B,C,T): the group norm of layer 0 is
    folded into that layer's weights (per item, from the 10x10 covariance of the input frames),
    later convs read their input frames through strided views instead of copies, and GELU runs in
    place. With autograd (training), or in other dtypes than float32 (strided bf16/fp16 matmuls are
    slow on CPU), it runs the plain form of the same maths.
    """

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.config = config
        self.conv_layers = nn.ModuleList(ConvLayer(config, i) for i in range(config.num_feat_extract_layers))
        self.act = ACTIVATIONS[config.feat_extract_activation]
        self._in_place_gelu = config.feat_extract_activation == "gelu"
        self._weights_key: tuple | None = None
        self._tap_weights: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def _check_length(self, samples: int) -> None:
        length = samples
        for i, (k, s) in enumerate(zip(self.config.conv_kernel, self.config.conv_stride)):
            if length < k:
                raise ValueError(
                    f"input of {samples} samples is too short for the conv front end "
                    f"(layer {i} needs {k} frames, got {length}); the minimum is 400 samples for 16 kHz models"
                )
            length = (length - k) // s + 1

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        self._check_length(input_values.shape[-1])
        needs_grad = torch.is_grad_enabled() and (
            input_values.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if needs_grad or input_values.dtype != torch.float32 or not self._in_place_gelu or any(
            layer.conv.kernel_size[0] < layer.conv.stride[0] for layer in self.conv_layers
        ):
            return self._forward_plain(input_values)
        return self._forward_inference(input_values)

    def _forward_plain(self, input_values: torch.Tensor) -> torch.Tensor:
        h = input_values[:, :, None]  # (B,N,1)
        for layer in self.conv_layers:
            conv = layer.conv
            frames = h.unfold(1, conv.kernel_size[0], conv.stride[0])  # (B,T',C_in,k)
            b, t = frames.shape[:2]
            h = F.linear(frames.reshape(b, t, -1), conv.weight.reshape(conv.out_channels, -1), conv.bias)
            norm = layer.layer_norm
            if isinstance(norm, nn.LayerNorm):
                h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            elif isinstance(norm, nn.GroupNorm):  # per-channel norm over time
                var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
                scale = norm.weight * torch.rsqrt(var + norm.eps)  # (B,1,C)
                h = torch.addcmul(norm.bias - mean * scale, h, scale)
            h = self.act(h)
        return h  # (B,T,C)

    def _taps(self) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per layer >= 1: (weight of the first `stride` taps as (stride*C_in, C_out), [later taps (C_in, C_out)]),
        cached until a conv weight changes."""
        weights = [layer.conv.weight for layer in self.conv_layers[1:]]
        key = params_key(*weights)
        if key != self._weights_key:
            self._tap_weights = []
            for layer in self.conv_layers[1:]:
                w, s = layer.conv.weight, layer.conv.stride[0]  # (C_out, C_in, k)
                first = w[:, :, :s].permute(0, 2, 1).reshape(w.shape[0], -1).t().contiguous()
                rest = [w[:, :, j].t().contiguous() for j in range(s, w.shape[2])]
                self._tap_weights.append((first, rest))
            self._weights_key = key
        return self._tap_weights

    def _forward_inference(self, input_values: torch.Tensor) -> torch.Tensor:
        b = input_values.shape[0]
        layer = self.conv_layers[0]
        conv, norm = layer.conv, layer.layer_norm
        k, s = conv.kernel_size[0], conv.stride[0]
        frames = input_values.unfold(1, k, s)  # (B,T0,k) view; in_channels is 1
        w = conv.weight.reshape(conv.out_channels, k)  # (C,k)
        h = input_values.new_empty(b, frames.shape[1], conv.out_channels)
        # Frames get a column of ones and the weights a bias row, so one plain matmul writes
        # each output once (addmm would first copy the bias into the whole output).
        ones = input_values.new_ones(frames.shape[1], 1)
        for i in range(b):
            f = torch.cat([frames[i], ones], dim=1)  # (T0,k+1): small
            if isinstance(norm, nn.GroupNorm):
                # GroupNorm(C groups) of h = f w^T (+ bias) is a per-channel affine map of h, whose
                # mean and variance follow from the frames' mean and covariance: fold it into w.
                f64, w64 = f[:, :k].double(), w.double()
                mu = f64.mean(0)
                centred = f64 - mu
                cov = centred.t() @ centred / f.shape[0]
                var = ((w64 @ cov) * w64).sum(1)
                scale = norm.weight.double() * torch.rsqrt(var + norm.eps)
                shift = norm.bias.double() - scale * (w64 @ mu)  # a conv bias cancels out
                folded = torch.cat([w64 * scale[:, None], shift[:, None]], dim=1)
            else:
                bias = conv.bias if conv.bias is not None else w.new_zeros(w.shape[0])
                folded = torch.cat([w, bias[:, None]], dim=1)
            torch.mm(f, folded.t().to(h.dtype), out=h[i])
        if isinstance(norm, nn.LayerNorm):
            h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        torch.ops.aten.gelu_(h)
        for layer, (first, rest) in zip(self.conv_layers[1:], self._taps()):
            conv, norm = layer.conv, layer.layer_norm
            k, s = conv.kernel_size[0], conv.stride[0]
            t_in, c_in = h.shape[1], h.shape[2]
            t_out = (t_in - k) // s + 1
            out = h.new_empty(b, t_out, conv.out_channels)
            for i in range(b):
                hi = h[i]  # (T,C_in) contiguous
                # taps 0..s-1 of output frame t are the contiguous rows s*t .. s*t+s-1: one matmul
                torch.mm(hi[: s * t_out].view(t_out, s * c_in), first, out=out[i])
                for j, wj in enumerate(rest, start=s):  # later taps: strided row views, no copy
                    out[i].addmm_(hi[j : j + s * (t_out - 1) + 1 : s], wj)
            if conv.bias is not None:
                out += conv.bias
            if isinstance(norm, nn.LayerNorm):
                out = F.layer_norm(out, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            torch.ops.aten.gelu_(out)
            h = out
        return h
