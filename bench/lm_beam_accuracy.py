"""What the LM decoder's beam width (its hypothesis merging, the caption schedule) buys in streaming: test-split CER/WER with the LM.

Every test utterance of the corpus goes through `engine.Engine` at its default settings except
`lm_beam_width`, `lm_log_add` and, with `--ctc-schedules`, the caption schedule (0.5 s of silence either side, 0.1 s chunks, then flushed; the final captions after
their revisions are the transcript, as `training.evaluate --streaming` scores them). The CPU side of
the same choice is `bench.lm_beam`. Needs a built corpus (docs/training.md) and takes about 1.5 min
per row for the embedded model on two cores.

    .venv/bin/python -m bench.lm_beam_accuracy [--model models/embedded] [--corpus /work/runs/corpus]
        [--beams 128 256 512 1024] [--log-add on off] [--ctc-schedules 1.0,0.8,0.4 2.0,0.8,0.4] [--split test]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    from engine import Engine, EngineConfig
    from engine.config import HeadSchedule
    from models.lm import find_language_model
    from training.corpus import Corpus
    from training.evaluate_stream import _run_stream, final_transcript
    from training.scoring import char_error_rate, word_error_rate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "embedded")
    p.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    p.add_argument("--beams", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--split", default="test", choices=("val", "test", "everyday"))
    p.add_argument("--log-add", nargs="+", default=["on"], choices=("on", "off"),
                   help="how the decoder merges hypotheses: on sums them (the default), off keeps the best")
    p.add_argument("--ctc-schedules", nargs="+", default=None, metavar="LEFT,HOP,RIGHT",
                   help="caption schedules in seconds (default: the engine's)")
    p.add_argument("--vad", nargs="+", default=["silero"], choices=("silero", "energy", "off"),
                   help="speech detector gating the captions (the engine's default: silero)")
    args = p.parse_args(argv)
    lm = find_language_model(args.model / "ctc")
    if lm is None:
        raise SystemExit(f"no language model beside {args.model / 'ctc'}")
    corpus = Corpus(args.corpus)
    rows = corpus.rows[args.split]
    pad = np.zeros(8000, np.float32)
    audios = [np.concatenate([pad, corpus.audio(args.split, i), pad]) for i in range(len(rows))]
    refs = [r["text"] for r in rows]
    print(f"{len(refs)} {args.split} utterances, {args.model}")
    schedules = [None] if args.ctc_schedules is None else [
        HeadSchedule.from_seconds(*map(float, s.split(","))) for s in args.ctc_schedules]
    print("| caption schedule | beam | log-add | speech detector | streaming CER with LM | WER | seconds |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for schedule in schedules:
        config = EngineConfig() if schedule is None else EngineConfig(ctc=schedule)
        for beam, log_add, vad in itertools.product(args.beams, args.log_add, args.vad):
            engine = Engine.from_checkpoints(asr=str(args.model / "ctc"), lm=str(lm), vad=vad, config=dataclasses.replace(
                config, lm_beam_width=beam, lm_log_add=log_add == "on"))
            t0 = time.monotonic()
            hyps = [final_transcript(_run_stream(engine.new_stream(), a)) for a in audios]
            print(f"| {_seconds(config.ctc)} | {beam} | {log_add} | {vad} | {100 * char_error_rate(refs, hyps):.2f} % "
                  f"| {100 * word_error_rate(refs, hyps):.2f} % | {time.monotonic() - t0:.0f} |", flush=True)


def _seconds(schedule) -> str:
    """`left / hop / right s` of a caption schedule."""
    from engine.timebase import SAMPLE_RATE

    parts = (schedule.left_context_samples, schedule.hop_samples, schedule.right_context_samples)
    return " / ".join(f"{n / SAMPLE_RATE:.1f}" for n in parts) + " s"


if __name__ == "__main__":
    main()
