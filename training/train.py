"""Train the embedded multi-task UniSpeech-SAT model on the synthetic corpus (CPU, resumable).

    python -m training.train --out /work/runs/NAME [--corpus /work/runs/corpus] [--minutes 112]
                             [--resume] [--smoke]

Each step runs the shared encoder on a batch of utterances (CTC loss + AM-softmax x-vector loss);
every `activity_every` steps also on a batch of conversation windows (permutation-invariant BCE
over speaker slots). The defaults are the settings recorded for the shipped model
(`models/embedded/training_history.json`, run 7; a test checks them; `--bf16` is the machine's
choice), which was itself warm-started (docs/training.md); the x-vector head is trained in stage 2
(`training.finetune_sv`).
`--init` starts from another run's weights with a fresh optimiser and schedule. The
learning rate follows linear warm-up then cosine decay over the run's *training time* budget
(`--minutes`), so a run ends on schedule however busy the shared CPU is. A checkpoint
(`checkpoint.pt`: weights, optimiser, sampler state, elapsed time) is written every few minutes
and at the end; `--resume` continues from it. Progress goes to stdout (and `train.log` when run
with nohup as in docs/training.md).
"""

from __future__ import annotations

import os

# Busy-waiting OpenMP threads collapse throughput when the 2 cores are shared with other jobs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

from models.ctc_vocab import CTCVocab
from training.augment_voice import VoiceVariation
from training.batches import BatchSampler, pit_bce
from training.corpus import Corpus
from training.grow import exported_depth, grow_state
from training.model import ArchConfig, MultiTaskModel, count_parameters, unit_norm_classes
from training.rooms import Acoustics
from training.scoring import char_error_rate
from training.text import CTC_TOKENS

DEFAULT_CORPUS = Path("/work/runs/corpus")


