"""Loading and saving Hugging Face UniSpeech-SAT checkpoints, key for key, with checks.

A checkpoint is a folder (or a hub repo id) with `config.json` and `model.safetensors` (possibly
sharded) or `pytorch_model.bin` (read with `weights_only=True`). Both weight-norm key forms are
accepted (`weight_g`/`weight_v` of the 2021 hub files and `parametrizations.weight.original0/1`),
the backbone may sit under `unispeech_sat.` or not, keys of the family's other heads are dropped
and reported, a missing head is freshly initialised and reported, and anything else that does not
fit (missing or unexpected keys, shape mismatches) is named in one error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from models.config import CONFIG_NAME, UniSpeechSatConfig

log = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
BASE_PREFIX = "unispeech_sat."
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Keys (relative to the head model) that belong to one of the family's heads, not the backbone.
_HEAD_KEY_PREFIXES = ("lm_head.", "projector.", "classifier.", "tdnn.", "objective.", "quantizer.", "project_q.",
                      "project_hid.", "speaker_proj.", "layer_norm_for_extract.")
_HEAD_KEYS = ("layer_weights", "label_embeddings_concat", "feature_extractor.weight", "feature_extractor.bias")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what is wrong and where."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What `from_pretrained` did beyond a one-to-one load."""

    source: str
    initialised: tuple[str, ...] = ()  # head parameters the checkpoint did not have (fresh random init)
    dropped: tuple[str, ...] = ()  # checkpoint keys of other heads, not used by this class


def is_head_key(key: str) -> bool:
    return key in _HEAD_KEYS or key.startswith(_HEAD_KEY_PREFIXES)


# ------------------------------------------------------------------------------------ resolving
def resolve_pretrained(path_or_repo_id: str | Path, weights: bool = True) -> Path:
    """A local folder for `path_or_repo_id`: the folder itself, or the hub snapshot in the cache.

    Repo ids ("owner/name") go through huggingface_hub (cache first, then the network).
    """
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.exists():
        raise CheckpointError(f"{text} is a file; pass the checkpoint folder that holds {CONFIG_NAME}")
    if not _REPO_ID.match(text):
        raise CheckpointError(f"checkpoint folder {text} does not exist (and is not a hub repo id 'owner/name')")
    return _download(text, weights)


def _has_weights(folder: Path) -> bool:
    return any((folder / name).exists() for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME))


def _download(repo_id: str, weights: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and huggingface_hub is not installed to fetch it from the hub. "
            "Install it (pip install 'huggingface_hub', or this project's [hub] extra), or download the folder "
            "on a machine with it and pass the folder's path."
        ) from None
    small = ["*.json", "*.txt"]
    tries = [small + ["model.safetensors", "model-*.safetensors"], small + [PYTORCH_NAME]] if weights else [small]
    last_error: Exception | None = None
    for local_only in (True, False):
        for patterns in tries:
            try:
                folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only))
            except Exception as exc:  # offline, not cached, no such repo, HTTP errors: all reported below
                last_error = exc
                break
            if (folder / CONFIG_NAME).exists() and (not weights or _has_weights(folder)):
                return folder
    raise CheckpointError(
        f"could not get {repo_id!r} from the Hugging Face hub cache or network ({type(last_error).__name__}: "
        f"{last_error}). If this machine is offline, run `hf download {repo_id} --local-dir DIR` "
        "where there is a network, copy DIR here and pass its path."
    )


