"""UniSpeechSatConfig: transformers' defaults, lossless round trips, validation naming the field."""

from __future__ import annotations

import json

import pytest

from models import UniSpeechSatConfig


def test_defaults_are_transformers_defaults():
    transformers = pytest.importorskip("transformers")
    theirs = transformers.UniSpeechSatConfig().to_dict()
    ours = UniSpeechSatConfig().to_dict()
    for key, value in ours.items():
        if key in ("architectures", "id2label", "label2id"):
            continue
        expected = theirs[key]
        assert (list(expected) if isinstance(expected, tuple) else expected) == value, key
    assert UniSpeechSatConfig().inputs_to_logits_ratio == 320
    assert UniSpeechSatConfig().num_labels == 2


def test_unknown_keys_survive_a_round_trip(tmp_path):
    data = {"model_type": "unispeech-sat", "hidden_size": 64, "num_attention_heads": 4,
            "feat_extract_dropout": 0.0, "gradient_checkpointing": False, "transformers_version": "4.12.0.dev0",
            "id2label": {"0": "spk_a", "1": "spk_b", "2": "spk_c"}, "conv_bias": True}
    config = UniSpeechSatConfig.from_dict(data)
    assert config.num_labels == 3 and config.id2label[2] == "spk_c" and config.conv_bias is True
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("feat_extract_dropout", "gradient_checkpointing", "transformers_version"):
        assert saved[key] == data[key]
    again = UniSpeechSatConfig.from_pretrained(tmp_path)
    assert again == config


def test_transformers_reads_our_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    UniSpeechSatConfig(hidden_size=48, num_attention_heads=3, do_stable_layer_norm=True,
                       feat_extract_norm="layer").replace(num_labels=4).save_pretrained(tmp_path)
    theirs = transformers.UniSpeechSatConfig.from_pretrained(tmp_path)
    assert (theirs.hidden_size, theirs.num_labels, theirs.do_stable_layer_norm) == (48, 4, True)


@pytest.mark.parametrize("changes,field", [
    ({"conv_stride": (5, 2)}, "conv_stride"),
    ({"conv_kernel": (10, 3, 3)}, "conv_kernel"),
    ({"hidden_size": 100}, "hidden_size"),
    ({"feat_extract_norm": "batch"}, "feat_extract_norm"),
    ({"tdnn_kernel": (5, 3)}, "tdnn_kernel"),
    ({"tdnn_dilation": (1, 2, 3, 1)}, "tdnn_dilation"),
    ({"hidden_dropout": 1.5}, "hidden_dropout"),
    ({"hidden_act": "mish"}, "hidden_act"),
    ({"ctc_loss_reduction": "avg"}, "ctc_loss_reduction"),
    ({"conv_dim": (512, 0, 512, 512, 512, 512, 512)}, "conv_dim"),
    ({"num_conv_pos_embedding_groups": 7}, "num_conv_pos_embedding_groups"),
])
def test_validation_names_the_bad_field(changes, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        UniSpeechSatConfig(**changes)


def test_adapters_and_other_model_types_are_refused():
    with pytest.raises(ValueError, match="add_adapter"):
        UniSpeechSatConfig.from_dict({"add_adapter": True})
    with pytest.raises(ValueError, match="model_type"):
        UniSpeechSatConfig.from_dict({"model_type": "wav2vec2"})
    with pytest.raises(ValueError, match="unknown config field"):
        UniSpeechSatConfig().replace(hidden_sise=3)
