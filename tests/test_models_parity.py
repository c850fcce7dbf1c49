"""Parity with transformers 5.24 on tiny random checkpoints: every head, both conv-norm and both
encoder variants, padded batches with masks, losses, hidden states, attentions, SpecAugment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from tests.tiny_checkpoints import build_reference_model, write_tiny_checkpoint

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
OURS = {"base": models.UniSpeechSatModel, "ctc": models.UniSpeechSatForCTC,
        "frame": models.UniSpeechSatForAudioFrameClassification, "xvector": models.UniSpeechSatForXVector,
        "seq": models.UniSpeechSatForSequenceClassification, "pretraining": models.UniSpeechSatForPreTraining}
MAIN = {"base": "last_hidden_state", "ctc": "logits", "frame": "logits", "xvector": "embeddings",
        "seq": "logits", "pretraining": "logits"}


def _pair(tmp_path, head, variant="base", **overrides):
    ref = build_reference_model(head, variant, **overrides)
    folder = tmp_path / f"{head}-{variant}"
    ref.save_pretrained(folder)
    return ref, OURS[head].from_pretrained(folder)


def _inputs(batch=3, samples=7200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, samples, generator=g)
    mask = torch.ones(batch, samples, dtype=torch.long)
    for i in range(1, batch):  # shorter items, zero-padded as a feature extractor pads them
        n = samples - 1700 * i
        mask[i, n:] = 0
        x[i, n:] = 0.0
    return x, mask


def _close(a, b, what):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a - b).abs().max().item()
    assert diff <= ATOL, f"{what}: max|diff| {diff:.3g} > {ATOL}"


def _labels(head, batch, frames, generator):
    if head == "ctc":
        labels = torch.randint(5, 32, (batch, 6), generator=generator)
        labels[1:, 4:] = -100
        return labels
    if head == "frame":
        return torch.randint(0, 2, (batch, frames, 2), generator=generator)
    if head == "xvector":
        return torch.randint(0, 5, (batch,), generator=generator)
    if head == "seq":
        return torch.randint(0, 3, (batch,), generator=generator)
    return None


@pytest.mark.parametrize("variant", ["base", "large"])
@pytest.mark.parametrize("head", ["base", "ctc", "frame", "xvector", "seq", "pretraining"])
def test_head_outputs_losses_and_hidden_states_match(tmp_path, head, variant):
    ref, ours = _pair(tmp_path, head, variant)
    x, mask = _inputs()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        frames = ref.unispeech_sat(x).last_hidden_state.shape[1] if head != "base" else 0
        for attention_mask in (None, mask):
            labels = _labels(head, x.shape[0], frames, g)
            kwargs = {} if labels is None else {"labels": labels}
            r = ref(x, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
            o = ours(x, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
            what = f"{head}/{variant}/mask={attention_mask is not None}"
            _close(getattr(o, MAIN[head]), getattr(r, MAIN[head]), what)
            if head == "xvector":
                _close(o.logits, r.logits, what + " logits")
            if head == "base":
                _close(o.extract_features, r.extract_features, what + " extract_features")
            if head == "pretraining":
                _close(o.projected_states, r.projected_states, what + " projected_states")
            assert len(o.hidden_states) == len(r.hidden_states) == 3
            for i, (a, b) in enumerate(zip(o.hidden_states, r.hidden_states)):
                _close(a, b, f"{what} hidden_states[{i}]")
            if labels is not None:
                assert o.loss is not None and torch.isfinite(o.loss)
                _close(o.loss, r.loss, what + " loss")


@pytest.mark.parametrize("norm,stable", [("group", True), ("layer", False)])
def test_mixed_conv_norm_and_encoder_variants_match(tmp_path, norm, stable):
    ref, ours = _pair(tmp_path, "base", feat_extract_norm=norm, do_stable_layer_norm=stable, conv_bias=True)
    x, mask = _inputs()
    with torch.no_grad():
        _close(ours(x, mask).last_hidden_state, ref(x, attention_mask=mask).last_hidden_state, f"{norm}/{stable}")


def test_weighted_layer_sum_sequence_classifier_and_hidden_states_only_when_asked(tmp_path):
    ref, ours = _pair(tmp_path, "seq", "large", use_weighted_layer_sum=True)
    with torch.no_grad():
        ours.layer_weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
        ref.layer_weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
        x, mask = _inputs()
        r, o = ref(x, attention_mask=mask), ours(x, mask)
    _close(o.logits, r.logits, "weighted sum")
    assert o.hidden_states is None and r.hidden_states is None


def test_ctc_loss_sum_reduction_and_zero_infinity(tmp_path):
    ref, ours = _pair(tmp_path, "ctc", ctc_loss_reduction="sum", ctc_zero_infinity=True)
    x, mask = _inputs(batch=2, samples=4000)
    labels = torch.randint(5, 32, (2, 30))  # 30 labels > 12 frames: infinite loss, zeroed
    labels[0, 3:] = -100
    with torch.no_grad():
        r, o = ref(x, attention_mask=mask, labels=labels), ours(x, mask, labels=labels)
    _close(o.loss, r.loss, "ctc sum/zero_infinity")


def test_attentions_match(tmp_path):
    ref, ours = _pair(tmp_path, "base")
    x, mask = _inputs()
    with torch.no_grad():
        ref.config._attn_implementation = "eager"
        r = ref(x, attention_mask=mask, output_attentions=True)
        o = ours(x, mask, output_attentions=True)
    assert len(o.attentions) == len(r.attentions) == 2
    for a, b in zip(o.attentions, r.attentions):
        _close(a, b, "attentions")


def test_forward_head_shares_one_encoder_pass(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "sd", head="frame")
    sd = models.UniSpeechSatForAudioFrameClassification.from_pretrained(folder)
    sv = models.UniSpeechSatForXVector.from_pretrained(write_tiny_checkpoint(tmp_path / "sv", head="xvector"))
    sv.unispeech_sat = sd.unispeech_sat  # the engine shares a backbone between heads this way
    x, mask = _inputs()
    with torch.no_grad():
        base = sd.unispeech_sat(x, mask, output_hidden_states=True)
        _close(sd.forward_head(base, mask).logits, sd(x, mask).logits, "frame head")
        _close(sv.forward_head(base, mask).embeddings, sv(x, mask).embeddings, "xvector head")
        with pytest.raises(ValueError, match="output_hidden_states=True"):
            sd.forward_head(sd.unispeech_sat(x, mask))


def test_training_mode_spec_augment_matches_with_same_numpy_seed(tmp_path):
    overrides = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
                     final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.3, mask_time_length=3,
                     mask_feature_prob=0.3, mask_feature_length=4)
    ref, ours = _pair(tmp_path, "ctc", **overrides)
    ref.train(), ours.train()
    x, mask = _inputs()
    np.random.seed(3)
    r = ref(x, attention_mask=mask).logits
    np.random.seed(3)
    o = ours(x, mask).logits
    np.random.seed(4)
    other = ours(x, mask).logits
    _close(o, r, "train-mode SpecAugment")
    assert (other - o).abs().max() > 1e-3  # a different mask changes the output: masking is active
    o.sum().backward()
    assert ours.unispeech_sat.masked_spec_embed.grad is not None


def test_layerdrop_skips_layers_only_in_training(tmp_path):
    _, ours = _pair(tmp_path, "base", layerdrop=1.0, hidden_dropout=0.0, feat_proj_dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, apply_spec_augment=False)
    x, _ = _inputs(batch=1)
    with torch.no_grad():
        ours.train()
        out = ours(x, output_hidden_states=True)
        assert all(torch.equal(h, out.hidden_states[0]) for h in out.hidden_states)  # every layer dropped
        ours.eval()
        out = ours(x, output_hidden_states=True)
        assert not torch.equal(out.hidden_states[1], out.hidden_states[0])


@pytest.mark.parametrize("keys,file_format", [("legacy", "bin"), ("legacy", "safetensors"), ("parametrizations", "bin")])
def test_both_weight_norm_key_forms_and_file_formats_load(tmp_path, keys, file_format):
    folder = write_tiny_checkpoint(tmp_path / "c", head="ctc", weight_norm_keys=keys, file_format=file_format)
    ref = build_reference_model("ctc")
    ours = models.UniSpeechSatForCTC.from_pretrained(folder)
    assert ours.load_report.initialised == () and ours.load_report.dropped == ()
    x, _ = _inputs(batch=1)
    with torch.no_grad():
        _close(ours(x).logits, ref(x).logits, f"{keys}/{file_format}")


@pytest.mark.parametrize("head", ["ctc", "xvector"])
def test_our_save_pretrained_is_read_back_by_transformers(tmp_path, head):
    folder = write_tiny_checkpoint(tmp_path / "c", head=head, variant="large")
    ours = OURS[head].from_pretrained(folder)
    ours.save_pretrained(tmp_path / "saved")
    cls = getattr(transformers, ours.__class__.__name__)
    ref = cls.from_pretrained(tmp_path / "saved").eval()
    x, mask = _inputs()
    with torch.no_grad():
        _close(getattr(ours(x, mask), MAIN[head]), getattr(ref(x, attention_mask=mask), MAIN[head]), "saved")
    assert ref.config.to_dict()["conv_bias"] is False


@pytest.mark.parametrize("variant", ["base", "large"])
def test_inference_and_autograd_paths_agree_and_frozen_encoder_gets_no_gradient(tmp_path, variant):
    folder = write_tiny_checkpoint(tmp_path / "c", head="ctc", variant=variant, conv_bias=True)
    model = models.UniSpeechSatForCTC.from_pretrained(folder)
    x, mask = _inputs()
    with torch.no_grad():
        fast = model(x, mask).logits
    slow = model(x, mask).logits  # autograd enabled: the differentiable path
    _close(fast, slow.detach(), f"{variant} inference vs autograd path")
    model.train()
    model.freeze_feature_encoder()
    model(x, mask).logits.sum().backward()
    assert all(p.grad is None for p in model.unispeech_sat.feature_extractor.parameters())
    assert model.lm_head.weight.grad is not None
    assert model.unispeech_sat.encoder.layers[0].attention.q_proj.weight.grad is not None


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["base", "large"])
def test_full_size_configs_match(tmp_path, variant):
    """Base-size conv front end and encoder (12 layers; the large variant with base widths to keep
    memory small), padded batch with mask; run with `pytest -m slow`."""
    overrides = {} if variant == "base" else dict(feat_extract_norm="layer", do_stable_layer_norm=True)
    config = transformers.UniSpeechSatConfig(**overrides)
    torch.manual_seed(0)
    ref = transformers.UniSpeechSatModel(config).eval()
    ref.save_pretrained(tmp_path)
    ours = models.UniSpeechSatModel.from_pretrained(tmp_path)
    x, mask = _inputs(batch=2, samples=32000)
    with torch.no_grad():
        _close(ours(x, mask).last_hidden_state, ref(x, attention_mask=mask).last_hidden_state, variant)
        _close(ours(x[:1]).last_hidden_state, ref(x[:1]).last_hidden_state, variant + " unpadded")
