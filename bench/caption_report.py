"""Final-caption CER/WER per audio source, for one or more models side by side (issue 22's report).

    .venv/bin/python -m bench.caption_report [--models models/embedded /work/runs/r22/export]
        [--corpus /work/runs/corpus] [--sources test everyday conversations asr-dev alsa]

Every source goes through `engine.Engine` at its default settings (Silero speech gate, the LM
re-decoder beside the model's `ctc/` folder, the default beam), fed in 0.1 s blocks and flushed;
the transcript is the final captions after their revisions (`training.evaluate_stream`). Sources,
each labelled synthetic or real:

- `test`: the corpus' held-out test utterances (synthetic: espeak-ng / flite voices and sentences
  never seen in training), 0.5 s of silence either side;
- `everyday`: the everyday sentences written for the test voices (synthetic);
- `conversations`: held-out synthetic conversations of the everyday utterances, 8 utterances each
  in a seeded order, turns overlapping with probability 0.3 (`training.mixing.place_turns`); the
  reference is the turns' text in start order, the hypothesis the final captions in time order;
- `sequential`: the same conversations (same utterances, same order) with no overlapping turn, so
  the difference to `conversations` is what overlapping speech costs (synthetic; a diagnostic,
  not in the default set);
- `asr-dev`: `../shared/real/asr-dev/*.wav` with `NAME.txt` (real read speech; a pipeline check
  of a few words, not a tuning set);
- `alsa`: Debian alsa-utils' recorded voice, `/usr/share/sounds/alsa/*.wav`, the words in the
  file names ("Front_Left" -> "FRONT LEFT"; `Noise.wav` skipped) (real).

Each model is scored on the same audio in the same run, so rows compare directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALSA_DIR = Path("/usr/share/sounds/alsa")
REAL_ASR_DIR = ROOT.parent / "shared" / "real" / "asr-dev"
SOURCES = ("test", "everyday", "conversations", "asr-dev", "alsa")
DIAGNOSTICS = ("sequential",)
KIND = {"test": "synthetic", "everyday": "synthetic", "conversations": "synthetic", "sequential": "synthetic",
        "asr-dev": "real", "alsa": "real"}


def corpus_set(corpus_dir: Path, split: str) -> tuple[list[np.ndarray], list[str]]:
    """A corpus split's utterances, each padded with 0.5 s of silence, and their texts."""
    from training.corpus import Corpus

    corpus = Corpus(corpus_dir)
    pad = np.zeros(8000, np.float32)
    rows = corpus.rows[split]
    return ([np.concatenate([pad, corpus.audio(split, i), pad]) for i in range(len(rows))],
            [r["text"] for r in rows])


def everyday_conversations(corpus_dir: Path, per_conversation: int = 8, seed: int = 22,
                           overlap_prob: float = 0.3) -> tuple[list[np.ndarray], list[str]]:
    """Conversations of the everyday utterances (each used once), turns overlapping with
    probability `overlap_prob`; reference text in turn start order."""
    from training.corpus import Corpus
    from training.mixing import place_turns

    corpus = Corpus(corpus_dir)
    rows = corpus.rows["everyday"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    audios, refs = [], []
    for k in range(0, len(order) - per_conversation + 1, per_conversation):
        turns = [(rows[i]["speaker"], corpus.audio("everyday", int(i)), rows[i]["text"]) for i in order[k:k + per_conversation]]
        mix = place_turns(rng, turns, overlap_prob=overlap_prob)
        audios.append(mix.audio)
        refs.append(" ".join(s.text for s in sorted(mix.segments, key=lambda s: s.start)))
    return audios, refs


def real_set(source: str) -> tuple[list[np.ndarray], list[str]]:
    """The real clips of `source` ("asr-dev" or "alsa") as 16 kHz mono and their words."""
    from app.sources import load_audio

    if source == "asr-dev":
        wavs = sorted(REAL_ASR_DIR.glob("*.wav"))
        texts = [w.with_suffix(".txt").read_text().strip().upper() for w in wavs]
    else:
        wavs = sorted(w for w in ALSA_DIR.glob("*.wav") if w.stem != "Noise")
        texts = [w.stem.replace("_", " ").upper() for w in wavs]
    if not wavs:
        raise SystemExit(f"error: no recordings for source {source!r} "
                         f"({REAL_ASR_DIR if source == 'asr-dev' else ALSA_DIR}); install alsa-utils or skip it")
    pad = np.zeros(8000, np.float32)
    return [np.concatenate([pad, load_audio(w), pad]) for w in wavs], texts


def load_source(source: str, corpus_dir: Path) -> tuple[list[np.ndarray], list[str]]:
    """Audio and reference texts of one named source."""
    if source in ("test", "everyday"):
        return corpus_set(corpus_dir, source)
    if source == "conversations":
        return everyday_conversations(corpus_dir)
    if source == "sequential":
        return everyday_conversations(corpus_dir, overlap_prob=0.0)
    return real_set(source)


def score_model(model_dir: Path, audios: list[np.ndarray], refs: list[str]) -> dict[str, float]:
    """Streaming final-caption CER and WER (%) of `model_dir` on the given audio."""
    from engine import Engine
    from models.lm import find_language_model
    from training.evaluate_stream import _run_stream, final_transcript
    from training.scoring import char_error_rate, word_error_rate

    lm = find_language_model(model_dir / "ctc")
    engine = Engine.from_checkpoints(asr=str(model_dir / "ctc"), lm=None if lm is None else str(lm))
    t0 = time.monotonic()
    hyps = [final_transcript(_run_stream(engine.new_stream(), a)) for a in audios]
    return {"cer": 100 * char_error_rate(refs, hyps), "wer": 100 * word_error_rate(refs, hyps),
            "seconds": time.monotonic() - t0, "examples": list(zip(refs[:3], hyps[:3]))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, nargs="+", default=[ROOT / "models" / "embedded"])
    p.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES + DIAGNOSTICS)
    p.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = p.parse_args(argv)
    results: dict[str, dict[str, dict]] = {}
    print("| source | audio | items | words | " + " | ".join(f"{m} CER / WER" for m in args.models) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in args.models) + " |", flush=True)
    for source in args.sources:
        audios, refs = load_source(source, args.corpus)
        row = results.setdefault(source, {})
        for model in args.models:
            row[str(model)] = score_model(model, audios, refs)
            print(f"[{source}] {model}: {row[str(model)]['seconds']:.0f} s; e.g. {row[str(model)]['examples'][0]}",
                  file=sys.stderr, flush=True)
        words = sum(len(r.split()) for r in refs)
        cells = " | ".join(f"{row[str(m)]['cer']:.1f} % / {row[str(m)]['wer']:.1f} %" for m in args.models)
        print(f"| {source} | {KIND[source]} | {len(refs)} | {words} | {cells} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
