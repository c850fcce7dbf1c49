"""Time the training sampler with and without the issue-22 speech variety (one thread).

    OMP_NUM_THREADS=1 python -m training.augment_cost --corpus /work/runs/corpus [--batches 30]

Prints milliseconds per utterance batch (6 utterances, as training) and per conversation batch
(2 windows of 5 s, every 4th step) for: the shipped recipe (all off), each group alone, and the
recommended retrain settings (`RECOMMENDED`). The RIR bank's one-off build time is printed apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from training.batches import BatchSampler
from training.corpus import Corpus
from training.train import TrainConfig

# The settings recommended for the warm-started retrain (docs/training.md explains each).
RECOMMENDED: dict[str, float] = {"extra_prob": 0.25, "voice_prob": 0.3, "reverb_prob": 0.25, "noise_prob": 0.2,
                                 "babble_prob": 0.1, "eq_prob": 0.25, "band_prob": 0.1, "codec_prob": 0.05,
                                 "level_prob": 0.5}
ROOMS = ("reverb_prob", "noise_prob", "babble_prob", "eq_prob", "band_prob", "codec_prob", "level_prob")


def variants() -> dict[str, TrainConfig]:
    """Named configurations to time."""
    base = TrainConfig()
    rec = dataclasses.replace(base, **RECOMMENDED)
    return {
        "off (shipped recipe)": base,
        "extra speech only": dataclasses.replace(base, extra_prob=RECOMMENDED["extra_prob"]),
        "voice variation only": dataclasses.replace(base, voice_prob=RECOMMENDED["voice_prob"]),
        "rooms only": dataclasses.replace(base, **{k: RECOMMENDED[k] for k in ROOMS}),
        "recommended (all)": rec,
        "everything at 1.0": dataclasses.replace(base, extra_prob=0.0, voice_prob=1.0, **{k: 1.0 for k in ROOMS}),
    }


def time_sampler(corpus: Corpus, cfg: TrainConfig, batches: int) -> tuple[float, float, float]:
    """(RIR bank build s, ms per utterance batch, ms per conversation batch)."""
    sampler = BatchSampler(corpus, cfg.seed, int(cfg.max_utterance_s * 16000), 3, extra_prob=cfg.extra_prob,
                           voice=cfg.voice_variation(), voice_prob=cfg.voice_prob, acoustics=cfg.acoustics())
    t0 = time.perf_counter()
    if sampler.rooms is not None and cfg.reverb_prob > 0:
        sampler.rooms.rirs  # noqa: B018  (built once per run)
    bank_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        sampler.utterances(cfg.batch_utterances, cfg.mix_prob, cfg.aug_strength)
    utt_ms = (time.perf_counter() - t0) / batches * 1000
    t0 = time.perf_counter()
    for _ in range(max(1, batches // 4)):
        sampler.conversations(cfg.activity_batch, int(cfg.activity_window_s * 16000), cfg.aug_strength)
    conv_ms = (time.perf_counter() - t0) / max(1, batches // 4) * 1000
    return bank_s, utt_ms, conv_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args(argv)
    corpus = Corpus(args.corpus)
    print(f"extra speech: {len(corpus.rows.get('extra', []))} utterances")
    for name, cfg in variants().items():
        bank_s, utt_ms, conv_ms = time_sampler(corpus, cfg, args.batches)
        per_step = utt_ms + conv_ms / max(1, cfg.activity_every)
        print(f"{name:24s} utterance batch {utt_ms:6.1f} ms | conversation batch {conv_ms:6.1f} ms | "
              f"per step {per_step:6.1f} ms | RIR bank {bank_s:.1f} s")


if __name__ == "__main__":
    main()
