"""Pre-train the embedded UniSpeech-SAT architecture with the authors' objective (CPU, resumable).

    python -m training.pretrain --out /work/runs/pt --targets /work/runs/targets [--corpus /work/runs/corpus]
                                [--minutes 60] [--resume] [--init-export models/embedded] [--set FIELD=VALUE]

Each step draws a batch of similar-length training utterances, crops them to the shortest (at
most `max_sample_s`, random start; the authors' collater), mixes utterances into each other with
the authors' rule (`models.pretraining.mix_utterances`; the targets stay the primary's) and
takes one optimiser step on `models.pretraining.pretraining_losses`: masked prediction of the
k-means targets of `training.pretrain_targets`, the utterance-wise contrastive loss with the
quantizer, the diversity term and the features penalty. The model is `UniSpeechSatForPreTraining`
of the embedded architecture (`training.model.base_config`), so its checkpoint keys are the hub
checkpoints'. The learning rate follows `training.train.learning_rate` (warm-up, then cosine over
the run's training-time budget `--minutes`). Progress every `log_every` steps with every loss
term; `checkpoint.pt` every few minutes and at the end; `--resume` continues it; `OUT/PAUSE`
holds training between steps. At the end `OUT/pretrained/` holds the model as a Hugging Face
folder (config.json + model.safetensors) that `models` and transformers load, and that
`python -m training.train --init-encoder OUT/pretrained` fine-tunes from.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training/train.py

import argparse
import dataclasses
import json
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models import UniSpeechSatForPreTraining
from engine.timebase import SAMPLE_RATE
from models.pretraining import DICTIONARY_SPECIALS, MixingConfig, ObjectiveConfig, init_for_pretraining, \
    mix_utterances, pretraining_losses
from training.corpus import Corpus
from training.model import ArchConfig, base_config
from training.pretrain_targets import LABEL_RATE_HZ, load_targets
from training.train import learning_rate

_LOGGED = ("total", "masked_prediction", "contrastive", "diversity", "features_penalty", "masked_accuracy",
           "contrastive_accuracy", "code_perplexity")
_SHORT = {"total": "loss", "masked_prediction": "pred", "contrastive": "contr", "diversity": "div",
          "features_penalty": "fpen", "masked_accuracy": "acc", "contrastive_accuracy": "c_acc",
          "code_perplexity": "codes"}


@dataclass(frozen=True, slots=True)
class PretrainConfig:
    """Run settings; the objective's own settings are `ObjectiveConfig`/`MixingConfig` fields."""

    minutes: float = 60.0
    peak_lr: float = 5e-4  # HuBERT Base's peak learning rate
    final_lr_fraction: float = 0.03
    warmup_steps: int = 200
    weight_decay: float = 0.01
    batch_utterances: int = 8
    max_sample_s: float = 5.0  # crop length cap (the authors' max_sample_size; 15.6 s for Large)
    min_sample_s: float = 1.0  # shorter utterances are left out (authors: 2 s; our corpus is shorter)
    grad_clip: float = 1.0  # the authors' clip_norm
    checkpoint_minutes: float = 5.0
    log_every: int = 20
    seed: int = 1
    objective: ObjectiveConfig = ObjectiveConfig()
    mixing: MixingConfig = MixingConfig()

    @classmethod
    def smoke(cls) -> "PretrainConfig":
        return cls(minutes=0.3, warmup_steps=2, batch_utterances=3, log_every=2, checkpoint_minutes=100.0,
                   objective=ObjectiveConfig(cross_sample_negatives=10))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        data = dict(data)
        objective = ObjectiveConfig(**data.pop("objective"))
        mixing = MixingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("mixing").items()})
        return cls(**data, objective=objective, mixing=mixing)

    def with_setting(self, name: str, value: str) -> "PretrainConfig":
        """A copy with FIELD (or objective.FIELD / mixing.FIELD) set from its text."""
        target, _, field = name.rpartition(".")
        holder = {"": self, "objective": self.objective, "mixing": self.mixing}.get(target)
        names = {f.name for f in dataclasses.fields(holder)} if holder is not None else set()
        if field not in names or field in ("objective", "mixing"):
            raise ValueError(f"unknown setting {name!r}")
        current = getattr(holder, field)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{name} takes true or false, got {value!r}")
            parsed = value.lower() in ("true", "1")
        elif isinstance(current, tuple):
            parsed = tuple(float(v) for v in value.split(","))
        elif current is None:
            parsed = int(value)
        else:
            parsed = type(current)(value)
        changed = dataclasses.replace(holder, **{field: parsed})
        return changed if not target else dataclasses.replace(self, **{target: changed})