def _loss_summary(avg: dict[str, float]) -> str:
    """The progress line's losses: those this interval trained (a switched-off head is left out,
    not printed as nan)."""
    return " ".join(f"{name} {avg[name]:.3f}" for name in ("ctc", "sd", "sv") if name in avg)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimisation settings of a run (the model size is `ArchConfig`)."""

    minutes: float = 70.0
    peak_lr: float = 2e-4  # the shipped run r24 was a warm start (docs/training.md); from scratch, 4e-4
    final_lr_fraction: float = 0.03
    warmup_steps: int = 150
    weight_decay: float = 0.01
    batch_utterances: int = 6
    max_utterance_s: float = 5.0
    activity_batch: int = 2
    activity_every: int = 4  # conversation-window batch every this many steps
    activity_window_s: float = 5.0
    mix_prob: float = 0.3
    # Loudness of the mixed-in piece below the target, drawn uniformly (dB). 0 dB is an equal-level
    # overlap, as in the conversations; the target stays the first utterance's text.
    mix_snr_min_db: float = 0.0
    mix_snr_max_db: float = 12.0
    # Share of CTC batches made of turn pairs (another speaker's short turn before or after each
    # utterance, both texts the target): the captions lose words where turns change (issue 22).
    pair_prob: float = 0.25
    speed_prob: float = 0.0  # share of utterances sped up / slowed down (CTC only; new voices)
    speed_range: float = 0.1  # speed factors drawn from 1 +- this
    aug_strength: float = 0.4  # test speech is clean; strength 1 (SNR down to 5 dB) slowed CTC badly
    # Training speech closer to people (issue 22; docs/training.md, "Training speech closer to
    # people"). As in the shipped run r24; each is a probability per utterance (rooms: also per
    # conversation window).
    extra_prob: float = 0.25  # share of utterances from festival speech (CORPUS/extra, training.corpus_extra)
    voice_prob: float = 0.3  # pitch, tempo and vocal-tract-length variation (training.augment_voice)
    voice_pitch_cents: float = 300.0
    voice_tempo_range: float = 0.12
    voice_warp_range: float = 0.1
    reverb_prob: float = 0.25  # simulated room impulse responses (training.rooms)
    noise_prob: float = 0.2  # coloured noise at 5-30 dB SNR
    babble_prob: float = 0.1  # 3-6 other training utterances at 5-20 dB SNR
    eq_prob: float = 0.25  # microphone / channel colouring
    band_prob: float = 0.1  # band limits
    codec_prob: float = 0.05  # GSM / mu-law / a-law at 8 kHz through sox
    level_prob: float = 0.5  # RMS -40 to -15 dBFS
    rir_bank: int = 64  # simulated rooms computed once per run
    ctc_weight: float = 1.0
    activity_weight: float = 1.0
    xvector_weight: float = 0.1
    am_margin: float = 0.2  # AM-softmax margin (transformers' default 0.4 is slow to start from scratch)
    grad_clip: float = 5.0
    bf16: bool = False  # bfloat16 autocast: ~1.5x faster steps on CPUs with AMX/AVX512-BF16
    checkpoint_minutes: float = 5.0
    val_every: int = 50
    seed: int = 1

    @classmethod
    def smoke(cls) -> "TrainConfig":
        return cls(minutes=0.5, warmup_steps=2, batch_utterances=2, activity_batch=1, activity_window_s=2.0,
                   max_utterance_s=8.0, checkpoint_minutes=100.0, val_every=2, activity_every=1,
                   pair_prob=0.0, extra_prob=0.0, voice_prob=0.0, reverb_prob=0.0, noise_prob=0.0, babble_prob=0.0,
                   eq_prob=0.0, band_prob=0.0, codec_prob=0.0, level_prob=0.0, rir_bank=2)  # seconds: no sox, no rooms

    def acoustics(self) -> Acoustics:
        """The room and microphone simulation these settings ask for."""
        return Acoustics(reverb_prob=self.reverb_prob, noise_prob=self.noise_prob, babble_prob=self.babble_prob,
                         eq_prob=self.eq_prob, band_prob=self.band_prob, codec_prob=self.codec_prob,
                         level_prob=self.level_prob, rir_bank=self.rir_bank)

    def voice_variation(self) -> VoiceVariation:
        """The voice variation these settings ask for."""
        return VoiceVariation(self.voice_pitch_cents, self.voice_tempo_range, self.voice_warp_range)

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The settings a checkpoint recorded. Settings of experiments since removed (no gain,
        docs/training.md) are dropped when they were off; a run that used one cannot be resumed."""
        settings = {k: v for k, v in saved.items() if k not in REMOVED_SETTINGS}
        for name, off in REMOVED_SETTINGS.items():
            if off is not None and saved.get(name, off) != off:
                raise ValueError(f"the checkpoint trained with {name}={saved[name]!r}, a setting since removed "
                                 "(it measured no gain: docs/training.md); resume it with an older checkout")
        return cls(**settings)


# settings of experiments removed for no gain (docs/training.md has the figures) -> the value that
# meant "off" (None: only read when another one was on)
REMOVED_SETTINGS: dict[str, float | None] = {"flite_prob": 0.0, "crops_every": 0, "crop_speakers": None,
                                             "crop_clips": None, "crop_s": None, "crops_weight": None}


