"""UniSpeech-SAT in pure PyTorch, bottom-up: blocks -> backbone -> heads.

Parameter names are transformers' (`unispeech_sat.encoder.layers.0.attention.q_proj.weight`, ...),
so Hugging Face checkpoints load key for key (see `models/loading.py`), and every forward computes
what transformers 5.24 computes (checked by tests/test_models_parity.py). Shapes: B batch, N samples,
T frames (20 ms), C conv channels, H hidden size.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from models.config import UniSpeechSatConfig
from models.feature_encoder import ACTIVATIONS, FeatureEncoder, params_key
from models.hardware import cpu_has_native_bf16
from models.loading import PretrainedMixin
from models.outputs import (
    CausalLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    UniSpeechSatBaseModelOutput,
    UniSpeechSatForPreTrainingOutput,
    XVectorOutput,
)
from models.spec_augment import compute_mask_indices


def conv_output_lengths(config: UniSpeechSatConfig, input_lengths: torch.Tensor) -> torch.Tensor:
    """Frames the conv front end makes from `input_lengths` samples (transformers' formula)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        input_lengths = torch.div(input_lengths - kernel, stride, rounding_mode="floor") + 1
    return input_lengths


def frame_mask_from_sample_mask(config: UniSpeechSatConfig, attention_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,N) sample mask -> (B,T) bool frame mask, True on the first conv_lengths(sum) frames.

    Replicates transformers' indexing: a computed length <= 0 wraps around (length 0 marks the
    whole row as real), which only happens for inputs shorter than the 400-sample receptive field.
    """
    lengths = conv_output_lengths(config, attention_mask.long().sum(-1))
    last = lengths - 1
    last = torch.where(last < 0, last + frames, last)
    return torch.arange(frames, device=attention_mask.device)[None, :] <= last[:, None]


# ------------------------------------------------------------------------------------------ blocks
class FeatureProjection(nn.Module):
    """LayerNorm over conv features then Linear to the hidden size; returns (projected, normed)."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed


class PositionalConvEmbedding(nn.Module):
    """Grouped conv over time with weight norm (dim 2), same-padding and GELU: (B,T,H) -> (B,T,H).

    In eval without autograd the normed weight g*v/||v|| is computed once and reused until the
    parameters change (their version counters, device or dtype); in training it is recomputed.
    """

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        k = config.num_conv_pos_embeddings
        conv = nn.Conv1d(config.hidden_size, config.hidden_size, kernel_size=k, padding=k // 2,
                         groups=config.num_conv_pos_embedding_groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.remove_last = 1 if k % 2 == 0 else 0
        self.act = ACTIVATIONS[config.feat_extract_activation]
        self._cache_key: tuple | None = None
        self._cached_weight: torch.Tensor | None = None

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight-normed conv weight (H, H/groups, K), in `dtype` when cached."""
        if self.training or torch.is_grad_enabled():
            return self.conv.weight
        g = self.conv.parametrizations.weight.original0
        v = self.conv.parametrizations.weight.original1
        key = (*params_key(g, v), dtype)
        if key != self._cache_key:
            self._cached_weight = torch._weight_norm(v.to(dtype), g.to(dtype), 2).detach()
            self._cache_key = key
        return self._cached_weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.transpose(1, 2)  # (B,H,T)
        # Without native bf16 (AVX512-BF16/AMX) a CPU has no fast low-precision grouped conv: run
        # it in float32 and cast back. With it, bf16 takes 14 ms instead of 28-44 ms (base, 8 s).
        emulated = x.dtype == torch.float16 or (x.dtype == torch.bfloat16 and not cpu_has_native_bf16())
        dtype = torch.float32 if x.device.type == "cpu" and emulated else x.dtype
        bias = self.conv.bias.to(dtype) if self.conv.bias is not None else None
        x = F.conv1d(x.to(dtype), self.weight(dtype), bias, padding=self.conv.padding, groups=self.conv.groups)
        if self.remove_last:
            x = x[:, :, : -self.remove_last]
        return self.act(x).to(h.dtype).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`; eager when weights are asked.

    Without autograd, q/k/v come from one matmul with the three projections concatenated (cached
    until a projection changes): one better-shaped GEMM instead of three.
    """

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = h // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)
        self._qkv_key: tuple | None = None
        self._qkv: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fused_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        params = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                  self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)
        key = params_key(*params)
        if key != self._qkv_key:
            self._qkv = (torch.cat(params[:3]).detach(), torch.cat(params[3:]).detach())
            self._qkv_key = key
        return self._qkv

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B,T,H); key_mask (B,1,1,T) bool, True = attend. Returns (B,T,H) and (B,heads,T,T) or None."""
        b, t, h = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        if torch.is_grad_enabled():
            q = self.q_proj(x).view(shape).transpose(1, 2)  # (B,heads,T,d)
            k = self.k_proj(x).view(shape).transpose(1, 2)
            v = self.v_proj(x).view(shape).transpose(1, 2)
        else:
            weight, bias = self._fused_qkv()
            qkv = F.linear(x, weight, bias).view(b, t, 3, self.num_heads, self.head_dim)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        p = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            weights = F.dropout(torch.softmax(scores, dim=-1), p=p, training=self.training)
            out = torch.matmul(weights, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, t, h)
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self._gelu = config.hidden_act == "gelu"
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dense(x)
        if self._gelu and not torch.is_grad_enabled():
            x = self.intermediate_dropout(torch.ops.aten.gelu_(x))  # in place: saves an allocation and a pass
        else:
            x = self.intermediate_dropout(self.act(x))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """Transformer layer; post-LN (base models) or pre-LN (`stable`, large models)."""

    def __init__(self, config: UniSpeechSatConfig, stable: bool) -> None:
        super().__init__()
        self.stable = stable
        self.attention = Attention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, h: torch.Tensor, key_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.stable:
            a, w = self.attention(self.layer_norm(h), key_mask, output_attentions)
            h = h + self.dropout(a)
            return h + self.feed_forward(self.final_layer_norm(h)), w
        a, w = self.attention(h, key_mask, output_attentions)
        h = self.layer_norm(h + self.dropout(a))
        return self.final_layer_norm(h + self.feed_forward(h)), w


class Encoder(nn.Module):
    """Positional conv + transformer layers (+ LayerDrop in training). (B,T,H) -> (B,T,H)."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.config = config
        self.stable = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(config, self.stable) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        h: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        key_mask = None
        if frame_mask is not None:
            h = h.masked_fill(~frame_mask[:, :, None], 0.0)  # padded frames enter as zeros
            if not bool(frame_mask.all()):
                key_mask = frame_mask[:, None, None, :]  # (B,1,1,T); dropped when nothing is padded
        h = h + self.pos_conv_embed(h)
        if not self.stable:
            h = self.layer_norm(h)
        h = self.dropout(h)
        hidden: list[torch.Tensor] = [h]
        attentions: list[torch.Tensor] = []
        for layer in self.layers:
            if self.training and self.config.layerdrop > 0.0 and torch.rand([]) < self.config.layerdrop:
                hidden.append(h)
                continue
            h, w = layer(h, key_mask, output_attentions)
            hidden.append(h)
            if w is not None:
                attentions.append(w)
        if self.stable:
            h = self.layer_norm(h)  # hidden[-1] stays the pre-LN tensor, as in transformers 5
        return (h, tuple(hidden) if output_hidden_states else None,
                tuple(attentions) if output_attentions else None)