class PretrainSampler:
    """Equal-length batches of training utterances with their 100 Hz targets, from a seed."""

    def __init__(self, corpus: Corpus, targets: list[np.ndarray], cfg: PretrainConfig, seed: int) -> None:
        rows = corpus.rows["train"]
        self.corpus, self.targets, self.cfg = corpus, targets, cfg
        self.rng = np.random.default_rng(seed)
        keep = [i for i, r in enumerate(rows) if r["length"] >= cfg.min_sample_s * SAMPLE_RATE]
        if len(keep) < cfg.batch_utterances:
            raise ValueError(f"only {len(keep)} training utterances are >= {cfg.min_sample_s} s; "
                             f"a batch needs {cfg.batch_utterances}")
        self.by_length = sorted(keep, key=lambda i: rows[i]["length"])
        self.max_samples = int(cfg.max_sample_s * SAMPLE_RATE)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_values (B,N), targets (B,L)): B neighbours in length, cropped to the shortest."""
        b = self.cfg.batch_utterances
        start = int(self.rng.integers(0, len(self.by_length) - b + 1))
        chosen = self.by_length[start:start + b]
        audios = [self.corpus.audio("train", i) for i in chosen]
        size = min(min(len(a) for a in audios), self.max_samples)
        to_label = LABEL_RATE_HZ / SAMPLE_RATE
        n_labels = int(round(size * to_label))
        xs, ys = [], []
        for i, audio in zip(chosen, audios):
            offset = int(self.rng.integers(0, len(audio) - size + 1))
            first = int(round(offset * to_label))
            xs.append(audio[offset:offset + size])
            ys.append(self.targets[i][first:first + n_labels])
        n_labels = min(len(y) for y in ys)  # the collater's frm_size = min(frm_size, remaining labels)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack([y[:n_labels] for y in ys]))


def pretraining_model(arch: ArchConfig, clusters: int) -> UniSpeechSatForPreTraining:
    """A fresh `UniSpeechSatForPreTraining` of the embedded architecture for `clusters` k-means classes."""
    config = base_config(arch).replace(num_clusters=clusters + DICTIONARY_SPECIALS, codevector_dim=256,
                                       proj_codevector_dim=256)
    model = UniSpeechSatForPreTraining(config)
    init_for_pretraining(model)
    return model


class Pretrainer:
    """Owns the model, optimiser, sampler and run folder of one pre-training run."""

    def __init__(self, out: Path, corpus: Corpus, targets_dir: Path, arch: ArchConfig, cfg: PretrainConfig) -> None:
        self.out, self.arch, self.cfg = out, arch, cfg
        targets = load_targets(targets_dir, "train", corpus)  # checks targets.json and the corpus
        meta = json.loads((Path(targets_dir) / "targets.json").read_text())
        self.clusters = int(meta["spec"]["clusters"])
        self.sampler = PretrainSampler(corpus, targets, cfg, cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = pretraining_model(arch, self.clusters)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=cfg.peak_lr, betas=(0.9, 0.98), eps=1e-6)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[dict] = []

    def init_from_export(self, folder: Path) -> None:
        """Start from an exported model's encoder (`folder/ctc/model.safetensors`, e.g. models/embedded)."""
        from safetensors.torch import load_file

        path = Path(folder) / "ctc" / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no exported encoder at {path}")
        state = {k: v.float() for k, v in load_file(str(path)).items() if k.startswith("unispeech_sat.")}
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not fit this architecture: {exc}") from None
        missing = [k for k in missing if k.startswith("unispeech_sat.")]
        if missing or unexpected:
            raise ValueError(f"{path} does not fit this architecture: missing {missing}, unexpected {unexpected}")

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "elapsed_s": self.elapsed_s, "arch": asdict(self.arch), "pretrain": self.cfg.to_dict(),
                 "clusters": self.clusters, "history": self.history,
                 "rng": pickle.dumps(self.sampler.rng.bit_generator.state),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "checkpoint.pt")

    def load(self) -> None:
        state = torch.load(self.out / "checkpoint.pt", map_location="cpu", weights_only=False)
        if state["clusters"] != self.clusters:
            raise ValueError(f"checkpoint was trained on {state['clusters']} clusters, the targets have {self.clusters}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.elapsed_s, self.history = state["step"], state["elapsed_s"], state["history"]
        self.sampler.rng.bit_generator.state = pickle.loads(state["rng"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def export(self) -> Path:
        """Write OUT/pretrained/ (Hugging Face folder, float32) and return it."""
        return self.model.save_pretrained(self.out / "pretrained")

    # -------------------------------------------------------------------------------- training
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        x, y = self.sampler.batch()
        if cfg.mixing.prob > 0:
            x = mix_utterances(x, self.sampler.rng, cfg.mixing)
        losses = pretraining_losses(self.model, x, y, cfg.objective, num_updates=self.step, rng=self.sampler.rng,
                                    generator=self.generator)
        self.opt.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        lr = learning_rate(cfg, self.step, self.elapsed_s)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        return {**losses.as_dict(), "lr": lr}

    def run(self, log=print) -> None:
        cfg = self.cfg
        budget_s = cfg.minutes * 60
        last_ckpt = time.monotonic()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        n_params = sum(p.numel() for p in self.model.parameters())
        log(f"[pretrain] {n_params / 1e6:.2f} M parameters, {self.clusters} clusters, "
            f"{len(self.sampler.by_length)} utterances, budget {cfg.minutes:.1f} min, starting at step "
            f"{self.step} ({self.elapsed_s / 60:.1f} min done)")
        while self.elapsed_s < budget_s:
            self._wait_while_paused(log)
            t0 = time.monotonic()
            values = self.train_step()
            self.elapsed_s += time.monotonic() - t0
            self.step += 1
            for k, v in values.items():
                if not math.isnan(v):
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
            if self.step % cfg.log_every == 0 or self.elapsed_s >= budget_s:
                avg = {k: v / counts[k] for k, v in sums.items()}
                self.history.append({"step": self.step, "minutes": round(self.elapsed_s / 60, 2),
                                     **{k: round(v, 5) for k, v in avg.items()}})
                terms = " ".join(f"{_SHORT[k]} {avg[k]:.3f}" for k in _LOGGED if k in avg)
                log(f"[pretrain] step {self.step} {self.elapsed_s / 60:5.1f} min | {terms} | temp "
                    f"{avg.get('gumbel_temperature', float('nan')):.3f} | lr {avg['lr']:.2e} | ETA "
                    f"{max(0.0, budget_s - self.elapsed_s) / 60:.1f} min")
                sums, counts = {}, {}
            if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
                self.save()
                last_ckpt = time.monotonic()
        self.save()
        folder = self.export()
        log(f"[pretrain] done: step {self.step}, {self.elapsed_s / 60:.1f} min; checkpoint {self.out / 'checkpoint.pt'}, "
            f"model {folder}")

    def _wait_while_paused(self, log) -> None:
        pause = self.out / "PAUSE"
        if pause.exists():
            log(f"[pretrain] paused at step {self.step} (remove {pause} to continue)")
            while pause.exists():
                time.sleep(0.5)
            log(f"[pretrain] resumed at step {self.step}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (outside the work tree)")
    parser.add_argument("--targets", type=Path, required=True, help="folder written by training.pretrain_targets")
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--minutes", type=float, help="training-time budget of the whole schedule")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--init-export", type=Path, metavar="DIR", help="start from DIR/ctc's encoder weights")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds of training (tests, CI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a setting, e.g. --set batch_utterances=6 --set objective.contrastive_weight=0.5 "
                             "--set mixing.prob=0.2")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    arch = ArchConfig.tiny() if args.smoke else ArchConfig()
    cfg = PretrainConfig.smoke() if args.smoke else PretrainConfig()
    try:
        if args.resume:
            state = torch.load(args.out / "checkpoint.pt", map_location="cpu", weights_only=False)
            arch = ArchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
            cfg = PretrainConfig.from_dict(state["pretrain"])
        if args.minutes is not None:
            cfg = dataclasses.replace(cfg, minutes=args.minutes)
        for item in args.set:
            name, _, value = item.partition("=")
            cfg = cfg.with_setting(name, value)
        args.out.mkdir(parents=True, exist_ok=True)
        trainer = Pretrainer(args.out, Corpus(args.corpus), args.targets, arch, cfg)
        if args.resume:
            trainer.load()
        elif args.init_export:
            trainer.init_from_export(args.init_export)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    (args.out / "run.json").write_text(json.dumps({"arch": asdict(arch), "pretrain": cfg.to_dict(),
                                                   "corpus": str(args.corpus), "targets": str(args.targets)}, indent=1))
    trainer.run(log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