def learning_rate(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """Warm-up over `warmup_steps`, then cosine decay over the run's time budget."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    progress = min(1.0, elapsed_s / (cfg.minutes * 60))
    cosine = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.peak_lr * warm * cosine


class Trainer:
    """Owns the model, optimiser, sampler and run folder."""

    def __init__(self, out: Path, corpus: Corpus, arch: ArchConfig, cfg: TrainConfig) -> None:
        self.out, self.corpus, self.arch, self.cfg = out, corpus, arch, cfg
        self.sampler = BatchSampler(corpus, cfg.seed, int(cfg.max_utterance_s * 16000), arch.speaker_slots,
                                    extra_prob=cfg.extra_prob, voice=cfg.voice_variation(),
                                    voice_prob=cfg.voice_prob, acoustics=cfg.acoustics())
        torch.manual_seed(cfg.seed)
        self.model = MultiTaskModel(arch, self.sampler.speakers)
        self.model.sv.objective.margin = cfg.am_margin
        unit_norm_classes(self.model)
        params = [p for p in {id(p): p for p in self.model.parameters()}.values() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr, betas=(0.9, 0.98))
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[dict] = []
        self.val_idx = self._val_indices()

    def init_from(self, checkpoint: Path) -> None:
        """Start from another run's model weights (same architecture and corpus)."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["speakers"] != self.sampler.speakers:
            raise ValueError(f"{checkpoint} was trained on a different corpus (speaker lists differ)")
        self.model.load_state_dict(state["model"])
        unit_norm_classes(self.model)

    def init_from_export(self, folder: Path, grow_at: int | None = None) -> None:
        """Start from an exported model (`folder/{ctc,sd,sv}` as written by `training.export`): the
        shared encoder and the three heads; the AM-softmax class weights, never exported, start fresh.
        With `grow_at`, an identity layer is inserted before that encoder layer (`training.grow`)."""
        from safetensors.torch import load_file

        for name in ("ctc", "sd", "sv"):
            path = folder / name / "model.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"no exported {name} head at {path}")
            state = {k: v.float() for k, v in load_file(str(path)).items()}
            if grow_at is not None:
                state = grow_state(state, grow_at)
            head = getattr(self.model, name)
            try:
                missing, unexpected = head.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise ValueError(f"{path} does not fit this architecture: {exc}") from None
            allowed = {"objective.weight"} if name == "sv" else set()
            if unexpected or set(missing) - allowed:
                raise ValueError(f"{path} does not fit this architecture: missing {sorted(set(missing) - allowed)}, "
                                 f"unexpected {sorted(unexpected)}")
        unit_norm_classes(self.model)

    def init_from_pretrained(self, folder: Path) -> None:
        """Start from a pre-trained encoder (`training.pretrain`'s OUT/pretrained, a
        UniSpeechSatForPreTraining folder); the three heads keep their fresh initialisation."""
        from models import CheckpointError, UniSpeechSatForPreTraining

        try:
            pretrained = UniSpeechSatForPreTraining.from_pretrained(folder)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
        try:
            self.model.encoder.load_state_dict(pretrained.unispeech_sat.state_dict(), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{folder} does not fit this architecture: {exc}") from None

    def _val_indices(self) -> list[int]:
        rows = self.corpus.rows["val"]
        rng = np.random.default_rng(0)
        idx = [i for i, r in enumerate(rows) if r["length"] <= 8 * 16000]
        return sorted(rng.permutation(idx)[:16].tolist()) if idx else []

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "elapsed_s": self.elapsed_s, "arch": asdict(self.arch), "train": asdict(self.cfg),
                 "speakers": self.sampler.speakers, "history": self.history,
                 "rng": pickle.dumps(self.sampler.rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "checkpoint.pt")

    def load(self) -> None:
        state = torch.load(self.out / "checkpoint.pt", map_location="cpu", weights_only=False)
        if state["speakers"] != self.sampler.speakers:
            raise ValueError("checkpoint was trained on a different corpus (speaker lists differ)")
        self.model.load_state_dict(state["model"])
        opt = state["opt"]
        if "ap_scale" in state:  # saved with the removed crop batches: their scale was the last no-decay parameter
            dropped = opt["param_groups"][1]["params"].pop()
            opt["state"].pop(dropped, None)
        self.opt.load_state_dict(opt)
        self.step, self.elapsed_s, self.history = state["step"], state["elapsed_s"], state["history"]
        self.sampler.rng.bit_generator.state = pickle.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, losses = self._losses()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], cfg.grad_clip)
        lr = learning_rate(cfg, self.step, self.elapsed_s)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        return {**losses, "lr": lr}

    def _losses(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's total loss and its terms (NaN for a term not computed on this step)."""
        cfg = self.cfg
        utt = self.sampler.utterances(cfg.batch_utterances, cfg.mix_prob, cfg.aug_strength,
                                       cfg.speed_prob, cfg.speed_range,
                                       mix_snr_db=(cfg.mix_snr_min_db, cfg.mix_snr_max_db), pair_prob=cfg.pair_prob)
        base = self.model.encode(utt.input_values, utt.attention_mask)
        ctc_out = self.model.ctc.forward_head(base, utt.attention_mask, utt.labels)
        sv_out = self.model.sv.forward_head(base, utt.attention_mask)
        same_voice = ~utt.speed_changed  # a sped-up voice is not its speaker's any more
        loss = cfg.ctc_weight * ctc_out.loss
        sv_loss = torch.tensor(float("nan"))
        if bool(same_voice.any()):
            sv_loss = self.model.sv.objective(sv_out.logits[same_voice], utt.speakers[same_voice])
            loss = loss + cfg.xvector_weight * sv_loss
        sd_loss = torch.tensor(float("nan"))
        if self.step % max(1, cfg.activity_every) == 0:
            act = self.sampler.conversations(cfg.activity_batch, int(cfg.activity_window_s * 16000), cfg.aug_strength)
            base2 = self.model.encode(act.input_values, None)
            sd_logits = self.model.sd.forward_head(base2).logits
            n = min(sd_logits.shape[1], act.labels.shape[1])
            sd_loss = pit_bce(sd_logits[:, :n].float(), act.labels[:, :n])
            loss = loss + cfg.activity_weight * sd_loss
        return loss, {"ctc": ctc_out.loss.item(), "sd": sd_loss.item(), "sv": sv_loss.item()}

    @torch.no_grad()
    def validate(self) -> float:
        """CER of greedy CTC decoding on a fixed batch of validation utterances."""
        if not self.val_idx:
            return float("nan")
        from training.batches import pad_batch

        self.model.eval()
        audios = [self.corpus.audio("val", i) for i in self.val_idx]
        x, m = pad_batch(audios)
        logits = self.model.ctc(x, m).logits
        lengths = self.model.ctc.feat_extract_output_lengths(m.sum(-1))
        refs = [self.corpus.rows["val"][i]["text"] for i in self.val_idx]
        hyps = [greedy_decode(logits[k, :lengths[k]].argmax(-1).tolist()) for k in range(len(refs))]
        return char_error_rate(refs, hyps)

    def run(self, log=print) -> None:
        cfg = self.cfg
        budget_s = cfg.minutes * 60
        last_ckpt = time.monotonic()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        count = 0
        log(f"[train] {count_parameters(self.model) / 1e6:.2f} M parameters, {len(self.sampler.speakers)} "
            f"training speakers, budget {cfg.minutes:.1f} min, starting at step {self.step} "
            f"({self.elapsed_s / 60:.1f} min done)")
        while self.elapsed_s < budget_s:
            self._wait_while_paused(log)
            t0 = time.monotonic()
            losses = self.train_step()
            self.elapsed_s += time.monotonic() - t0
            self.step += 1
            count += 1
            for k, v in losses.items():
                if not math.isnan(v):
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
            if self.step % cfg.val_every == 0 or self.elapsed_s >= budget_s:
                t1 = time.monotonic()
                cer = self.validate()
                self.elapsed_s += time.monotonic() - t1
                avg = {k: v / counts[k] for k, v in sums.items()}
                eta = (budget_s - self.elapsed_s) / 60
                record = {"step": self.step, "minutes": round(self.elapsed_s / 60, 2), **{k: round(v, 5) for k, v in avg.items()},
                          "val_cer": round(cer, 4)}
                self.history.append(record)
                log(f"[train] step {self.step} {self.elapsed_s / 60:5.1f} min | {_loss_summary(avg)} "
                    f"| lr {avg['lr']:.2e} | val CER {cer:.3f} | ETA {max(0.0, eta):.1f} min")
                sums, counts, count = {}, {}, 0
            if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
                self.save()
                last_ckpt = time.monotonic()
        self.save()
        log(f"[train] done: step {self.step}, {self.elapsed_s / 60:.1f} min; checkpoint {self.out / 'checkpoint.pt'}")


    def _wait_while_paused(self, log, sleep=time.sleep) -> None:
        """Hold between steps while OUT/PAUSE exists (benchmarks need the cores); paused time is
        not training time, so the schedule is unchanged. `sleep` is injectable for tests."""
        pause = self.out / "PAUSE"
        if pause.exists():
            log(f"[train] paused at step {self.step} (remove {pause} to continue)")
            while pause.exists():
                sleep(0.5)
            log(f"[train] resumed at step {self.step}")


_VOCAB = CTCVocab(CTC_TOKENS)


def greedy_decode(ids: list[int]) -> str:
    """Greedy CTC text of per-frame ids (`models.ctc_vocab.CTCVocab.decode`, specials dropped),
    words separated by single spaces."""
    return " ".join(_VOCAB.decode(ids, skip_special_tokens=True).split())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (outside the work tree)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--minutes", type=float, help="training-time budget of the whole schedule")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (kept on --resume)")
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (fresh optimiser and schedule)")
    parser.add_argument("--init-export", type=Path, metavar="DIR",
                        help="start from an exported model's weights (DIR/{ctc,sd,sv}; fresh optimiser and schedule)")
    parser.add_argument("--init-encoder", type=Path, metavar="DIR",
                        help="start the shared encoder from a pre-trained folder (training.pretrain's "
                             "OUT/pretrained); fresh heads, optimiser and schedule")
    parser.add_argument("--grow-layer", type=int, metavar="K",
                        help="with --init-export: one encoder layer deeper, an identity layer inserted before "
                             "layer K (0-based), so training starts from the exported model's exact outputs")
    parser.add_argument("--smoke", action="store_true", help="tiny model, seconds of training (tests, CI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field (also on --resume), e.g. --set activity_every=3")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    arch = ArchConfig.tiny() if args.smoke else ArchConfig()
    cfg = TrainConfig.smoke() if args.smoke else TrainConfig()
    if args.resume:
        state = torch.load(args.out / "checkpoint.pt", map_location="cpu", weights_only=False)
        arch = ArchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
        try:
            cfg = TrainConfig.from_saved(state["train"])
        except ValueError as exc:
            parser.error(str(exc))
    if args.grow_layer is not None and (not args.init_export or args.resume):
        parser.error("--grow-layer needs --init-export (and no --resume)")
    if args.init_export and not args.resume:  # the export's depth (one more with --grow-layer), not the default's
        grown = 1 if args.grow_layer is not None else 0
        arch = dataclasses.replace(arch, num_layers=exported_depth(args.init_export) + grown)
    if args.minutes is not None:
        cfg = dataclasses.replace(cfg, minutes=args.minutes)
    if args.bf16:
        cfg = dataclasses.replace(cfg, bf16=True)
    for item in args.set:
        name, _, value = item.partition("=")
        fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
        if name not in fields or not value:
            parser.error(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        current = getattr(cfg, name)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                parser.error(f"--set {item!r}: {name} takes true or false")
            parsed = value.lower() in ("true", "1")
        else:
            parsed = type(current)(value)
        cfg = dataclasses.replace(cfg, **{name: parsed})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps({"arch": asdict(arch), "train": asdict(cfg),
                                                   "corpus": str(args.corpus)}, indent=1))
    trainer = Trainer(args.out, Corpus(args.corpus), arch, cfg)
    if args.resume:
        trainer.load()
    elif args.init:
        trainer.init_from(args.init)
    elif args.init_export:
        trainer.init_from_export(args.init_export, grow_at=args.grow_layer)
    elif args.init_encoder:
        trainer.init_from_pretrained(args.init_encoder)
    trainer.run(log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
