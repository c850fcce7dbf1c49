"""The embedded model: one small UniSpeech-SAT encoder shared by CTC, speaker-activity and x-vector heads.

The three heads are the `models/` classes (so the result saves as three ordinary Hugging Face
folders); in training their `unispeech_sat` backbones are one module, and one encoder pass feeds
every head through `forward_head`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import (
    UniSpeechSatConfig,
    UniSpeechSatForAudioFrameClassification,
    UniSpeechSatForCTC,
    UniSpeechSatForXVector,
)
from training.text import CTC_TOKENS


@dataclass(frozen=True, slots=True)
class ArchConfig:
    """Size of the embedded model (a few million parameters; see docs/training.md)."""

    hidden_size: int = 256
    num_layers: int = 6  # 5 until run 6; run 7 grew it (`--grow-layer`)
    num_heads: int = 4
    intermediate_size: int = 1024
    conv_dim: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256)  # cheap early layers (CPU time)
    num_conv_pos_embeddings: int = 64
    num_conv_pos_embedding_groups: int = 16
    speaker_slots: int = 3
    tdnn_dim: tuple[int, ...] = (128, 128, 128, 128, 384)
    xvector_dim: int = 128
    mask_time_prob: float = 0.05
    dropout: float = 0.05

    @classmethod
    def tiny(cls) -> "ArchConfig":
        """A very small model for smoke tests."""
        return cls(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, conv_dim=(16,) * 7,
                   num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, tdnn_dim=(16, 16, 16, 16, 24),
                   xvector_dim=16)


def base_config(arch: ArchConfig) -> UniSpeechSatConfig:
    """Encoder config shared by the three heads: layer-norm conv front end and pre-LN encoder,
    which are local in time (no group norm over the whole input), as streaming needs."""
    return UniSpeechSatConfig(
        vocab_size=len(CTC_TOKENS), hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads, intermediate_size=arch.intermediate_size,
        hidden_dropout=arch.dropout, activation_dropout=0.0, attention_dropout=arch.dropout,
        feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, feat_extract_norm="layer",
        do_stable_layer_norm=True, conv_dim=arch.conv_dim, conv_bias=False,
        num_conv_pos_embeddings=arch.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=arch.num_conv_pos_embedding_groups,
        mask_time_prob=arch.mask_time_prob, mask_time_length=5, mask_time_min_masks=1,
        ctc_loss_reduction="mean", ctc_zero_infinity=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tdnn_dim=arch.tdnn_dim, xvector_output_dim=arch.xvector_dim,
    )


def speaker_slot_labels(arch: ArchConfig) -> dict[int, str]:
    """id2label of the speaker-activity head: one sigmoid output per speaker slot."""
    return {i: f"speaker_{i}" for i in range(arch.speaker_slots)}


class MultiTaskModel(nn.Module):
    """CTC, speaker-activity and x-vector heads around one shared `UniSpeechSatModel`."""

    def __init__(self, arch: ArchConfig, train_speakers: list[str]) -> None:
        super().__init__()
        if len(train_speakers) < 2:
            raise ValueError(f"need at least 2 training speakers for the x-vector head, got {len(train_speakers)}")
        base = base_config(arch)
        self.arch = arch
        self.ctc = UniSpeechSatForCTC(base)
        self.sd = UniSpeechSatForAudioFrameClassification(
            base.replace(use_weighted_layer_sum=True, id2label=speaker_slot_labels(arch)))
        self.sv = UniSpeechSatForXVector(
            base.replace(use_weighted_layer_sum=True, id2label=dict(enumerate(train_speakers))))
        self.sd.unispeech_sat = self.ctc.unispeech_sat
        self.sv.unispeech_sat = self.ctc.unispeech_sat
        # The AM-softmax space is `classifier(embeddings)`; keeping `classifier` the identity makes
        # the exported `embeddings` (what verification compares) that same cosine space.
        with torch.no_grad():
            self.sv.classifier.weight.copy_(torch.eye(arch.xvector_dim))
            self.sv.classifier.bias.zero_()
        self.sv.classifier.requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        return self.ctc.unispeech_sat

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None):
        """One encoder pass with every layer's output (the speaker heads use weighted layer sums)."""
        return self.encoder(input_values, attention_mask, output_hidden_states=True)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (shared ones counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@torch.no_grad()
def unit_norm_classes(model: MultiTaskModel) -> None:
    """Scale the AM-softmax class weights to unit norm (cosines unchanged). transformers' `randn`
    init has norm ~sqrt(D), where Adam's per-element steps barely turn a vector."""
    w = model.sv.objective.weight
    w.copy_(torch.nn.functional.normalize(w, dim=0))


def angular_prototypical_loss(emb: torch.Tensor, clips: int, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angular prototypical loss on (speakers*clips, D) embeddings grouped by speaker: the last
    clip of each speaker is the query, the mean of its other clips the prototype; cross-entropy
    of the scaled cosine between every query and every prototype."""
    e = emb.view(-1, clips, emb.shape[-1])
    proto = torch.nn.functional.normalize(e[:, :-1].mean(1), dim=-1)
    query = torch.nn.functional.normalize(e[:, -1], dim=-1)
    logits = (query @ proto.T) * w.clamp(min=1e-3) + b
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(e)))
