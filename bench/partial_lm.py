"""What LM-decoded partial captions cost and buy: CPU per audio second against greedy partials in the same run, and how the partial text reads.

The caption path of the engine is replayed on the embedded CTC model's log-probabilities (each
utterance computed whole, not in streaming windows: an approximation of the engine's): every hop
(0.8 s) commits its frames to `engine.captions.CaptionDecoder`, then asks for the partial over the
next 0.4 s (the window's right context), greedy or beam-decoded with the shipped LM at each
`--beams` width (the engine's `partial_lm_beam`). Timed: the partial calls only, by the process's
CPU clock, best of `--repeats`. Scored: the *first-seen transcript*, what a viewer read first: the
frames a partial previewed (0.4 s after each commit) as that partial's words, the other frames (the
rest of each hop, never previewed) as greedy final words, against the reference (WER and CER). The
greedy-final part is the same for every row, so the differences are the partials'. Sources: the demo's turns
(default) or a corpus split (`--split test --corpus DIR [--limit N]`).

    .venv/bin/python -m bench.partial_lm [--beams 8 16 32 64] [--split test] [--limit 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "embedded" / "ctc"
HOP_FRAMES, TAIL_FRAMES = 40, 20  # the engine's default caption schedule (0.8 s hop, 0.4 s right)


def first_seen_transcript(decoder, log_probs: np.ndarray) -> tuple[list[str], float]:
    """The words a viewer saw first over the utterance, and the CPU seconds of the partial calls.

    Frames a partial previewed ([lo, lo + TAIL_FRAMES) after each commit) read as that partial's
    words (by word middle); the other frames were first seen as greedy final words."""
    pieces: list[tuple[float, str]] = []
    previewed: list[tuple[int, int]] = []
    finals = []
    cpu = 0.0
    for hi in range(0, len(log_probs), HOP_FRAMES):
        finals += decoder.commit(hi, log_probs[hi : hi + HOP_FRAMES])
        lo = hi + HOP_FRAMES
        if lo >= len(log_probs):
            break
        t0 = time.process_time()
        p = decoder.partial(lo, log_probs[lo : lo + TAIL_FRAMES])
        cpu += time.process_time() - t0
        previewed.append((lo, lo + TAIL_FRAMES))
        pieces += [((w.start_frame + w.end_frame) / 2, w.text) for w in p.words
                   if lo <= (w.start_frame + w.end_frame) / 2 < lo + TAIL_FRAMES]
    finals += decoder.flush()
    for w in finals:
        mid = (w.start_frame + w.end_frame) / 2
        if not any(a <= mid < b for a, b in previewed):
            pieces.append((mid, w.text))
    return [text for _, text in sorted(pieces)], cpu


def _corpus_log_probs(corpus_dir: Path, split: str, limit: int | None) -> tuple[list[np.ndarray], list[str]]:
    from models import FeatureExtractor, UniSpeechSatForCTC
    from training.corpus import Corpus
    from training.evaluate import ctc_log_probs

    corpus = Corpus(corpus_dir)
    rows = corpus.rows[split][: limit or None]
    model = UniSpeechSatForCTC.from_pretrained(MODEL).eval()
    fe = FeatureExtractor.from_pretrained(MODEL)
    with torch.no_grad():
        lps = ctc_log_probs(model, fe, [corpus.audio(split, i) for i in range(len(rows))])
    return lps, [r["text"] for r in rows]


def _demo_log_probs() -> tuple[list[np.ndarray], list[str]]:
    from app.sources import load_audio
    from models import FeatureExtractor, UniSpeechSatForCTC

    demo = ROOT / "app" / "demo"
    audio = load_audio(demo / "conversation.wav")
    segments = sorted(json.loads((demo / "conversation.json").read_text(encoding="utf-8"))["segments"],
                      key=lambda s: s["start_sample"])
    model = UniSpeechSatForCTC.from_pretrained(MODEL).eval()
    fe = FeatureExtractor.from_pretrained(MODEL)
    lps = []
    with torch.no_grad():
        for seg in segments:
            x, mask = fe([audio[seg["start_sample"]:seg["end_sample"]]], sampling_rate=16000)
            lps.append(torch.log_softmax(model(x, mask).logits.float(), -1)[0].numpy())
    return lps, [s["text"] for s in segments]


def main(argv: list[str] | None = None) -> None:
    from engine.captions import CaptionDecoder
    from engine.model_side import Vocab
    from models import CTCVocab
    from models.lm import CTCBeamDecoder, find_language_model
    from training.scoring import char_error_rate, word_error_rate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beams", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--split", choices=("demo", "val", "test", "everyday"), default="demo")
    p.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    p.add_argument("--limit", type=int, help="at most this many utterances of the split")
    p.add_argument("--lm", type=Path, help="ARPA LM (default: the one beside the embedded CTC model)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lps, refs = _demo_log_probs() if args.split == "demo" else _corpus_log_probs(args.corpus, args.split, args.limit)
    seconds = sum(len(lp) for lp in lps) * 0.02
    ctc_vocab = CTCVocab.from_pretrained(MODEL)
    vocab = Vocab(tuple(ctc_vocab.tokens), ctc_vocab.blank_id, list(ctc_vocab.tokens).index(ctc_vocab.delimiter))
    lm = args.lm or find_language_model(MODEL)
    base = CTCBeamDecoder(list(ctc_vocab.tokens), ctc_vocab.blank_id, ctc_vocab.delimiter, lm=lm)
    print(f"{args.split}: {len(lps)} utterances, {seconds:.1f} s, {sum(len(r.split()) for r in refs)} words; LM {lm} "
          f"(alpha {base.alpha}, beta {base.beta}, blank penalty {base.blank_penalty}); best of {args.repeats} on one thread")
    print("| partials | CPU ms per audio s | vs greedy | first-seen WER | CER |")
    print("| --- | --- | --- | --- | --- |")
    greedy_cpu = None
    for beam in [0, *args.beams]:
        partial_decoder = base.with_beam_width(beam) if beam else None
        best, hyps = float("inf"), []
        for _ in range(args.repeats):
            cpu, hyps = 0.0, []
            for lp in lps:
                words, t = first_seen_transcript(CaptionDecoder(vocab, partial_decoder=partial_decoder), lp)
                cpu += t
                hyps.append(" ".join(words).upper())
            best = min(best, cpu)
        greedy_cpu = best if greedy_cpu is None else greedy_cpu
        name = f"LM beam {beam}" if beam else "greedy"
        print(f"| {name} | {1000 * best / seconds:.1f} | {best / greedy_cpu:.1f}x | "
              f"{100 * word_error_rate(refs, hyps):.1f} % | {100 * char_error_rate(refs, hyps):.1f} % |", flush=True)


if __name__ == "__main__":
    main()
