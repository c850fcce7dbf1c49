"""Output values of the UniSpeech-SAT modules, with transformers' field names.

One small frozen dataclass per head instead of transformers' ModelOutput; a field that a call did
not ask for (hidden states, attentions, a loss without labels) is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensors = tuple[torch.Tensor, ...]


@dataclass(frozen=True, slots=True)
class UniSpeechSatBaseModelOutput:
    """Backbone output: `last_hidden_state` (B,T,H), `extract_features` (B,T,C) = normed conv features.

    `hidden_states` (when asked) holds num_hidden_layers + 1 tensors (B,T,H): the encoder input then
    each layer's output (for the stable-layer-norm encoder the last entry is *before* the final
    LayerNorm, as in transformers 5). `frame_mask` (B,T) bool is True on real frames (None if no mask).
    """

    last_hidden_state: torch.Tensor
    extract_features: torch.Tensor
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    frame_mask: torch.Tensor | None = None


@dataclass(frozen=True, slots=True)
class CausalLMOutput:
    """CTC head output: `logits` (B,T,vocab_size); `loss` when labels were given."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass(frozen=True, slots=True)
class SequenceClassifierOutput:
    """Utterance classification output: `logits` (B,num_labels)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass(frozen=True, slots=True)
class TokenClassifierOutput:
    """Frame classification output: `logits` (B,T,num_labels)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass(frozen=True, slots=True)
class XVectorOutput:
    """X-vector output: `embeddings` (B,xvector_output_dim) and `logits` (B,xvector_output_dim)."""

    logits: torch.Tensor
    embeddings: torch.Tensor
    loss: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass(frozen=True, slots=True)
class UniSpeechSatForPreTrainingOutput:
    """transformers 5.24's pre-training output, which is a stub: `logits` are the normed conv
    features, `projected_states` the last hidden state, and no loss or quantized states."""

    logits: torch.Tensor
    projected_states: torch.Tensor
    loss: torch.Tensor | None = None
    projected_quantized_states: torch.Tensor | None = None
    codevector_perplexity: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
