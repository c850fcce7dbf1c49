"""from_pretrained / save_pretrained: head handling, reports, and one clear error per bad checkpoint."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import models
from models.loading import CheckpointError
from tests.tiny_checkpoints import write_tiny_checkpoint

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {head: write_tiny_checkpoint(root / head, head=head) for head in ("base", "ctc", "pretraining")}


def _edit_weights(src, dst, edit):
    import shutil

    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_from_pretrained_returns_eval_model_with_fp32_weights(ckpts):
    model = models.UniSpeechSatForCTC.from_pretrained(ckpts["ctc"])
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.vocab_size == 32 and model.config.architectures == ("UniSpeechSatForCTC",)


def test_base_checkpoint_into_head_class_initialises_and_reports_the_head(ckpts, caplog):
    with caplog.at_level("WARNING"):
        model = models.UniSpeechSatForXVector.from_pretrained(ckpts["base"])
    report = model.load_report
    assert "objective.weight" in report.initialised and "tdnn.0.kernel.weight" in report.initialised
    assert report.dropped == ()
    assert "freshly initialised" in caplog.text
    base = models.UniSpeechSatModel.from_pretrained(ckpts["base"])
    for key, value in base.state_dict().items():
        assert torch.equal(model.unispeech_sat.state_dict()[key], value), key


def test_fresh_head_gets_real_init_and_init_functions_are_restored(ckpts):
    before = torch.nn.init.normal_
    model = models.UniSpeechSatForXVector.from_pretrained(ckpts["base"])
    assert torch.nn.init.normal_ is before  # the skip-init patch is undone after loading
    w = model.tdnn[0].kernel.weight
    assert torch.isfinite(w).all() and 0.5 * model.config.initializer_range < w.std() < 2 * model.config.initializer_range
    assert torch.equal(model.tdnn[0].kernel.bias, torch.zeros_like(model.tdnn[0].kernel.bias))
    fresh = torch.nn.Linear(4, 4)  # modules built after loading are initialised as usual
    assert fresh.weight.abs().sum() > 0


def test_pretraining_and_other_head_keys_are_dropped_and_reported(ckpts):
    model = models.UniSpeechSatModel.from_pretrained(ckpts["pretraining"])
    dropped = set(model.load_report.dropped)
    assert {"quantizer.codevectors", "project_q.weight", "project_hid.weight", "speaker_proj.weight",
            "label_embeddings_concat", "layer_norm_for_extract.weight"} <= dropped
    sd = models.UniSpeechSatForAudioFrameClassification.from_pretrained(ckpts["ctc"])
    assert sd.load_report.dropped == ("lm_head.bias", "lm_head.weight")
    assert "classifier.weight" in sd.load_report.initialised


def test_pretraining_checkpoint_round_trips_its_own_head(ckpts, tmp_path):
    model = models.UniSpeechSatForPreTraining.from_pretrained(ckpts["pretraining"])
    assert model.load_report.dropped == () and model.load_report.initialised == ()
    model.save_pretrained(tmp_path / "again")
    again = models.UniSpeechSatForPreTraining.from_pretrained(tmp_path / "again")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_missing_unexpected_and_mis_shaped_keys_are_named_in_one_error(ckpts, tmp_path):
    def edit(state):
        del state["unispeech_sat.encoder.layers.0.attention.q_proj.weight"]
        state["unispeech_sat.encoder.extra_thing"] = torch.zeros(3)
        state["lm_head.weight"] = torch.zeros(5, 32)

    bad = _edit_weights(ckpts["ctc"], tmp_path / "bad", edit)
    with pytest.raises(CheckpointError) as info:
        models.UniSpeechSatForCTC.from_pretrained(bad)
    message = str(info.value)
    assert "encoder.layers.0.attention.q_proj.weight" in message
    assert "encoder.extra_thing" in message
    assert "lm_head.weight" in message and "(5, 32)" in message


def test_missing_head_weights_of_a_same_class_checkpoint_is_an_error(ckpts, tmp_path):
    bad = _edit_weights(ckpts["ctc"], tmp_path / "nohead", lambda s: s.pop("lm_head.bias"))
    with pytest.raises(CheckpointError, match="lm_head.bias"):
        models.UniSpeechSatForCTC.from_pretrained(bad)


def test_float16_file_is_upcast_unless_a_dtype_is_asked(ckpts, tmp_path):
    half = _edit_weights(ckpts["ctc"], tmp_path / "half", lambda s: s.update({k: v.half() for k, v in s.items()}))
    model = models.UniSpeechSatForCTC.from_pretrained(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    bf16 = models.UniSpeechSatForCTC.from_pretrained(half, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    with torch.no_grad():
        out = bf16(torch.randn(1, 4000, dtype=torch.bfloat16)).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_pickled_objects_in_a_bin_file_are_refused(ckpts, tmp_path):
    import shutil

    folder = tmp_path / "pickle"
    shutil.copytree(ckpts["ctc"], folder)
    (folder / "model.safetensors").unlink()
    torch.save({"weights": object.__new__(_Evil)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="plain tensors"):
        models.UniSpeechSatForCTC.from_pretrained(folder)


class _Evil:
    pass


def test_bad_config_and_missing_files_give_clear_errors(ckpts, tmp_path):
    import shutil

    folder = tmp_path / "cfg"
    shutil.copytree(ckpts["ctc"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["conv_kernel"] = config["conv_kernel"][:-1]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="conv_kernel"):
        models.UniSpeechSatForCTC.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        models.UniSpeechSatForCTC.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        models.UniSpeechSatForCTC.from_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((ckpts["ctc"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        models.UniSpeechSatForCTC.from_pretrained(empty)


def test_repo_id_without_huggingface_hub_says_how_to_get_the_files(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match="huggingface_hub is not installed"):
        models.UniSpeechSatForCTC.from_pretrained("microsoft/unispeech-sat-base-100h-libri-ft")


def test_repo_id_offline_says_how_to_download(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")

    def offline(*args, **kwargs):
        raise hub.errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="hf download microsoft/unispeech-sat-base-plus-sv"):
        models.UniSpeechSatForXVector.from_pretrained("microsoft/unispeech-sat-base-plus-sv")


def test_repo_id_resolves_through_the_hub_cache(monkeypatch, ckpts):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    def cached(repo_id, allow_patterns=None, local_files_only=False):
        calls.append((repo_id, local_files_only))
        return str(ckpts["ctc"])

    monkeypatch.setattr(hub, "snapshot_download", cached)
    model = models.UniSpeechSatForCTC.from_pretrained("someone/tiny-ctc")
    assert calls == [("someone/tiny-ctc", True)]  # the cache is tried first, no network call
    assert model.config.vocab_size == 32
    assert models.CTCVocab.from_pretrained("someone/tiny-ctc").tokens[4] == "|"