# ---------------------------------------------------------------------------------------- backbone
class UniSpeechSatPreTrainedModel(PretrainedMixin, nn.Module):
    """Common base: config, weight init as transformers, length helpers, loading (PretrainedMixin)."""

    config: UniSpeechSatConfig

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, PositionalConvEmbedding):
            conv = module.conv
            w = torch.empty_like(conv.weight)
            nn.init.normal_(w, 0.0, 2 * math.sqrt(1 / (conv.kernel_size[0] * conv.in_channels)))
            with torch.no_grad():
                conv.parametrizations.weight.original0.copy_(torch.norm_except_dim(w, 2, 2))
                conv.parametrizations.weight.original1.copy_(w)
                conv.bias.zero_()
        elif isinstance(module, FeatureProjection):
            k = math.sqrt(1 / module.projection.in_features)
            nn.init.uniform_(module.projection.weight, -k, k)
            nn.init.uniform_(module.projection.bias, -k, k)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d) and not hasattr(module, "parametrizations"):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                k = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, -k, k)

    def init_weights(self) -> None:
        """(Re-)initialise every parameter the way transformers does for a fresh model."""
        for module in self.modules():
            self._init_weights(module)
        self._init_extra()

    def _init_extra(self) -> None:
        """Head-specific parameters that are not inside a Linear/LayerNorm/Conv module."""

    def feat_extract_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(self.config, input_lengths)


class UniSpeechSatModel(UniSpeechSatPreTrainedModel):
    """The backbone: conv front end, projection, SpecAugment (training), transformer encoder."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        self.encoder = Encoder(config)
        self.init_weights()

    def _init_extra(self) -> None:
        nn.init.uniform_(self.masked_spec_embed)

    def _mask_hidden_states(
        self, h: torch.Tensor, mask_time_indices: torch.Tensor | None, frame_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """SpecAugment: given time spans (any mode) or random spans (training) -> masked_spec_embed;
        random feature spans (training) -> 0. As transformers' `_mask_hidden_states`."""
        if not self.config.apply_spec_augment:
            return h
        b, t, size = h.shape
        if mask_time_indices is None and self.config.mask_time_prob > 0 and self.training:
            mask_time_indices = torch.tensor(
                compute_mask_indices((b, t), self.config.mask_time_prob, self.config.mask_time_length,
                                     frame_mask, self.config.mask_time_min_masks),
                device=h.device, dtype=torch.bool,
            )
        if mask_time_indices is not None:
            h = torch.where(mask_time_indices[:, :, None], self.masked_spec_embed.to(h.dtype), h)
        if self.config.mask_feature_prob > 0 and self.training:
            feature_mask = torch.tensor(
                compute_mask_indices((b, size), self.config.mask_feature_prob, self.config.mask_feature_length,
                                     min_masks=self.config.mask_feature_min_masks),
                device=h.device, dtype=torch.bool,
            )
            h = h.masked_fill(feature_mask[:, None, :], 0.0)
        return h

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> UniSpeechSatBaseModelOutput:
        """input_values (B,N) float; attention_mask (B,N) 1 on real samples (only for checkpoints
        whose preprocessor_config.json has return_attention_mask=true)."""
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be (batch, samples), got shape {tuple(input_values.shape)}")
        features = self.feature_extractor(input_values)  # (B,T,C)
        frame_mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_values.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} != input_values shape "
                    f"{tuple(input_values.shape)}"
                )
            frame_mask = frame_mask_from_sample_mask(self.config, attention_mask, features.shape[1])
        h, normed = self.feature_projection(features)
        h = self._mask_hidden_states(h, mask_time_indices, frame_mask)
        last, hidden, attentions = self.encoder(h, frame_mask, output_hidden_states, output_attentions)
        return UniSpeechSatBaseModelOutput(last, normed, hidden, attentions, frame_mask)


