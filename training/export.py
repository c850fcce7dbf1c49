"""Export a training checkpoint as three Hugging Face folders (ctc/, sd/, sv/) in float16.

    python -m training.export --checkpoint /work/runs/NAME/checkpoint.pt --out models/embedded
                              [--lm /work/runs/lm/lm.arpa.gz] [--log /work/runs/NAME/train.log]

Each folder has config.json (with `architectures`), model.safetensors (float16; the loaders upcast),
and the same preprocessor_config.json; ctc/ adds vocab.json (and the tokenizer files transformers'
Wav2Vec2Processor reads) and, with --lm, lm.arpa.gz. The encoder tensors are identical in the
three files, so an engine that loads them all can run the encoder once.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from models import FeatureExtractor
from training.model import ArchConfig, MultiTaskModel
from training.text import CTC_TOKENS

HEADS = ("ctc", "sd", "sv")
MAX_TOTAL_BYTES = 40 * 1024 * 1024


def load_checkpoint(path: Path) -> MultiTaskModel:
    """Rebuild the multi-task model of a training checkpoint (weights loaded, eval mode)."""
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    arch = ArchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
    model = MultiTaskModel(arch, state["speakers"])
    model.load_state_dict(state["model"])
    return model.eval()


def preprocessor() -> FeatureExtractor:
    """No waveform normalisation (the layer-norm front end without conv bias is gain-invariant, and
    per-window normalisation would make streaming depend on chunking); attention mask used."""
    return FeatureExtractor(sampling_rate=16000, do_normalize=False, return_attention_mask=True)


def _save_fp16(head: torch.nn.Module, folder: Path) -> None:
    head.save_pretrained(folder)
    state = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
             for k, v in head.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["torch_dtype"] = "float16"
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_vocab(folder: Path) -> None:
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(CTC_TOKENS)}) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Wav2Vec2CTCTokenizer", "do_lower_case": False, "word_delimiter_token": "|",
        "replace_word_delimiter_char": " ", "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>"}, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2) + "\n",
        encoding="utf-8")


def export(model: MultiTaskModel, out: Path, lm: Path | None = None) -> dict[str, int]:
    """Write the three head folders under `out`; return their sizes in bytes.

    Raises ValueError (after writing) when the total exceeds 40 MB.
    """
    fe = preprocessor()
    sizes = {}
    for name in HEADS:
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        head = getattr(model, name)
        _save_fp16(head, folder)
        fe.save_pretrained(folder)
        if name == "ctc":
            _write_vocab(folder)
            if lm is not None:
                shutil.copyfile(lm, folder / "lm.arpa.gz")
        sizes[name] = sum(p.stat().st_size for p in folder.iterdir())
    total = sum(sizes.values())
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"exported model is {total / 2**20:.1f} MiB, over the 40 MiB budget")
    return sizes


def training_record(state: dict) -> dict:
    """What `training_history.json` keeps of a checkpoint: the recipe, the architecture and the
    progress of stage 1, and stage 2's settings and progress when the head was fine-tuned."""
    record = {"step": state["step"], "minutes": round(state["elapsed_s"] / 60, 1), "arch": state["arch"],
              "train": state["train"], "history": state["history"]}
    if "sv_finetune" in state:
        record["sv_finetune"] = state["sv_finetune"]
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("models/embedded"))
    parser.add_argument("--lm", type=Path, help="ARPA LM built from the training text (ctc/lm.arpa.gz)")
    parser.add_argument("--log", type=Path, help="training log to copy beside the weights")
    args = parser.parse_args(argv)
    model = load_checkpoint(args.checkpoint)
    sizes = export(model, args.out, args.lm)
    if args.log is not None:
        shutil.copyfile(args.log, args.out / "training_log.txt")
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    (args.out / "training_history.json").write_text(json.dumps(training_record(state), indent=1) + "\n",
                                                    encoding="utf-8")
    print(f"[export] {args.out}: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items())
          + f", total {sum(sizes.values()) / 2**20:.1f} MiB (step {state['step']})")


if __name__ == "__main__":
    main()
