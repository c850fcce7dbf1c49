"""UniSpeech-SAT pre-training: the objective's terms, the mixing, k-means targets, the recipe and
its checkpoints (tiny random configs and a tiny synthetic corpus; seconds)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import UniSpeechSatConfig, UniSpeechSatForPreTraining
from models.pretraining import (
    DICTIONARY_SPECIALS,
    MixingConfig,
    ObjectiveConfig,
    cluster_prediction_loss,
    gumbel_quantize,
    init_for_pretraining,
    mix_utterances,
    pretraining_losses,
    sample_negative_indices,
    span_mask,
    speaker_terms,
    utterance_contrastive_loss,
)

TERMS = ("masked_prediction", "contrastive", "diversity", "features_penalty", "total")


def tiny_config(variant: str = "large", **overrides) -> UniSpeechSatConfig:
    fields = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer" if variant == "large" else "group", do_stable_layer_norm=variant == "large",
        codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8, num_clusters=8 + DICTIONARY_SPECIALS,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    )
    fields.update(overrides)
    return UniSpeechSatConfig(**fields)


def tiny_model(variant: str = "large", seed: int = 0, **overrides) -> UniSpeechSatForPreTraining:
    torch.manual_seed(seed)
    model = UniSpeechSatForPreTraining(tiny_config(variant, **overrides))
    init_for_pretraining(model)
    return model


def fixed_mask(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(span_mask(batch, frames, 0.8, 5, 2, np.random.default_rng(seed)))


# ------------------------------------------------------------------------------ the objective
ALONE = {  # ObjectiveConfig weights that train one term alone
    "masked_prediction": dict(features_pen_weight=0.0, contrastive_weight=0.0, diversity_weight=0.0),
    "features_penalty": dict(pred_masked_weight=0.0, contrastive_weight=0.0, diversity_weight=0.0),
    "contrastive": dict(pred_masked_weight=0.0, features_pen_weight=0.0, diversity_weight=0.0),
    "diversity": dict(pred_masked_weight=0.0, features_pen_weight=0.0, contrastive_weight=0.0, diversity_weight=1.0),
    "total": {},
}


def _train_fixed_batch(variant: str, weights: dict, steps: int = 8) -> list[dict[str, float]]:
    """Adam steps on one fixed batch, fixed mask, negatives and Gumbel noise; the terms per step."""
    model = tiny_model(variant)
    model.train()
    torch.manual_seed(1)
    x = torch.randn(3, 9600)  # 29 frames
    targets = torch.randint(0, 8, (3, 60))
    mask = fixed_mask(3, 29)
    cfg = ObjectiveConfig(cross_sample_negatives=20, **weights)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    history = []
    for step in range(steps):
        torch.manual_seed(step)  # Gumbel noise
        losses = pretraining_losses(model, x, targets, cfg, num_updates=step, mask_time_indices=mask,
                                    generator=torch.Generator().manual_seed(0))
        history.append({name: float(getattr(losses, name).detach()) for name in TERMS
                        if getattr(losses, name) is not None})
        opt.zero_grad()
        losses.total.backward()
        opt.step()
    return history


@pytest.mark.parametrize("term", list(ALONE))
def test_each_term_is_finite_and_decreases_on_a_fixed_batch(term):
    history = _train_fixed_batch("large", ALONE[term])
    assert all(np.isfinite(v) for h in history for v in h.values()), history
    first, last = np.mean([h[term] for h in history[:2]]), np.mean([h[term] for h in history[-2:]])
    assert last < first, (term, [round(h[term], 4) for h in history])


def test_all_terms_on_the_group_norm_variant_and_the_total_is_their_weighted_sum():
    history = _train_fixed_batch("base", {}, steps=6)
    assert set(history[0]) == set(TERMS)
    assert all(np.isfinite(v) for h in history for v in h.values()), history
    assert history[-1]["total"] < history[0]["total"]
    h = history[-1]
    weighted = h["masked_prediction"] + 10 * h["features_penalty"] + h["contrastive"] + 0.1 * h["diversity"]
    assert h["total"] == pytest.approx(weighted, rel=1e-5)


@torch.no_grad()
def _same_vs_other(model: UniSpeechSatForPreTraining, states: torch.Tensor) -> tuple[float, float]:
    """For each frame's anchor speaker_proj(state): the share of (same-utterance, other-utterance)
    quantized-frame pairs it ranks the right way round, and the mean cosine gap (eval: argmax codes)."""
    model.eval()
    b, m, _ = states.shape
    quantized, _, _ = gumbel_quantize(model, states, 1.0)
    anchors = F.normalize(model.speaker_proj(states).reshape(b * m, -1), dim=-1)
    positives = F.normalize(model.project_q(quantized).reshape(b * m, -1), dim=-1)
    cos = anchors @ positives.T
    utt = torch.arange(b).repeat_interleave(m)
    same = utt[:, None] == utt[None, :]
    ranked = np.mean([float((cos[i][same[i]][:, None] > cos[i][~same[i]][None, :]).float().mean())
                      for i in range(b * m)])
    model.train()
    return ranked, float(cos[same].mean() - cos[~same].mean())


def test_contrastive_term_brings_frames_of_one_utterance_closer_than_other_utterances():
    """Toy set: the contrastive layer's states of 6 utterances, each its own direction plus frame
    noise; training the contrastive and diversity terms (quantizer, speaker_proj, project_q) must
    make held-out frames rank their own utterance's quantized frames above the others'."""
    model = tiny_model("large", seed=3)
    centres = torch.randn(6, 1, 32, generator=torch.Generator().manual_seed(0))

    def frames(seed: int) -> torch.Tensor:
        return centres + 0.5 * torch.randn(6, 20, 32, generator=torch.Generator().manual_seed(seed))

    cfg = ObjectiveConfig(cross_sample_negatives=30)
    ranked_before, gap_before = _same_vs_other(model, frames(999))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(30):
        contrastive, diversity, *_ = speaker_terms(model, frames(step), cfg, cfg.gumbel_temperature(step),
                                                   torch.Generator().manual_seed(step))
        opt.zero_grad()
        (contrastive + cfg.diversity_weight * diversity).backward()
        opt.step()
    ranked_after, gap_after = _same_vs_other(model, frames(999))
    assert ranked_before < 0.7 and gap_before < 0.1, (ranked_before, gap_before)
    assert ranked_after > 0.9 and gap_after > 0.2, (ranked_after, gap_after)


def test_cluster_prediction_is_a_softmax_over_clusters_and_drops_rows_equal_to_the_target():
    torch.manual_seed(0)
    proj, emb = torch.randn(7, 5), torch.randn(6, 5)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 1])
    loss, _ = cluster_prediction_loss(proj, targets, emb, 0.1)
    cos = F.normalize(proj, dim=-1) @ F.normalize(emb, dim=-1).T
    assert float(loss) == pytest.approx(float(F.cross_entropy(cos / 0.1, targets)), rel=1e-5)
    # rows 1 and 2 equal: for target 1 both leave the softmax (the authors' neg_is_pos rule)
    emb[2] = emb[1]
    loss, _ = cluster_prediction_loss(proj[:1], torch.tensor([1]), emb, 0.1)
    cos = F.normalize(proj[:1], dim=-1) @ F.normalize(emb, dim=-1).T
    kept = torch.cat([cos[:, 1:2], cos[:, [0, 3, 4, 5]]], dim=1) / 0.1
    assert float(loss) == pytest.approx(float(F.cross_entropy(kept, torch.tensor([0]))), rel=1e-5)
    # transformers' zero init makes every row equal: nothing to learn (hence init_for_pretraining)
    loss, _ = cluster_prediction_loss(proj, targets, torch.zeros(6, 5), 0.1)
    assert float(loss) == 0.0


def test_contrastive_loss_matches_a_pair_by_pair_computation():
    torch.manual_seed(0)
    b, m, d = 3, 4, 6
    anchors, positives = torch.randn(b, m, d), torch.randn(b, m, d)
    cfg = ObjectiveConfig(cross_sample_negatives=5, same_utterance_negatives=2, logit_temp=0.1)
    loss, _ = utterance_contrastive_loss(anchors, positives, cfg, torch.Generator().manual_seed(3))
    idx = sample_negative_indices(b, m, 2, 5, torch.Generator().manual_seed(3))
    assert idx.shape == (b, 7, m)
    assert bool(((idx[:, :2] // m) == torch.arange(b)[:, None, None]).all())  # same-utterance draws
    flat = positives.reshape(-1, d)
    terms = []
    for i in range(b):
        for t in range(m):
            candidates = [(flat[i * m + t], 1.0)] + [(flat[j], float(int(j) // m == i)) for j in idx[i, :, t]]
            for vec, label in candidates:
                logit = F.cosine_similarity(anchors[i, t], vec, dim=0) / 0.1
                terms.append(F.binary_cross_entropy_with_logits(logit, torch.tensor(label)))
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)


def test_span_masks_have_equal_counts_per_row_and_follow_the_seed():
    a = span_mask(5, 200, 0.8, 10, 2, np.random.default_rng(4))
    b = span_mask(5, 200, 0.8, 10, 2, np.random.default_rng(4))
    assert (a == b).all()
    counts = a.sum(1)
    assert (counts == counts[0]).all() and 0.3 * 200 < counts[0] < 200
    short = span_mask(3, 8, 0.8, 10, 2, np.random.default_rng(0))  # spans longer than the input are clipped
    assert (short.sum(1) == short.sum(1)[0]).all() and short.sum(1)[0] >= 1


def test_bad_inputs_are_refused_with_the_reason():
    model = tiny_model()
    x = torch.randn(2, 16000)
    with pytest.raises(ValueError, match="cluster targets must be in 0..7"):
        pretraining_losses(model, x, torch.full((2, 100), 8), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="codevector_dim == proj_codevector_dim"):
        pretraining_losses(tiny_model(proj_codevector_dim=8), x, torch.zeros(2, 100, dtype=torch.long))
    with pytest.raises(ValueError, match="same number of masked frames"):
        mask = fixed_mask(2, 49)
        mask[0, ~mask[0]] = True
        pretraining_losses(model, x, torch.zeros(2, 100, dtype=torch.long), mask_time_indices=mask)


# ---------------------------------------------------------------------------------- mixing
def _ramp_batch(batch: int, samples: int) -> torch.Tensor:
    """Utterance c is (c + 1) * 1e5 + sample index (float64): any piece of it names its source."""
    return (torch.arange(1, batch + 1, dtype=torch.float64)[:, None] * 1e5
            + torch.arange(samples, dtype=torch.float64)[None, :])


def test_mixing_keeps_lengths_and_adds_one_bounded_piece_of_an_utterance_at_the_drawn_snr():
    source = _ramp_batch(4, 3000)
    assert torch.equal(mix_utterances(source, np.random.default_rng(1), MixingConfig(prob=0.0)), source)
    checked = 0
    for seed in range(30):
        out = mix_utterances(source, np.random.default_rng(seed), MixingConfig(prob=1.0))
        assert out.shape == source.shape and out.dtype == source.dtype
        # row 0 is mixed first, so what it receives is a piece of an unmixed utterance
        changed = torch.nonzero(out[0] != source[0]).flatten()
        if len(changed) < 3:
            continue  # a zero-length piece was drawn
        start, end = int(changed[0]), int(changed[-1]) + 1
        assert end - start <= 3000 // 2  # at most half the batch length
        added = (out[0] - source[0])[start:end]
        k = torch.arange(end - start, dtype=torch.float64)
        scale = float(added[1] - added[0])
        origin = float(added[0]) / scale  # (c + 1) * 1e5 + start of the piece in utterance c
        c = int(round(origin / 1e5)) - 1
        piece_start = int(round(origin - (c + 1) * 1e5))
        assert 0 <= c < 4 and 0 <= piece_start <= 3000 - (end - start)
        assert torch.allclose(added, scale * (source[c, piece_start] + k), rtol=1e-9)
        snr = 10 * np.log10(float(source[0].pow(2).mean()) / (scale ** 2 * float(source[c].pow(2).mean())))
        assert -5.0 - 1e-6 <= snr <= 5.0 + 1e-6
        assert torch.equal(out[0, :start], source[0, :start]) and torch.equal(out[0, end:], source[0, end:])
        checked += 1
    assert checked > 20


def test_mixing_probability_is_per_utterance():
    source = _ramp_batch(50, 800)
    out = mix_utterances(source, np.random.default_rng(0), MixingConfig(prob=0.2))
    mixed = int((out != source).any(dim=1).sum())
    assert 3 <= mixed <= 20  # 10 expected; zero-length pieces leave a chosen row unchanged


# ------------------------------------------------------------------------- targets and recipe
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    from training.corpus import CorpusSpec, build

    root = tmp_path_factory.mktemp("corpus")
    build(root, dataclasses.replace(CorpusSpec.tiny(seed=11), workers=1), progress=False)
    return root


def _targets(corpus_root: Path, out: Path, seed: int) -> dict:
    from training.corpus import Corpus
    from training.pretrain_targets import TargetBuilder, TargetSpec

    spec = TargetSpec(clusters=6, percent=1.0, seed=seed, n_init=2, max_iter=10, shard=4)
    return TargetBuilder(Corpus(corpus_root), out, spec, log=lambda s: None).run(("train",))


@pytest.fixture(scope="module")
def targets_dir(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("targets")
    _targets(tiny_corpus, out, seed=0)
    return out


def test_kmeans_targets_are_deterministic_from_a_seed_and_resume(tiny_corpus, tmp_path):
    from training.corpus import Corpus
    from training.pretrain_targets import label_frames, load_targets

    first = _targets(tiny_corpus, tmp_path / "a", seed=3)
    again = _targets(tiny_corpus, tmp_path / "b", seed=3)
    other = _targets(tiny_corpus, tmp_path / "c", seed=4)
    assert first["labels_sha256"] == again["labels_sha256"]
    assert first["labels_sha256"] != other["labels_sha256"]
    corpus = Corpus(tiny_corpus)
    labels = load_targets(tmp_path / "a", "train", corpus)
    assert [len(lab) for lab in labels] == [label_frames(r["length"]) for r in corpus.rows["train"]]
    assert 0 <= min(lab.min() for lab in labels) and max(lab.max() for lab in labels) < 6
    shards = sorted((tmp_path / "a" / "train").glob("shard_*.npy"))
    assert len(shards) > 1
    shards[-1].unlink()  # an interrupted run: the missing shard is rebuilt, the rest reused
    assert _targets(tiny_corpus, tmp_path / "a", seed=3)["labels_sha256"] == first["labels_sha256"]
    with pytest.raises(ValueError, match="other settings or another corpus"):
        _targets(tiny_corpus, tmp_path / "a", seed=5)
    meta = json.loads((tiny_corpus / "meta.json").read_text())
    changed = tmp_path / "changed"  # the same corpus, rebuilt into something else: refused too
    changed.mkdir()
    for path in tiny_corpus.glob("*.*"):
        (changed / path.name).write_bytes(path.read_bytes())
    (changed / "meta.json").write_text(json.dumps({**meta, "fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match="another corpus"):
        _targets(changed, tmp_path / "a", seed=3)


def test_mixing_in_the_recipe_keeps_the_primary_targets(tiny_corpus, targets_dir, tmp_path):
    from training.corpus import Corpus
    from training.pretrain import PretrainConfig, PretrainSampler
    from training.pretrain_targets import load_targets

    corpus = Corpus(tiny_corpus)
    targets = load_targets(targets_dir, "train", corpus)
    cfg = PretrainConfig.smoke()
    x, y = PretrainSampler(corpus, targets, cfg, seed=2).batch()
    mixed = mix_utterances(x, np.random.default_rng(0), MixingConfig(prob=1.0))
    assert mixed.shape == x.shape and not torch.equal(mixed, x)
    # the labels of each row are the k-means labels of its own (unmixed) audio crop
    from training.pretrain_targets import mfcc_features, nearest_centre

    centres = np.load(targets_dir / "kmeans.npz")["centres"]
    for row, labs in zip(x.numpy(), y.numpy()):
        own = nearest_centre(mfcc_features(row), centres)
        n = min(len(own), len(labs))
        assert (own[:n] == labs[:n]).mean() > 0.8  # crop starts are rounded to the 10 ms label grid


def test_recipe_runs_resumes_and_its_checkpoint_loads_in_models_and_transformers(tiny_corpus, targets_dir, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from models.loading import read_state_dict
    from training.pretrain import main

    run = tmp_path / "run"
    args = ["--out", str(run), "--targets", str(targets_dir), "--corpus", str(tiny_corpus), "--smoke",
            "--threads", "1", "--set", "log_every=1", "--set", "mixing.prob=1.0"]
    main(args + ["--minutes", "0.02"])
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("[pretrain] step"))
    for name in ("loss", "pred", "contr", "div", "fpen", "acc", "c_acc", "codes", "temp", "lr"):
        assert f" {name} " in line, line
    steps = torch.load(run / "checkpoint.pt", weights_only=False)["step"]
    main(args + ["--minutes", "0.04", "--resume"])
    assert f"starting at step {steps}" in capsys.readouterr().out
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] > steps

    folder = run / "pretrained"
    ours = UniSpeechSatForPreTraining.from_pretrained(folder)
    assert ours.load_report.initialised == () and ours.load_report.dropped == ()
    saved = read_state_dict(folder)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, saved[key]), key
    theirs = transformers.UniSpeechSatForPreTraining.from_pretrained(folder).eval()
    their_state = theirs.state_dict()
    for key in ("quantizer.codevectors", "quantizer.weight_proj.weight", "project_q.weight", "project_hid.weight",
                "speaker_proj.weight", "label_embeddings_concat", "layer_norm_for_extract.weight",
                "unispeech_sat.masked_spec_embed"):
        assert torch.equal(their_state[key], saved[key]), key
    x = torch.randn(1, 16000)
    with torch.no_grad():
        expected = theirs(x).projected_states
        got = ours(x).projected_states
    assert torch.allclose(got, expected, atol=1e-4)
    # the reloaded model computes the same objective as the one in memory
    model = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    fresh = UniSpeechSatForPreTraining(ours.config)
    fresh.load_state_dict(model)
    fresh.eval()
    targets = torch.randint(0, 6, (2, 100))
    xs = torch.randn(2, 16000)
    kwargs = dict(mask_time_indices=fixed_mask(2, 49), generator=torch.Generator().manual_seed(0))
    a = pretraining_losses(fresh, xs, targets, ObjectiveConfig(cross_sample_negatives=10), **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    b = pretraining_losses(ours, xs, targets, ObjectiveConfig(cross_sample_negatives=10), **kwargs)
    assert float(a.total.detach()) == pytest.approx(float(b.total.detach()), rel=1e-5)


def test_fine_tuning_starts_from_the_pretrained_encoder(tiny_corpus, targets_dir, tmp_path):
    from training.corpus import Corpus
    from training.model import ArchConfig
    from training.pretrain import main
    from training.train import TrainConfig, Trainer

    main(["--out", str(tmp_path / "pt"), "--targets", str(targets_dir), "--corpus", str(tiny_corpus), "--smoke",
          "--threads", "1", "--minutes", "0.01"])
    pretrained = UniSpeechSatForPreTraining.from_pretrained(tmp_path / "pt" / "pretrained")
    trainer = Trainer(tmp_path / "ft", Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    trainer.init_from_pretrained(tmp_path / "pt" / "pretrained")
    for key, value in pretrained.unispeech_sat.state_dict().items():
        assert torch.equal(trainer.model.encoder.state_dict()[key], value), key
    wrong = ArchConfig(**{**dataclasses.asdict(ArchConfig.tiny()), "hidden_size": 48})
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(tmp_path / "ft2", Corpus(tiny_corpus), wrong, TrainConfig.smoke()).init_from_pretrained(
            tmp_path / "pt" / "pretrained")


def test_recipe_refuses_targets_of_another_corpus(tiny_corpus, targets_dir, tmp_path, capsys):
    from training.corpus import CorpusSpec, build
    from training.pretrain import main

    other = tmp_path / "other"
    build(other, dataclasses.replace(CorpusSpec.tiny(seed=12), workers=1), progress=False)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "run"), "--targets", str(targets_dir), "--corpus", str(other), "--smoke"])
    assert exc.value.code == 2
    assert "error: " in capsys.readouterr().err
    json.loads((targets_dir / "targets.json").read_text())


@pytest.mark.parametrize("variant", ["base", "large"])
def test_objective_runs_on_a_checkpoint_written_by_transformers(variant, tmp_path):
    """A transformers-written pre-training folder (hub layout, 2021 weight-norm keys or not) loads
    and trains: every term finite, gradients reach the quantizer and the projections."""
    pytest.importorskip("transformers")
    from tests.tiny_checkpoints import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / variant, head="pretraining", variant=variant, num_clusters=10,
                                   weight_norm_keys="legacy" if variant == "base" else "parametrizations")
    model = UniSpeechSatForPreTraining.from_pretrained(folder)
    init_for_pretraining(model)  # transformers' zero label embeddings would give no gradient
    model.train()
    losses = pretraining_losses(model, torch.randn(2, 9600), torch.randint(0, 6, (2, 60)),
                                ObjectiveConfig(cross_sample_negatives=10), rng=np.random.default_rng(0))
    assert all(np.isfinite(float(getattr(losses, name).detach())) for name in TERMS)
    losses.total.backward()
    for name in ("quantizer.weight_proj.weight", "quantizer.codevectors", "project_q.weight", "project_hid.weight",
                 "speaker_proj.weight", "label_embeddings_concat"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_pretraining_can_continue_from_an_exported_model(tiny_corpus, targets_dir, tmp_path):
    """--init-export: the shipped layout's encoder (fp16, upcast) starts pre-training; a folder of
    another size is refused with the reason."""
    from training.corpus import Corpus
    from training.export import export
    from training.model import ArchConfig
    from training.pretrain import PretrainConfig, Pretrainer
    from training.train import TrainConfig, Trainer

    source = Trainer(tmp_path / "a", Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    export(source.model.eval(), tmp_path / "embedded")
    trainer = Pretrainer(tmp_path / "pt", Corpus(tiny_corpus), targets_dir, ArchConfig.tiny(), PretrainConfig.smoke())
    trainer.init_from_export(tmp_path / "embedded")
    encoder = source.model.encoder.state_dict()
    for key, value in trainer.model.unispeech_sat.state_dict().items():
        assert torch.equal(value, encoder[key].half().float()), key
    assert all(np.isfinite(v) for v in trainer.train_step().values())
    wrong = ArchConfig(**{**dataclasses.asdict(ArchConfig.tiny()), "hidden_size": 48})
    with pytest.raises(ValueError, match="does not fit this architecture"):
        Pretrainer(tmp_path / "pt2", Corpus(tiny_corpus), targets_dir, wrong, PretrainConfig.smoke()).init_from_export(
            tmp_path / "embedded")