# ------------------------------------------------------------------------------------------- heads
class _Head(UniSpeechSatPreTrainedModel):
    """A backbone (`unispeech_sat`) plus a head; `forward_head` runs the head on a backbone output."""

    uses_layer_sum: bool = False

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        self.config = config
        self.unispeech_sat = UniSpeechSatModel(config)
        if self.uses_layer_sum and config.use_weighted_layer_sum:
            n = config.num_hidden_layers + 1
            self.layer_weights = nn.Parameter(torch.ones(n) / n)

    def init_head(self) -> None:
        """Initialise the head's parameters (everything outside `unispeech_sat`) as transformers does."""
        for name, child in self.named_children():
            if name != "unispeech_sat":
                for module in child.modules():
                    self._init_weights(module)
        self._init_extra()

    def init_weights(self) -> None:
        self.unispeech_sat.init_weights()
        self.init_head()

    def _init_extra(self) -> None:
        if hasattr(self, "layer_weights"):
            nn.init.constant_(self.layer_weights, 1.0 / self.layer_weights.numel())

    @property
    def needs_hidden_states(self) -> bool:
        """True when the head reads every layer's output (weighted layer sum)."""
        return self.uses_layer_sum and self.config.use_weighted_layer_sum

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the conv front end (the usual fine-tuning recipe)."""
        for p in self.unispeech_sat.feature_extractor.parameters():
            p.requires_grad = False

    def freeze_base_model(self) -> None:
        """Stop gradients into the whole backbone; only the head trains."""
        for p in self.unispeech_sat.parameters():
            p.requires_grad = False

    def _features(self, base: UniSpeechSatBaseModelOutput) -> torch.Tensor:
        if not self.needs_hidden_states:
            return base.last_hidden_state
        if base.hidden_states is None:
            raise ValueError(
                f"{type(self).__name__} uses a weighted layer sum: run the backbone with output_hidden_states=True"
            )
        stacked = torch.stack(base.hidden_states, dim=1)  # (B,L+1,T,H)
        weights = torch.softmax(self.layer_weights, dim=-1)
        return (stacked * weights.view(-1, 1, 1)).sum(dim=1)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        base = self.unispeech_sat(
            input_values, attention_mask,
            output_hidden_states=output_hidden_states or self.needs_hidden_states,
            output_attentions=output_attentions,
        )
        out = self.forward_head(base, attention_mask, labels)
        if self.needs_hidden_states and not output_hidden_states:
            out = _without_hidden_states(out)
        return out

    def forward_head(self, base_output: UniSpeechSatBaseModelOutput, attention_mask=None, labels=None):
        raise NotImplementedError


def _without_hidden_states(out):
    fields = {name: getattr(out, name) for name in out.__slots__}
    fields["hidden_states"] = None
    return type(out)(**fields)


class UniSpeechSatForCTC(_Head):
    """Backbone + dropout + `lm_head` (H -> vocab_size): per-frame CTC logits; CTC loss with labels."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.init_head()

    def forward_head(
        self, base_output: UniSpeechSatBaseModelOutput, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        logits = self.lm_head(self.dropout(base_output.last_hidden_state))  # (B,T,V)
        loss = None
        if labels is not None:
            if labels.max() >= self.config.vocab_size:
                raise ValueError(f"Label values must be <= vocab_size: {self.config.vocab_size}")
            if attention_mask is not None:
                lengths = self.feat_extract_output_lengths(attention_mask.long().sum(-1))
            else:
                lengths = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
            loss = ctc_loss(logits, labels, lengths, self.config.pad_token_id,
                            self.config.ctc_loss_reduction, self.config.ctc_zero_infinity)
        return CausalLMOutput(logits, loss, base_output.hidden_states, base_output.attentions)


def ctc_loss(logits: torch.Tensor, labels: torch.Tensor, logit_lengths: torch.Tensor, blank: int,
             reduction: str = "mean", zero_infinity: bool = False) -> torch.Tensor:
    """transformers' ForCTCLoss: labels padded with -100 or the blank id; log-softmax in fp32."""
    labels = labels.to(logits.device)
    keep = (labels != -100) & (labels != blank)
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(log_probs, labels.masked_select(keep), logit_lengths.long(), keep.sum(-1),
                          blank=blank, reduction=reduction, zero_infinity=zero_infinity)


class UniSpeechSatForSequenceClassification(_Head):
    """Utterance classification: (weighted layer sum) -> projector -> masked mean -> classifier."""

    uses_layer_sum = True

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.init_head()

    def forward_head(
        self, base_output: UniSpeechSatBaseModelOutput, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        h = self.projector(self._features(base_output))  # (B,T,P)
        if attention_mask is None:
            pooled = h.mean(dim=1)
        else:
            mask = frame_mask_from_sample_mask(self.config, attention_mask, h.shape[1])
            pooled = h.masked_fill(~mask[:, :, None], 0.0).sum(dim=1) / mask.sum(dim=1).view(-1, 1)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
        return SequenceClassifierOutput(logits, loss, base_output.hidden_states, base_output.attentions)


class UniSpeechSatForAudioFrameClassification(_Head):
    """Per-frame classification (speaker activity): (weighted layer sum) -> classifier (H -> labels)."""

    uses_layer_sum = True

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_head()

    def forward_head(
        self, base_output: UniSpeechSatBaseModelOutput, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> TokenClassifierOutput:
        logits = self.classifier(self._features(base_output))  # (B,T,num_labels)
        loss = None
        if labels is not None:
            # transformers' loss: cross-entropy against the argmax of the (one-hot) frame labels.
            n = self.config.num_labels
            loss = F.cross_entropy(logits.view(-1, n), torch.argmax(labels.view(-1, n), dim=1))
        return TokenClassifierOutput(logits, loss, base_output.hidden_states, base_output.attentions)


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax loss over cosine scores (scale 30, margin 0.4), as transformers."""

    def __init__(self, input_dim: int, num_labels: int, scale: float = 30.0, margin: float = 0.4) -> None:
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.num_labels = num_labels
        self.weight = nn.Parameter(torch.randn(input_dim, num_labels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.flatten()
        cos = torch.mm(F.normalize(x, dim=1), F.normalize(self.weight, dim=0))
        onehot = F.one_hot(labels, self.num_labels).bool()
        return F.cross_entropy(self.scale * torch.where(onehot, cos - self.margin, cos), labels)


class TDNNLayer(nn.Module):
    """Dilated conv over time stored as transformers' `kernel` Linear (in*k -> out), then ReLU."""

    def __init__(self, config: UniSpeechSatConfig, layer_id: int) -> None:
        super().__init__()
        self.in_dim = config.tdnn_dim[layer_id - 1] if layer_id > 0 else config.tdnn_dim[layer_id]
        self.out_dim = config.tdnn_dim[layer_id]
        self.kernel_size = config.tdnn_kernel[layer_id]
        self.dilation = config.tdnn_dilation[layer_id]
        self.kernel = nn.Linear(self.in_dim * self.kernel_size, self.out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B,T,in) -> (B,T - dilation*(k-1),out)."""
        w = self.kernel.weight.view(self.out_dim, self.kernel_size, self.in_dim).transpose(1, 2)
        h = F.conv1d(h.transpose(1, 2), w, self.kernel.bias, dilation=self.dilation)
        return F.relu(h.transpose(1, 2))


class UniSpeechSatForXVector(_Head):
    """Speaker embeddings: (weighted layer sum) -> projector -> TDNN -> mean+std pooling -> Linear."""

    uses_layer_sum = True

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.tdnn_dim[0])
        self.tdnn = nn.ModuleList(TDNNLayer(config, i) for i in range(len(config.tdnn_dim)))
        self.feature_extractor = nn.Linear(config.tdnn_dim[-1] * 2, config.xvector_output_dim)
        self.classifier = nn.Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)
        self.init_head()

    def _init_extra(self) -> None:
        super()._init_extra()
        nn.init.normal_(self.objective.weight)

    def tdnn_output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        # transformers' formula: (L - k) + 1 per layer, IGNORING the dilation, so for padded
        # (shorter) items a few frames computed partly from padding are pooled. Kept for parity.
        for kernel in self.config.tdnn_kernel:
            input_lengths = input_lengths - kernel + 1
        return input_lengths

    def forward_head(
        self, base_output: UniSpeechSatBaseModelOutput, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> XVectorOutput:
        h = self.projector(self._features(base_output))
        for layer in self.tdnn:
            h = layer(h)  # (B,T',D)
        if attention_mask is None:
            mean, std = h.mean(dim=1), h.std(dim=1)  # unbiased std, as transformers
        else:
            lengths = self.tdnn_output_lengths(self.feat_extract_output_lengths(attention_mask.long().sum(dim=1)))
            means, stds = [], []
            for i, length in enumerate(lengths.tolist()):
                means.append(h[i, :length].mean(dim=0))
                stds.append(h[i, :length].std(dim=0))
            mean, std = torch.stack(means), torch.stack(stds)
        embeddings = self.feature_extractor(torch.cat([mean, std], dim=-1))
        logits = self.classifier(embeddings)
        loss = self.objective(logits, labels) if labels is not None else None
        return XVectorOutput(logits, embeddings, loss, base_output.hidden_states, base_output.attentions)


class GumbelVectorQuantizer(nn.Module):
    """Parameters of transformers' quantizer (codevectors, weight_proj), kept so pre-training
    checkpoints round-trip; transformers 5.24's pre-training forward never calls it, the
    pre-training objective (`models.pretraining.gumbel_quantize`) does."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__()
        groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
        if config.codevector_dim % groups:
            raise ValueError(
                f"config field 'codevector_dim' ({config.codevector_dim}) must be divisible by "
                f"'num_codevector_groups' ({groups})"
            )
        self.codevectors = nn.Parameter(torch.empty(1, groups * per_group, config.codevector_dim // groups))
        self.weight_proj = nn.Linear(config.hidden_size, groups * per_group)


class UniSpeechSatForPreTraining(_Head):
    """transformers 5.24's pre-training class: its forward is a stub (no quantizer, no loss).

    The authors' objective on these parameters (masked cluster prediction, utterance-wise
    contrastive loss, diversity, features penalty) is `models.pretraining.pretraining_losses`."""

    def __init__(self, config: UniSpeechSatConfig) -> None:
        super().__init__(config)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.dropout = nn.Dropout(config.final_dropout)
        self.speaker_proj = nn.Linear(config.hidden_size, config.codevector_dim)
        self.label_embeddings_concat = nn.Parameter(torch.zeros(config.num_clusters, config.codevector_dim))
        self.layer_norm_for_extract = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_head()

    def _init_extra(self) -> None:
        nn.init.normal_(self.quantizer.weight_proj.weight, 0.0, 1.0)
        nn.init.zeros_(self.quantizer.weight_proj.bias)
        nn.init.uniform_(self.quantizer.codevectors)
        nn.init.zeros_(self.label_embeddings_concat)

    def forward_head(
        self, base_output: UniSpeechSatBaseModelOutput, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> UniSpeechSatForPreTrainingOutput:
        return UniSpeechSatForPreTrainingOutput(
            logits=self.dropout_features(base_output.extract_features),
            projected_states=base_output.last_hidden_state,
            hidden_states=base_output.hidden_states,
            attentions=base_output.attentions,
        )


HEAD_CLASSES: dict[str, type[UniSpeechSatPreTrainedModel]] = {
    cls.__name__: cls
    for cls in (UniSpeechSatModel, UniSpeechSatForCTC, UniSpeechSatForSequenceClassification,
                UniSpeechSatForAudioFrameClassification, UniSpeechSatForXVector, UniSpeechSatForPreTraining)
}