# ------------------------------------------------------------------------------------- reading
def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a checkpoint folder (safetensors preferred, then pytorch_model.bin)."""
    if (folder / SAFETENSORS_NAME).exists():
        from safetensors.torch import load_file

        return load_file(str(folder / SAFETENSORS_NAME))
    if (folder / SAFETENSORS_INDEX_NAME).exists():
        from safetensors.torch import load_file

        index = json.loads((folder / SAFETENSORS_INDEX_NAME).read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    if (folder / PYTORCH_NAME).exists():
        try:
            state = torch.load(folder / PYTORCH_NAME, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{folder / PYTORCH_NAME} could not be read as plain tensors: {exc}") from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{folder / PYTORCH_NAME} does not hold a state dict")
        return state
    raise CheckpointError(f"{folder} has no {SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME} or {PYTORCH_NAME}")


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map legacy names to the module's: weight_g/weight_v -> parametrizations.weight.original0/1,
    LayerNorm gamma/beta -> weight/bias, a plain (already normed) pos-conv weight -> g and v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        elif key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = value
    for key in [k for k in out if k.endswith("pos_conv_embed.conv.weight")]:
        base = key[: -len("weight")] + "parametrizations.weight."
        if base + "original0" not in out and base + "original1" not in out:
            w = out.pop(key)
            out[base + "original0"] = torch.norm_except_dim(w, 2, 2)
            out[base + "original1"] = w
    return out


# ------------------------------------------------------------------------------------- matching
def match_state_dict(
    model: "nn.Module", state: dict[str, torch.Tensor], architecture: str | None, source: str
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Check `state` against `model` and return (tensors to load, report); raise CheckpointError
    naming every missing, unexpected or mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    is_base = not any(k.startswith(BASE_PREFIX) for k in expected)
    prefix = "" if is_base else BASE_PREFIX

    backbone: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(BASE_PREFIX):
            backbone[key[len(BASE_PREFIX):]] = value
        elif is_head_key(key):
            head[key] = value
        else:
            backbone[key] = value

    problems: list[str] = []
    load: dict[str, torch.Tensor] = {}
    expected_backbone = {k[len(prefix):]: s for k, s in expected.items() if k.startswith(prefix) and
                         (not is_base or not is_head_key(k))}
    missing = sorted(set(expected_backbone) - set(backbone))
    unexpected = sorted(set(backbone) - set(expected_backbone))
    if missing:
        problems.append(f"missing backbone keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    for key in sorted(set(backbone) & set(expected_backbone)):
        if tuple(backbone[key].shape) != expected_backbone[key]:
            problems.append(f"shape mismatch for {prefix}{key}: checkpoint {tuple(backbone[key].shape)}, "
                            f"model {expected_backbone[key]}")
        load[prefix + key] = backbone[key]

    target_head = {k: s for k, s in expected.items() if not k.startswith(BASE_PREFIX)} if not is_base else {}
    own_class = type(model).__name__
    same_head = bool(target_head) and (
        architecture == own_class or (architecture is None and bool(set(head) & set(target_head)))
    )
    initialised: list[str] = []
    dropped: list[str] = []
    if not same_head or not (set(head) & set(target_head)):
        dropped = sorted(head)
        initialised = sorted(target_head)
    else:
        dropped = sorted(set(head) - set(target_head))
        missing_head = sorted(set(target_head) - set(head))
        if missing_head:
            problems.append(f"missing head keys of this {own_class} checkpoint: {missing_head}")
        for key in sorted(set(head) & set(target_head)):
            if tuple(head[key].shape) != target_head[key]:
                problems.append(f"shape mismatch for {key}: checkpoint {tuple(head[key].shape)}, "
                                f"model {target_head[key]}")
            load[key] = head[key]
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit {own_class}: " + "; ".join(problems))
    return load, LoadReport(source, tuple(initialised), tuple(dropped))


Model = TypeVar("Model", bound="PretrainedMixin")

_INIT_FUNCTIONS = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                   "xavier_normal_", "trunc_normal_", "zeros_", "ones_", "constant_")
_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _skipped_init() -> Iterator[None]:
    """Make `torch.nn.init`'s functions no-ops while a model whose every weight will be loaded is
    built (as transformers' `no_init_weights`); the parameters keep uninitialised memory until
    then. Process-wide while it lasts, hence the lock."""
    with _INIT_LOCK:
        saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in _INIT_FUNCTIONS:
                setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, fn in saved.items():
                setattr(nn.init, name, fn)


class PretrainedMixin:
    """`from_pretrained` / `save_pretrained` for the UniSpeech-SAT module classes."""

    load_report: LoadReport | None = None

    @classmethod
    def from_pretrained(
        cls: type[Model],
        path_or_repo_id: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Model:
        """Build from config.json, load and check every weight, return the model in eval mode.

        Weights are loaded in float32 (a float16 file is upcast) unless `dtype` is given.
        """
        folder = resolve_pretrained(path_or_repo_id)
        config = UniSpeechSatConfig.from_pretrained(folder)
        state = normalize_keys(read_state_dict(folder))
        architecture = config.architectures[0] if config.architectures else None
        # Build without initialising: random init of a base model costs ~1.8 s of CPU that the
        # checkpoint then overwrites. Only when some weight is missing (a head the checkpoint
        # lacks) is the model built the ordinary way, so those weights get transformers' init.
        # (The meta device would also skip it, but weight norm on meta imports torch._refs: +3 s.)
        with _skipped_init():
            model = cls(config)  # type: ignore[call-arg]
        load, report = match_state_dict(model, state, architecture, str(path_or_repo_id))
        if set(model.state_dict()) - set(load):  # type: ignore[attr-defined]
            model = cls(config)  # type: ignore[call-arg]
            model.load_state_dict(load, strict=False)  # type: ignore[attr-defined]
        else:
            model.load_state_dict(load, strict=True)  # type: ignore[attr-defined]
        if report.initialised:
            log.warning("%s: %s has no weights for %s; they are freshly initialised (train them before use)",
                        report.source, cls.__name__, ", ".join(report.initialised))
        if report.dropped:
            log.warning("%s: keys of other heads not used by %s: %s", report.source, cls.__name__,
                        ", ".join(report.dropped))
        model.load_report = report
        model.to(device=device, dtype=dtype)  # type: ignore[attr-defined]
        model.eval()  # type: ignore[attr-defined]
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json (architectures = this class) and model.safetensors that transformers reads."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config: UniSpeechSatConfig = self.config  # type: ignore[attr-defined]
        config.replace(architectures=(type(self).__name__,)).save_pretrained(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        save_file(state, str(directory / SAFETENSORS_NAME), metadata={"format": "pt"})
        return directory


def load_json(folder: Path, name: str) -> dict[str, Any]:
    """Read a JSON object file of a checkpoint folder, with an error naming the file."""
    path = folder / name
    if not path.exists():
        raise CheckpointError(f"{folder} has no {name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data
