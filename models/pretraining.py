"""UniSpeech-SAT's pre-training objective, as the authors' code computes it, on our modules.

transformers 5.24's `UniSpeechSatForPreTraining.forward` is a stub (no loss, quantizer unused), and
its output contract stays as it is for parity. This module is the objective beside it:
`pretraining_losses(model, input_values, cluster_targets, ...)` runs a `UniSpeechSatForPreTraining`
and returns every loss term and the total (`PreTrainingLosses`), using the checkpoint's own
parameters the way the authors' fairseq model uses them. Source: microsoft/UniSpeech, files
`src/fairseq/models/unispeech_sat/unispeech_sat.py` (UniSpeechSATModel, "the model" below),
`src/fairseq/criterions/hubert_criterion.py` ("the criterion"),
`src/fairseq/data/audio/utterance_mixing_dataset.py` ("the dataset") and
`src/fairseq/data/data_utils.py: compute_mask_indices`; line numbers are of that snapshot and
docs/pretraining.md gives the equations.

Key mapping (transformers' conversion script, fairseq -> ours): final_proj -> project_hid,
label_embs_concat -> label_embeddings_concat, spk_proj -> speaker_proj, quantizer.vars ->
quantizer.codevectors, quantizer.weight_proj -> quantizer.weight_proj, project_q -> project_q,
encoder.layer_norm_for_extract -> layer_norm_for_extract, mask_emb -> masked_spec_embed,
layer_norm (on conv features) -> feature_projection.layer_norm, post_extract_proj ->
feature_projection.projection.

Terms (weights: `ObjectiveConfig`):
* masked prediction (HuBERT): cosine similarity / 0.1 between `project_hid(last hidden state)` at
  masked frames and every row of `label_embeddings_concat`, cross-entropy to the frame's cluster
  (the model's `compute_pred`/`compute_nce`, lines 545-557 and 647-673);
* utterance-wise contrastive loss: hidden states of one middle layer at the masked frames,
  `speaker_proj` of them against `project_q(Gumbel-quantized)` versions of the same frames and of
  100 frames drawn from the whole batch; binary cross-entropy with target 1 for frames of the same
  utterance, 0 for other utterances (`compute_pred_spk`, lines 701-737);
* diversity: (G*V - perplexity of the mean code distribution) / (G*V) (`get_extra_losses`, 814-819);
* features penalty: mean square of the conv features (line 607), weight 10 as in the authors' config.

Where we depart from the authors (each also in docs/pretraining.md):
* every term is a per-frame mean (the criterion sums over masked frames and multiplies the extra
  terms by that count; fairseq then divides the gradients by the same count, so the update is
  the same);
* the contrastive layer is `num_hidden_layers // 2` unless set: the authors' default is layer 6 of
  12 (line 255) and their shipped Large config used 12 of 24, both the middle layer;
* the loss weights of the contrastive and diversity terms are ours (1.0 and 0.1): the public code
  does not state them; the one config the authors ship (for their Large checkpoint) has
  `loss_weights [10, 0, 0, 0]`, i.e. the contrastive term switched off;
* masks, negatives and mixing draw from generators passed in (numpy's global state in fairseq);
* one label set (the authors allow several; `untie_final_proj` with one set is the tied case).

Cluster targets are 0-based cluster ids, shifted by `DICTIONARY_SPECIALS` to rows of
`label_embeddings_concat`: fairseq's dictionary puts <s>, <pad>, </s>, <unk> before the cluster
symbols (hence 504 = 500 + 4 rows in the hub checkpoints); the special rows are never targets but
stay in the softmax, as in the authors' model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.unispeech_sat import UniSpeechSatForPreTraining

DICTIONARY_SPECIALS = 4  # fairseq Dictionary: <s>, <pad>, </s>, <unk> come before the cluster symbols


@dataclass(frozen=True, slots=True)
class ObjectiveConfig:
    """Settings of the objective; defaults are the authors' unless the docstring says otherwise."""

    mask_prob: float = 0.8  # authors' config (HuBERT's); transformers' 0.05 is a fine-tuning value
    mask_length: int = 10
    min_masks: int = 2  # apply_mask passes min_masks=2 (line 457)
    logit_temp: float = 0.1
    contrastive_layer: int | None = None  # 1-based layer; None: num_hidden_layers // 2 (ours, see module doc)
    cross_sample_negatives: int = 100  # `cross_sample_instances` (line 265)
    same_utterance_negatives: int = 0  # `num_instances` (line 261)
    latent_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # Gumbel temperature start, floor, decay/update
    pred_masked_weight: float = 1.0
    pred_nomask_weight: float = 0.0
    features_pen_weight: float = 10.0
    contrastive_weight: float = 1.0  # ours: not in the public code (module doc)
    diversity_weight: float = 0.1  # ours: wav2vec 2.0's / transformers' diversity_loss_weight
    feature_grad_mult: float = 1.0  # authors' Large config; HuBERT Base used 0.1
    targets_per_frame: float = 2.0  # label rate / frame rate: 100 Hz MFCC labels on 50 Hz frames (HuBERT)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.mask_length < 1:
            raise ValueError(f"mask_length must be >= 1, got {self.mask_length}")
        if self.cross_sample_negatives < 0 or self.same_utterance_negatives < 0:
            raise ValueError("negative counts must be >= 0")
        if self.cross_sample_negatives + self.same_utterance_negatives == 0 and self.contrastive_weight > 0:
            raise ValueError("the contrastive term needs cross_sample_negatives or same_utterance_negatives > 0")
        if self.targets_per_frame <= 0:
            raise ValueError(f"targets_per_frame must be > 0, got {self.targets_per_frame}")
        object.__setattr__(self, "latent_temp", tuple(float(t) for t in self.latent_temp))

    def gumbel_temperature(self, num_updates: int) -> float:
        """fairseq's schedule: max(start * decay**updates, floor) (GumbelVectorQuantizer.set_num_updates)."""
        start, floor, decay = self.latent_temp
        return max(start * decay**num_updates, floor)


