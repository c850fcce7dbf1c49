"""Greedy vs beam+LM word error rate on synthetic noisy CTC posteriors of known sentences.

`python -m models.lm.synthetic_check --text FILE [--vocab WORDLIST]` splits the text's sentences
into LM training (49 of 50) and held-out test sentences (1 of 50, never seen by the LM), builds a
trigram LM from the training part in memory, and turns each test sentence into CTC scores over a
32-token LibriSpeech-style vocabulary with the errors a small CTC model makes: letters swapped for
sound-alikes (the true letter stays second best), letters dropped, word delimiters lost. It prints
WER and CER of greedy decoding and of beam search with the LM, and the decoder's speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.ctc_vocab import CTCVocab
from models.lm.arpa import count_ngrams, estimate, write_arpa
from models.lm.build import read_sentences, read_vocab
from models.lm.decoder import CTCBeamDecoder

LIBRI_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ")
SOUND_ALIKE = ("AEIOUY", "CKSQXZ", "BP", "DT", "GJ", "FV", "MN", "WV", "LR")


@dataclass(frozen=True, slots=True)
class NoiseModel:
    """Per-letter error rates and logit margins of the simulated acoustic model."""

    p_substitute: float = 0.15
    p_drop: float = 0.05
    p_lose_delimiter: float = 0.25
    peak: float = 7.0  # logit of the emitted token
    runner_up: float = 5.0  # logit the true token keeps when the peak is wrong
    noise: float = 1.0  # std of the logits of everything else


def _confusable(letter: str, rng: np.random.Generator) -> str:
    for group in SOUND_ALIKE:
        if letter in group and len(group) > 1:
            return str(rng.choice([c for c in group if c != letter]))
    return str(rng.choice([c for c in "ETAONIHSRDLUMWCFGYPBVK" if c != letter]))


def noisy_logits(words: Sequence[str], tokens: Sequence[str], rng: np.random.Generator,
                 noise: NoiseModel = NoiseModel()) -> np.ndarray:
    """CTC logits (frames, vocab) that spell `words` with simulated acoustic errors."""
    index = {t: i for i, t in enumerate(tokens)}
    frames: list[np.ndarray] = []

    def frame(top: str, second: str | None = None, second_logit: float = 0.0) -> None:
        row = rng.normal(0.0, noise.noise, len(tokens)).astype(np.float32)
        row[index[top]] = noise.peak
        if second is not None:
            row[index[second]] = second_logit
        frames.append(row)

    def blanks(n: int) -> None:
        for _ in range(n):
            frame("<pad>")

    blanks(int(rng.integers(1, 4)))
    for w, word in enumerate(words):
        prev = None
        for letter in word.upper():
            if letter not in index:
                continue
            if rng.random() < noise.p_drop:
                frame("<pad>", letter, noise.runner_up - 1.0)
                continue
            shown, second = letter, None
            if rng.random() < noise.p_substitute:
                shown, second = _confusable(letter, rng), letter
            if shown == prev:
                blanks(1)  # a doubled letter needs a blank between its two frames
            for _ in range(int(rng.integers(1, 4))):
                frame(shown, second, noise.runner_up)
            blanks(int(rng.integers(0, 2)))
            prev = shown
        if w + 1 < len(words):
            if rng.random() < noise.p_lose_delimiter:
                frame("<pad>", "|", noise.runner_up - 1.0)
            else:
                frame("|")
            blanks(int(rng.integers(0, 2)))
    blanks(int(rng.integers(1, 4)))
    return np.stack(frames)


def greedy_words(logits: np.ndarray, tokens: Sequence[str], blank_id: int = 0,
                 delimiter: str = "|") -> list[str]:
    """Best path (`models.ctc_vocab.CTCVocab.decode`): argmax, merge repeats, drop blanks and
    multi-character tokens, split at the delimiter."""
    specials = frozenset(t for t in tokens if len(t) > 1 and t != delimiter)
    vocab = CTCVocab(tuple(tokens), blank_id, delimiter, specials)
    return vocab.decode(logits.argmax(axis=1).tolist(), skip_special_tokens=True).split()


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences: rapidfuzz's, as `engine.scoring.edit_distance`
    (models/ does not import engine/)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(ref, hyp))


def split_corpus(sentences: list[list[str]], test_every: int = 50) -> tuple[list, list]:
    """Deterministic split by a hash of the sentence: 1 in `test_every` is held out."""
    train, test = [], []
    for s in sentences:
        (test if zlib.crc32(" ".join(s).encode()) % test_every == 0 else train).append(s)
    return train, test


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.lm.synthetic_check", description=__doc__.split("\n")[0])
    parser.add_argument("--text", nargs="+", required=True)
    parser.add_argument("--vocab", help="extra LM vocabulary (word list)")
    parser.add_argument("--test-text", nargs="+",
                        help="held-out test sentences; then all of --text trains the LM")
    parser.add_argument("--lm", help="use this ARPA model instead of building one from --text")
    parser.add_argument("--sentences", type=int, default=200, help="test sentences to decode")
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--prune", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--beam-width", type=int, default=32)
    parser.add_argument("--beam-size-token", type=int, default=10)
    parser.add_argument("--beam-threshold", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sentences = [s for s in read_sentences(args.text, split_sentences=True) if 4 <= len(s) <= 20]
    if args.test_text:
        train, test = sentences, list(read_sentences(args.test_text))
    else:
        train, test = split_corpus(sentences)
    test = test[: args.sentences]
    held_out = {" ".join(s) for s in test}
    train = [s for s in train if " ".join(s) not in held_out]
    extra = read_vocab(args.vocab) if args.vocab else []
    with tempfile.TemporaryDirectory() as tmp:
        lm_path = Path(args.lm) if args.lm else Path(tmp) / "lm.arpa.gz"
        if not args.lm:
            write_arpa(estimate(count_ngrams(train, args.order), extra, args.prune), lm_path)
        t0 = time.perf_counter()
        decoder = CTCBeamDecoder(LIBRI_TOKENS, 0, lm=lm_path, alpha=args.alpha, beta=args.beta,
                                 beam_width=args.beam_width, beam_size_token=args.beam_size_token,
                                 beam_threshold=args.beam_threshold)
        load_s = time.perf_counter() - t0
    lm_words = set(decoder.lexicon_words())
    oov = sum(w not in lm_words for s in test for w in s)
    rng = np.random.default_rng(args.seed)
    errs = {"greedy": [0, 0], "beam+lm": [0, 0]}
    n_words = n_chars = frames = 0
    decode_s = 0.0
    for words in test:
        logits = noisy_logits(words, LIBRI_TOKENS, rng)
        ref = [w.upper() for w in words]
        t0 = time.perf_counter()
        beam = [w.text for w in decoder.decode(logits)]
        decode_s += time.perf_counter() - t0
        for name, hyp in (("greedy", greedy_words(logits, LIBRI_TOKENS)), ("beam+lm", beam)):
            errs[name][0] += edit_distance(ref, hyp)
            errs[name][1] += edit_distance(" ".join(ref), " ".join(hyp))
        n_words += len(ref)
        n_chars += len(" ".join(ref))
        frames += len(logits)
    lm_source = args.lm or f"{len(train)} sentences (+{len(extra)} vocabulary words)"
    print(f"{len(test)} held-out sentences, {n_words} words ({oov} not in the LM), {frames} "
          f"frames; LM {lm_source}; decoder load {load_s:.1f} s")
    for name, (w, c) in errs.items():
        print(f"{name:8s} WER {w / n_words:.3f}  CER {c / n_chars:.3f}")
    print(f"beam+lm speed: {frames / decode_s:,.0f} frames/s "
          f"({decode_s / frames * 20 * 1000:.2f} ms per 20 frames), beam {args.beam_width}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
