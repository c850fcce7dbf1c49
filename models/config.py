"""UniSpeech-SAT configuration: reads and writes transformers' `config.json` unchanged.

Field names and defaults are transformers 5.24's `UniSpeechSatConfig`; keys we do not model are
kept in `extra` and written back, so a load/save round trip loses nothing. The config is a frozen
value: derive a changed one with `config.replace(field=value)`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
MODEL_TYPE = "unispeech-sat"
ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "tanh")
CTC_REDUCTIONS = ("mean", "sum", "none")

_TUPLE_FIELDS = ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation")
_PROBABILITY_FIELDS = (
    "hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
    "feat_quantizer_dropout", "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob",
)
# Keys transformers writes that we derive instead of storing.
_DERIVED_KEYS = ("num_feat_extract_layers", "num_labels", "model_type")


@dataclass(frozen=True, slots=True)
class UniSpeechSatConfig:
    """The architecture hyper-parameters of a UniSpeech-SAT checkpoint (transformers' names)."""

    vocab_size: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    diversity_loss_weight: float = 0.1
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = False
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    num_clusters: int = 504
    # Labels of classification heads, keyed by class index (transformers' `id2label`, int keys here).
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architectures: tuple[str, ...] | None = None
    # Every other key of config.json, kept verbatim and written back.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"config field {name!r} must be a list of integers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "id2label", {int(k): str(v) for k, v in self.id2label.items()})
        if self.architectures is not None:
            object.__setattr__(self, "architectures", tuple(self.architectures))
        self.validate()

    # ----------------------------------------------------------------------------------- derived
    @property
    def num_labels(self) -> int:
        """Number of classes of the classification heads (the length of `id2label`)."""
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Input samples per output frame (320 for the published checkpoints)."""
        return math.prod(self.conv_stride)

    # -------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent or out-of-range field."""
        n = len(self.conv_dim)
        if n == 0:
            raise ValueError("config field 'conv_dim' must not be empty")
        for name in ("conv_stride", "conv_kernel"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"config field {name!r} has {len(getattr(self, name))} entries but 'conv_dim' has {n}; "
                    "conv_dim, conv_stride and conv_kernel must have the same length"
                )
        for name in ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation"):
            bad = [v for v in getattr(self, name) if not isinstance(v, int) or isinstance(v, bool) or v < 1]
            if bad:
                raise ValueError(f"config field {name!r} must hold positive integers, got {list(getattr(self, name))}")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "xvector_output_dim",
                     "classifier_proj_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"config field 'hidden_size' ({self.hidden_size}) must be divisible by "
                f"'num_attention_heads' ({self.num_attention_heads})"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"config field 'hidden_size' ({self.hidden_size}) must be divisible by "
                f"'num_conv_pos_embedding_groups' ({self.num_conv_pos_embedding_groups})"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(
                f"config field 'feat_extract_norm' must be 'group' or 'layer', got {self.feat_extract_norm!r}"
            )
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"config field {name!r} must be one of {ACTIVATIONS}, got {getattr(self, name)!r}")
        nt = len(self.tdnn_dim)
        for name in ("tdnn_kernel", "tdnn_dilation"):
            if len(getattr(self, name)) != nt:
                raise ValueError(
                    f"config field {name!r} has {len(getattr(self, name))} entries but 'tdnn_dim' has {nt}; "
                    "tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length"
                )
        for name in _PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"config field {name!r} must be a probability in [0, 1], got {value!r}")
        if self.ctc_loss_reduction not in CTC_REDUCTIONS:
            raise ValueError(
                f"config field 'ctc_loss_reduction' must be one of {CTC_REDUCTIONS}, got {self.ctc_loss_reduction!r}"
            )
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ValueError(f"config field 'vocab_size' must be a positive integer, got {self.vocab_size!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ValueError(f"config field 'layer_norm_eps' must be positive, got {self.layer_norm_eps!r}")
        if self.num_labels < 1:
            raise ValueError("config field 'id2label' must name at least one label")
        if self.extra.get("add_adapter"):
            raise ValueError("config field 'add_adapter' is true: adapter layers are not supported")
        if self.extra.get("adapter_attn_dim") is not None:
            raise ValueError("config field 'adapter_attn_dim' is set: attention adapters are not supported")

    # ---------------------------------------------------------------------------- (de)serialising
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UniSpeechSatConfig":
        """Build from a transformers config dict; unknown keys go to `extra`."""
        data = dict(data)
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"config field 'model_type' is {model_type!r}; expected {MODEL_TYPE!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "id2label"}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        id2label = data.pop("id2label", None)
        data.pop("label2id", None)
        num_labels = data.pop("num_labels", None)
        if id2label is not None:
            kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
        elif num_labels is not None:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(num_labels))}
        for key in _DERIVED_KEYS:
            data.pop(key, None)
        kwargs["extra"] = data
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict transformers reads (lists for tuples, str label keys)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "id2label", "architectures"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        if self.architectures is not None:
            out["architectures"] = list(self.architectures)
        out["id2label"] = {str(i): label for i, label in sorted(self.id2label.items())}
        out["label2id"] = {label: i for i, label in sorted(self.id2label.items())}
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    @classmethod
    def from_json_file(cls, path: str | Path) -> "UniSpeechSatConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "UniSpeechSatConfig":
        """Read `config.json` from a checkpoint folder (or the file itself)."""
        path = Path(path)
        return cls.from_json_file(path / CONFIG_NAME if path.is_dir() else path)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CONFIG_NAME
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    def replace(self, **changes: Any) -> "UniSpeechSatConfig":
        """A copy with some fields changed (validated). `num_labels=n` resets `id2label`."""
        if "num_labels" in changes:
            n = changes.pop("num_labels")
            changes.setdefault("id2label", {i: f"LABEL_{i}" for i in range(n)})
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)