@dataclass(frozen=True, slots=True)
class PreTrainingLosses:
    """Every term (per-frame means), the weighted total, and the authors' logged statistics."""

    total: torch.Tensor
    masked_prediction: torch.Tensor
    unmasked_prediction: torch.Tensor | None
    contrastive: torch.Tensor | None
    diversity: torch.Tensor | None
    features_penalty: torch.Tensor
    masked_accuracy: float
    contrastive_accuracy: float | None
    code_perplexity: float | None
    prob_perplexity: float | None
    gumbel_temperature: float | None
    masked_frames: int

    def as_dict(self) -> dict[str, float]:
        """Floats for logging (terms not computed are left out)."""
        out = {}
        for name, value in ((f, getattr(self, f)) for f in self.__slots__):
            if value is None:
                continue
            out[name] = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        return out


# ------------------------------------------------------------------------------------- masking
def span_mask(batch: int, frames: int, mask_prob: float, mask_length: int, min_masks: int,
              rng: np.random.Generator) -> np.ndarray:
    """(batch, frames) bool span mask, fairseq's `compute_mask_indices` ("static" lengths, overlap
    allowed, no padding): every row gets the same number of masked frames (rows with more are
    subsampled), which the contrastive term needs to view masked frames as (B, M, H).

    transformers' `_compute_mask_indices` (models/spec_augment.py) lacks that equalisation, hence
    this second drawing rule; it draws from `rng` instead of numpy's global state."""
    num_mask = max(min_masks, int(mask_prob * frames / float(mask_length) + rng.random()))
    min_len = mask_length
    if frames - min_len <= num_mask:
        min_len = frames - num_mask - 1
    rows = []
    for _ in range(batch):
        starts = rng.choice(frames - min_len, num_mask, replace=False)
        idx = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
        rows.append(np.unique(idx[idx < frames]))
    keep = min(len(r) for r in rows)
    mask = np.zeros((batch, frames), dtype=bool)
    for i, idx in enumerate(rows):
        if len(idx) > keep:
            idx = rng.choice(idx, keep, replace=False)
        mask[i, idx] = True
    return mask


