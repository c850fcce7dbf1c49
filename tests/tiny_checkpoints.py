"""Tiny random UniSpeech-SAT checkpoints written by transformers, for tests of every package.

`write_tiny_checkpoint(dir, head=..., variant=...)` saves a transformers model (random weights from
a fixed seed) with `preprocessor_config.json`, and for CTC `vocab.json` + tokenizer files, exactly
as a hub folder looks. The conv front end keeps the real 320-sample hop (20 ms frames) with few
channels, so engine code sees real frame timing. Needs the `test` extra (transformers==5.24.0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

HEADS = ("base", "ctc", "frame", "xvector", "seq", "pretraining")
VARIANTS = ("base", "large")  # base: group norm + post-LN; large: layer norm + stable (pre-LN)
# The LibriSpeech character vocabulary of microsoft/unispeech-sat-base-100h-libri-ft.
LIBRI_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8, "N": 9,
               "I": 10, "H": 11, "S": 12, "R": 13, "D": 14, "L": 15, "U": 16, "M": 17, "W": 18, "C": 19, "F": 20,
               "G": 21, "Y": 22, "P": 23, "B": 24, "V": 25, "K": 26, "'": 27, "X": 28, "J": 29, "Q": 30, "Z": 31}
_CLASS = {"base": "UniSpeechSatModel", "ctc": "UniSpeechSatForCTC", "frame": "UniSpeechSatForAudioFrameClassification",
          "xvector": "UniSpeechSatForXVector", "seq": "UniSpeechSatForSequenceClassification",
          "pretraining": "UniSpeechSatForPreTraining"}
_NUM_LABELS = {"frame": 2, "xvector": 5, "seq": 3}


def tiny_config_dict(variant: str = "base", head: str = "base", **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for transformers' UniSpeechSatConfig of a tiny model."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    config: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="group" if variant == "base" else "layer", do_stable_layer_norm=variant == "large",
        vocab_size=len(LIBRI_VOCAB), tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=16,
        classifier_proj_size=16, codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8,
        num_clusters=7, initializer_range=0.2, use_weighted_layer_sum=head in ("frame", "xvector"),
    )
    if head in _NUM_LABELS:
        config["num_labels"] = _NUM_LABELS[head]
    config.update(overrides)
    return config


def build_reference_model(head: str = "base", variant: str = "base", seed: int = 0, **overrides: Any):
    """A transformers model (eval mode) of the tiny config, random weights from `seed`."""
    import transformers

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    config = transformers.UniSpeechSatConfig(**tiny_config_dict(variant, head, **overrides))
    torch.manual_seed(seed)
    model = getattr(transformers, _CLASS[head])(config)
    with torch.no_grad():  # make the freshly initialised biases and norms non-trivial
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def write_preprocessor(directory: Path, do_normalize: bool, return_attention_mask: bool) -> None:
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": do_normalize, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": return_attention_mask,
        "sampling_rate": 16000}, indent=2))


def write_vocab(directory: Path) -> None:
    (directory / "vocab.json").write_text(json.dumps(LIBRI_VOCAB))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Wav2Vec2CTCTokenizer", "do_lower_case": False, "word_delimiter_token": "|",
        "replace_word_delimiter_char": " ", "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>"}))
    (directory / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))


def write_tiny_checkpoint(
    directory: str | Path,
    head: str = "ctc",
    variant: str = "base",
    weight_norm_keys: str = "parametrizations",
    file_format: str = "safetensors",
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Save a tiny random transformers checkpoint folder and return its path.

    weight_norm_keys: "parametrizations" (what transformers 5 writes) or "legacy" (weight_g/weight_v,
    as the 2021 hub files); file_format: "safetensors" or "bin" (pytorch_model.bin). CTC folders get
    do_normalize=true and no attention mask; the others do_normalize=false with an attention mask,
    like the published checkpoints.
    """
    directory = Path(directory)
    model = build_reference_model(head, variant, seed, **overrides)
    model.save_pretrained(directory, safe_serialization=True)
    if weight_norm_keys not in ("parametrizations", "legacy") or file_format not in ("safetensors", "bin"):
        raise ValueError(f"unknown weight_norm_keys {weight_norm_keys!r} or file_format {file_format!r}")
    if weight_norm_keys == "legacy" or file_format == "bin":
        from safetensors.torch import load_file, save_file

        path = directory / "model.safetensors"
        state = load_file(str(path))
        if weight_norm_keys == "legacy":
            state = {k.replace("parametrizations.weight.original0", "weight_g")
                      .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
        if file_format == "bin":
            path.unlink()
            torch.save(state, directory / "pytorch_model.bin")
        else:
            save_file(state, str(path), metadata={"format": "pt"})
    write_preprocessor(directory, do_normalize=head == "ctc", return_attention_mask=head != "ctc")
    if head == "ctc":
        write_vocab(directory)
    return directory


def write_own_tiny_checkpoint(directory: str | Path, head: str, seed: int = 0, **overrides: Any) -> Path:
    """A tiny random checkpoint folder written with our own models/ (fast: no transformers import),
    with the preprocessing of the published checkpoints. head: "ctc", "frame" or "xvector"."""
    import torch

    import models

    klass = {"ctc": models.UniSpeechSatForCTC, "frame": models.UniSpeechSatForAudioFrameClassification,
             "xvector": models.UniSpeechSatForXVector}[head]
    torch.manual_seed(seed)
    model = klass(models.UniSpeechSatConfig.from_dict(tiny_config_dict("base", head, **overrides)))
    model.init_weights()
    path = model.save_pretrained(directory)
    write_preprocessor(path, do_normalize=head == "ctc", return_attention_mask=head != "ctc")
    if head == "ctc":
        write_vocab(path)
    return path
