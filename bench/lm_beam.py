"""What the LM decoder's beam width (and its hypothesis merging) costs in streaming: CPU time of the re-decoder per second of audio.

The embedded CTC model's log-probabilities for the turns of the bundled demo conversation (three
voices, some overlap) are computed once; then the streaming re-decoder (engine.lm_redecode,
engine defaults: a decode every 10 frames) runs over them in 10-frame blocks for each beam width, timed by the process's
CPU clock, best of `--repeats`. Printed per beam: CPU ms per audio second, the ratio against
beam 32 measured in the same run, frames decoded per frame, and the WER over the demo's 102
words (a small sample: the accuracy figures that matter are `training.evaluate --tune-lm`'s,
docs/lm.md).

    .venv/bin/python -m bench.lm_beam [--beams 32 64 128 256] [--log-add on off] [--repeats 3] [--lm A.arpa.gz B.arpa.gz]

Pause training first (`touch RUN/PAUSE`) so the cores are not shared.
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
DEMO = ROOT / "app" / "demo"
BLOCK_FRAMES = 10


def demo_log_probs() -> tuple[np.ndarray, str, float]:
    """(frames, vocab) log-probs of the demo's turns, each computed on its own span of the mix
    (the engine never sees more than a few seconds at once) and joined by half a second of
    blank frames; the reference text in the same order; the seconds of audio decoded."""
    from app.sources import load_audio
    from models import FeatureExtractor, UniSpeechSatForCTC

    audio = load_audio(DEMO / "conversation.wav")
    model = UniSpeechSatForCTC.from_pretrained(MODEL).eval()
    fe = FeatureExtractor.from_pretrained(MODEL)
    segments = json.loads((DEMO / "conversation.json").read_text(encoding="utf-8"))["segments"]
    segments = sorted(segments, key=lambda s: s["start_sample"])
    parts = []
    with torch.no_grad():
        for seg in segments:
            x, mask = fe([audio[seg["start_sample"]:seg["end_sample"]]], sampling_rate=16000)
            parts.append(torch.log_softmax(model(x, mask).logits.float(), -1)[0].numpy())
            pause = np.full((25, parts[-1].shape[1]), -30.0, dtype=np.float32)
            pause[:, model.config.pad_token_id] = 0.0
            parts.append(pause)
    frames = np.concatenate(parts)
    return frames, " ".join(s["text"] for s in segments), len(frames) * 0.02


def stream(decoder, log_probs: np.ndarray) -> tuple[list[str], float, int]:
    """Committed words, CPU seconds and frames decoded of one streaming pass."""
    from engine.lm_redecode import LMRedecoder

    redecoder = LMRedecoder(decoder, vocab_size=log_probs.shape[1])
    words: list[str] = []
    start = time.process_time()
    for k in range(0, len(log_probs), BLOCK_FRAMES):
        for update in redecoder.accept(log_probs[k:k + BLOCK_FRAMES]):
            words += [w.text for w in update.committed]
    for update in redecoder.flush():
        words += [w.text for w in update.committed]
    return words, time.process_time() - start, redecoder.frames_decoded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm", nargs="+", type=Path, default=None,
                        help="ARPA LMs to compare (default: the one beside the embedded model); each with the "
                             "lm_weights.json beside it")
    parser.add_argument("--log-add", nargs="+", default=["on"], choices=("on", "off"),
                        help="how the decoder merges hypotheses: on sums them (the default), off keeps the best")
    args = parser.parse_args(argv)
    from models import CTCVocab
    from models.lm import CTCBeamDecoder, find_language_model
    from training.scoring import word_error_rate

    torch.set_num_threads(1)
    log_probs, reference, seconds = demo_log_probs()
    vocab = CTCVocab.from_pretrained(MODEL)
    modes = sorted(set(args.log_add), key=("off", "on").index)
    print(f"demo turns: {seconds:.1f} s, {len(log_probs)} frames, {len(reference.split())} words; "
          f"best of {args.repeats} runs on one thread")
    print(f"| LM | beam | log-add | CPU ms per audio s | vs first row | frames decoded per frame | demo WER |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    baseline = None
    for lm in args.lm or [find_language_model(MODEL)]:
        t0, c0 = time.monotonic(), time.process_time()
        bases = {mode: CTCBeamDecoder(list(vocab.tokens), vocab.blank_id, "|", lm=lm, log_add=mode == "on")
                 for mode in modes}
        base = bases[modes[0]]
        print(f"LM {lm}: {Path(lm).stat().st_size / 1e6:.1f} MB, loaded in {time.monotonic() - t0:.1f} s "
              f"({time.process_time() - c0:.1f} s CPU, {len(modes)}x); alpha {base.alpha}, beta {base.beta}, "
              f"blank penalty {base.blank_penalty}", flush=True)
        for width in sorted(set(args.beams) | {32}):
            for mode in modes:
                decoder = bases[mode].with_beam_width(width)
                runs = [stream(decoder, log_probs) for _ in range(args.repeats)]
                words, _, decoded = runs[0]
                cpu = min(r[1] for r in runs)
                baseline = cpu if baseline is None else baseline  # the first row: first LM, beam 32, first mode
                wer = word_error_rate([reference], [" ".join(words).upper()])
                print(f"| {Path(lm).parent.name}/{Path(lm).name} | {width} | {mode} | {1000 * cpu / seconds:.0f} | "
                      f"{cpu / baseline:.2f}x | {decoded / len(log_probs):.1f} | {100 * wer:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