# ------------------------------------------------------------------------------------ quantizer
def gumbel_quantize(model: UniSpeechSatForPreTraining, x: torch.Tensor, temperature: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fairseq's GumbelVectorQuantizer.forward on the checkpoint's `quantizer` parameters.

    x (B,M,H) -> (quantized (B,M,codevector_dim), prob_perplexity, code_perplexity). In training
    a hard Gumbel-softmax (straight-through) picks one codevector per group; in eval the argmax."""
    q = model.quantizer
    groups = model.config.num_codevector_groups
    num_vars = model.config.num_codevectors_per_group
    b, m, h = x.shape
    logits = q.weight_proj(x.reshape(-1, h)).view(b * m * groups, num_vars)
    k = logits.argmax(-1)
    hard = torch.zeros_like(logits).scatter_(-1, k.view(-1, 1), 1.0).view(b * m, groups, num_vars)
    hard_probs = hard.float().mean(dim=0)
    code_perplexity = torch.exp(-torch.sum(hard_probs * torch.log(hard_probs + 1e-7), dim=-1)).sum()
    avg_probs = torch.softmax(logits.view(b * m, groups, num_vars).float(), dim=-1).mean(dim=0)
    prob_perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-7), dim=-1)).sum()
    if model.training:
        onehot = F.gumbel_softmax(logits.float(), tau=temperature, hard=True).type_as(logits)
    else:
        onehot = hard
    onehot = onehot.view(b * m, groups * num_vars)
    codevectors = q.codevectors[0]  # (G*V, d)
    quantized = (onehot.unsqueeze(-1) * codevectors).view(b * m, groups, num_vars, -1).sum(-2)
    return quantized.view(b, m, -1), prob_perplexity, code_perplexity


# ------------------------------------------------------------------------------------- the terms
def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length in float32 (cosine similarities then are dot products)."""
    return F.normalize(x.float(), dim=-1, eps=1e-8)


def cluster_prediction_loss(proj: torch.Tensor, targets: torch.Tensor, label_embeddings: torch.Tensor,
                            logit_temp: float) -> tuple[torch.Tensor, float]:
    """The model's `compute_pred` + criterion cross-entropy, mean over frames.

    proj (S,D) projected hidden states, targets (S,) rows of `label_embeddings` (K,D). Logits are
    [cos(p, e_target), cos(p, e_0..e_K-1)] / temp with every row *equal* to the target's row set
    to -inf, then cross-entropy to index 0: a softmax over all clusters unless rows coincide."""
    cos_all = _unit(proj) @ _unit(label_embeddings).T  # (S,K)
    pos = cos_all.gather(1, targets[:, None])
    _, row_id = torch.unique(label_embeddings.detach(), dim=0, return_inverse=True)
    same = row_id[targets][:, None] == row_id[None, :]
    logits = torch.cat([pos, cos_all.masked_fill(same, float("-inf"))], dim=1) / logit_temp
    zero = torch.zeros(len(proj), dtype=torch.long, device=proj.device)
    loss = F.cross_entropy(logits, zero)
    with torch.no_grad():  # the criterion's compute_correct: argmax is the positive and argmin is not
        best, worst = logits.argmax(-1) == 0, logits.argmin(-1) == 0
        accuracy = float((best & ~worst).float().mean()) if len(proj) else float("nan")
    return loss, accuracy


def sample_negative_indices(batch: int, frames: int, same_utterance: int, cross_sample: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """The model's `sample_instances` indices into the (B*M) flattened frames, as (B, N, M):
    entry [b, n, t] is the n-th candidate of anchor (b, t); N = same_utterance + cross_sample,
    same-utterance draws first.

    Replicated as written, quirk included: the draws are made as (B, N*M) columns whose "own
    time" for the skip-one rule is column // N, then read as (N, M) blocks (`.view(B, N, M)`),
    so the skipped index has no relation to the anchor and a candidate can be the anchor's own
    frame (then labelled 1, as any frame of its utterance)."""
    if frames < 2:
        raise ValueError("the contrastive term needs at least 2 masked frames per utterance")
    parts = []
    if same_utterance > 0:
        t = torch.arange(frames).repeat_interleave(same_utterance)
        idx = torch.randint(0, frames - 1, (batch, same_utterance * frames), generator=generator)
        idx[idx >= t] += 1
        idx += torch.arange(batch)[:, None] * frames
        parts.append(idx)
    if cross_sample > 0:
        t = torch.arange(frames).repeat_interleave(cross_sample)
        idx = torch.randint(0, batch * frames - 1, (batch, cross_sample * frames), generator=generator)
        idx[idx >= t] += 1
        parts.append(idx)
    return torch.cat(parts, dim=1).view(batch, same_utterance + cross_sample, frames)


def utterance_contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor, cfg: ObjectiveConfig,
                               generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """The model's `compute_pred_spk` after quantization: binary cross-entropy over
    cos(anchor, [own quantized frame, N sampled quantized frames]) / temp, target 1 for frames of
    the anchor's utterance and 0 for other utterances; mean over every (anchor, candidate) pair.

    anchors = speaker_proj(layer states) (B,M,D); positives = project_q(quantized) (B,M,D). The
    cosines come from one (B*M, B*M) product, the same numbers as the authors' per-pair ones."""
    b, m, d = positives.shape
    idx = sample_negative_indices(b, m, cfg.same_utterance_negatives, cfg.cross_sample_negatives, generator)
    cand = idx.to(positives.device).permute(0, 2, 1).reshape(b * m, -1)  # (S,N) flat candidate per anchor
    cos = _unit(anchors).reshape(b * m, d) @ _unit(positives).reshape(b * m, d).T  # (S,S)
    logits = torch.cat([cos.diagonal()[:, None], cos.gather(1, cand)], dim=1) / cfg.logit_temp  # (S,1+N)
    utterance = torch.arange(b * m, device=cand.device) // m
    targets = torch.cat([torch.ones_like(utterance)[:, None], (cand // m == utterance[:, None]).long()], dim=1)
    loss = F.binary_cross_entropy_with_logits(logits, targets.type_as(logits))
    with torch.no_grad():
        accuracy = float(((logits >= 0.0) == targets.bool()).float().mean())
    return loss, accuracy


def speaker_terms(model: UniSpeechSatForPreTraining, states: torch.Tensor, cfg: ObjectiveConfig, temperature: float,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
    """Contrastive and diversity terms from the contrastive layer's masked-frame states (B,M,H):
    anchors `speaker_proj(states)`, positives `project_q(quantizer(states))` (the model's
    `compute_pred_spk`). Returns (contrastive, diversity, accuracy, code perplexity, prob perplexity)."""
    quantized, prob_perplexity, code_perplexity = gumbel_quantize(model, states, temperature)
    positives = model.project_q(quantized)
    contrastive, accuracy = utterance_contrastive_loss(model.speaker_proj(states), positives, cfg, generator)
    num_vars = model.config.num_codevector_groups * model.config.num_codevectors_per_group
    diversity = (num_vars - prob_perplexity) / num_vars
    return contrastive, diversity, accuracy, float(code_perplexity.detach()), float(prob_perplexity.detach())


class _GradMultiply(torch.autograd.Function):
    """fairseq's GradMultiply: identity forward, gradient scaled by `scale`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def align_targets(frames: int, cluster_targets: torch.Tensor, targets_per_frame: float
                  ) -> tuple[int, torch.Tensor]:
    """The model's `forward_targets`: keep `frames` frames (fewer if labels run out) and pick the
    label at `floor(t * targets_per_frame)` for each. cluster_targets (B,L) -> (frames', (B,frames'))."""
    available = cluster_targets.shape[1]
    if targets_per_frame * frames > available:
        frames = int(available / targets_per_frame)
    inds = (torch.arange(frames).float() * targets_per_frame).long().to(cluster_targets.device)
    return frames, cluster_targets[:, inds]


def contrastive_layer(model: UniSpeechSatForPreTraining, cfg: ObjectiveConfig) -> int:
    """1-based encoder layer whose output feeds the contrastive term."""
    n = model.config.num_hidden_layers
    layer = cfg.contrastive_layer if cfg.contrastive_layer is not None else max(1, n // 2)
    if not 1 <= layer <= n:
        raise ValueError(f"contrastive_layer must be in 1..{n}, got {layer}")
    return layer


def check_pretraining_config(model: UniSpeechSatForPreTraining) -> None:
    """The authors compare `speaker_proj` outputs with `project_q` outputs and `project_hid` outputs
    with label embeddings: transformers sizes those by codevector_dim and proj_codevector_dim, so
    the two must be equal (they are in every published checkpoint)."""
    c = model.config
    if c.codevector_dim != c.proj_codevector_dim:
        raise ValueError(f"pre-training needs codevector_dim == proj_codevector_dim, got {c.codevector_dim} "
                         f"and {c.proj_codevector_dim}")


def pretraining_losses(
    model: UniSpeechSatForPreTraining,
    input_values: torch.Tensor,
    cluster_targets: torch.Tensor,
    cfg: ObjectiveConfig = ObjectiveConfig(),
    num_updates: int = 0,
    rng: np.random.Generator | None = None,
    generator: torch.Generator | None = None,
    mask_time_indices: torch.Tensor | None = None,
) -> PreTrainingLosses:
    """Run `model` on an equal-length batch and return every term of the objective.

    input_values (B,N) float (no padding: the authors crop a batch to its shortest utterance);
    cluster_targets (B,L) long cluster ids 0..K-1 at `cfg.targets_per_frame` labels per frame;
    `num_updates` sets the Gumbel temperature; `rng` draws the span masks (or pass
    `mask_time_indices` (B,T) bool with the same count per row); `generator` the negatives."""
    check_pretraining_config(model)
    if input_values.dim() != 2 or cluster_targets.dim() != 2 or len(input_values) != len(cluster_targets):
        raise ValueError(f"input_values (B,N) and cluster_targets (B,L) expected, got {tuple(input_values.shape)} "
                         f"and {tuple(cluster_targets.shape)}")
    rows = model.config.num_clusters - DICTIONARY_SPECIALS
    if int(cluster_targets.min()) < 0 or int(cluster_targets.max()) >= rows:
        raise ValueError(f"cluster targets must be in 0..{rows - 1} (num_clusters {model.config.num_clusters} "
                         f"minus {DICTIONARY_SPECIALS} dictionary specials), got {int(cluster_targets.min())}.."
                         f"{int(cluster_targets.max())}")
    rng = rng if rng is not None else np.random.default_rng()
    base = model.unispeech_sat
    features = base.feature_extractor(input_values)  # (B,T,C)
    if cfg.feature_grad_mult != 1.0:
        features = _GradMultiply.apply(features, cfg.feature_grad_mult) if cfg.feature_grad_mult > 0 \
            else features.detach()
    frames, targets = align_targets(features.shape[1], cluster_targets, cfg.targets_per_frame)
    features = features[:, :frames]
    features_pen = features.float().pow(2).mean()
    h, _ = base.feature_projection(features)  # LayerNorm, projection, dropout (fairseq's dropout_input)
    b = h.shape[0]
    if mask_time_indices is None:
        mask = torch.from_numpy(span_mask(b, frames, cfg.mask_prob, cfg.mask_length, cfg.min_masks, rng))
    else:
        mask = mask_time_indices[:, :frames].bool()
    mask = mask.to(h.device)
    h = torch.where(mask[:, :, None], base.masked_spec_embed.to(h.dtype), h)
    last, hidden, _ = base.encoder(h, None, output_hidden_states=True)

    embeddings = model.label_embeddings_concat
    masked_targets = targets[mask] + DICTIONARY_SPECIALS
    loss_m, acc_m = cluster_prediction_loss(model.project_hid(last[mask]), masked_targets, embeddings, cfg.logit_temp)
    total = cfg.pred_masked_weight * loss_m + cfg.features_pen_weight * features_pen
    loss_u = None
    if cfg.pred_nomask_weight > 0:
        loss_u, _ = cluster_prediction_loss(model.project_hid(last[~mask]), targets[~mask] + DICTIONARY_SPECIALS,
                                            embeddings, cfg.logit_temp)
        total = total + cfg.pred_nomask_weight * loss_u

    contrastive = diversity = None
    contrastive_acc = code_ppl = prob_ppl = temperature = None
    if cfg.contrastive_weight > 0 or cfg.diversity_weight > 0:
        spk = hidden[contrastive_layer(model, cfg)]
        if model.config.do_stable_layer_norm:  # TransformerEncoder.forward, lines 1205-1208
            spk = model.layer_norm_for_extract(spk)
        counts = mask.sum(1)
        if bool((counts != counts[0]).any()):
            raise ValueError("the contrastive term needs the same number of masked frames in every row")
        spk_m = spk[mask].view(b, -1, spk.shape[-1])  # (B,M,H)
        temperature = cfg.gumbel_temperature(num_updates)
        contrastive, diversity, contrastive_acc, code_ppl, prob_ppl = speaker_terms(
            model, spk_m, cfg, temperature, generator)
        total = total + cfg.contrastive_weight * contrastive + cfg.diversity_weight * diversity
    return PreTrainingLosses(
        total=total, masked_prediction=loss_m, unmasked_prediction=loss_u, contrastive=contrastive,
        diversity=diversity, features_penalty=features_pen, masked_accuracy=acc_m,
        contrastive_accuracy=contrastive_acc, code_perplexity=code_ppl, prob_perplexity=prob_ppl,
        gumbel_temperature=temperature, masked_frames=int(mask.sum()),
    )


@torch.no_grad()
def init_for_pretraining(model: UniSpeechSatForPreTraining) -> None:
    """Initialise the pre-training heads of a fresh model as the authors do where transformers
    differs: label embeddings uniform(0,1) (transformers zeroes them, and identical rows make the
    masked-prediction logits all -inf but the target's: loss 0, no gradient); quantizer codevectors
    uniform, weight_proj normal(0,1) with zero bias (already transformers' init)."""
    torch.nn.init.uniform_(model.label_embeddings_concat)
    torch.nn.init.uniform_(model.quantizer.codevectors)
    torch.nn.init.normal_(model.quantizer.weight_proj.weight, 0.0, 1.0)
    torch.nn.init.zeros_(model.quantizer.weight_proj.bias)


# ---------------------------------------------------------------------------------- the mixing
@dataclass(frozen=True, slots=True)
class MixingConfig:
    """The dataset's utterance-mixing settings (task defaults of utterance_mixing_pretraining.py)."""

    prob: float = 0.5  # task default mixing_prob (the dataset's own default is 0.2)
    max_len: int = -1  # -1: a segment is at most half the batch length; k > 0: at most T // k
    num: int = 1  # utterances mixed into each chosen one
    snr_db: tuple[float, float] = (-5.0, 5.0)
    normalize: bool = False  # re-normalise each mixed utterance (the task's `normalize`)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"mixing prob must be in [0, 1], got {self.prob}")
        if self.max_len == 0 or self.max_len < -1:
            raise ValueError(f"mixing max_len must be -1 or > 0, got {self.max_len}")
        if self.num < 1:
            raise ValueError(f"mixing num must be >= 1, got {self.num}")

    def to_dict(self) -> dict:
        return asdict(self)


def mix_utterances(source: torch.Tensor, rng: np.random.Generator, cfg: MixingConfig = MixingConfig()
                   ) -> torch.Tensor:
    """Utterance mixing as the dataset's `mixing_collated_audios` (lines 373-438), as a batch
    transform: each utterance, with probability `prob`, gets `num` segments of utterances of the
    batch (drawn with replacement, itself included) added at random positions, each segment at
    most half the length, scaled to an SNR drawn from U(-5, 5) dB against the whole primary
    utterance. Utterances are processed in order and in place, so a later one may receive a piece
    of an earlier one that was already mixed, as in the authors' loop. Lengths are unchanged; the
    targets stay the primary's (the caller keeps them). Returns a new tensor."""
    out = source.clone()
    b, t = out.shape
    max_len = t // 2 if cfg.max_len < 0 else t // cfg.max_len
    max_len = min(max_len, t)
    for i in range(b):
        if rng.random() >= cfg.prob:
            continue
        for c in rng.choice(b, cfg.num, replace=True):
            seg = int(rng.integers(0, max_len + 1))
            c_end = int(rng.integers(seg, t + 1))
            s_end = int(rng.integers(seg, t + 1))
            ref_pow = float(out[i].double().pow(2).mean())
            other_pow = float(out[c].double().pow(2).mean())
            if other_pow == 0:
                scale = 0.0
            else:
                snr = rng.uniform(*cfg.snr_db)
                scale = math.sqrt(ref_pow / (other_pow * 10 ** (snr / 10)))
            out[i, s_end - seg:s_end] += out[c, c_end - seg:c_end].clone() * scale
        if cfg.normalize:
            out[i] = F.layer_norm(out[i], out[i].shape)
    return out
