"""Build a word n-gram ARPA model from text: `python -m models.lm.build --text FILE --out lm.arpa.gz`.

Each input line is one sentence (or several with --split-sentences); words are lower-cased letters
and apostrophes (`models.lm.arpa.normalize_line`). The model is interpolated modified Kneser-Ney;
`--prune 0 1` drops bigrams and higher seen only once (by Kneser-Ney count) to keep the file small;
`--vocab FILE` adds words (one per line, e.g. /usr/share/dict/american-english) that the text lacks,
so the decoder can still spell them. A `.gz` output name writes gzip, which the decoder reads.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa

_SENTENCE_END = re.compile(r"[.!?;:]+\s")
_VOCAB_WORD = re.compile(r"^[a-z']+$")
PROGRESS_EVERY_LINES = 100_000


def read_sentences(paths: Sequence[str], split_sentences: bool = False,
                   progress: TextIO | None = None) -> Iterator[list[str]]:
    """Normalised sentences from text files ('-' is stdin), reporting progress on long input."""
    lines = words = 0
    start = time.monotonic()
    for path in paths:
        opened = (contextlib.nullcontext(sys.stdin) if path == "-"
                  else open(path, encoding="utf-8", errors="replace"))
        with opened as handle:
            for line in handle:
                lines += 1
                parts = _SENTENCE_END.split(line + " ") if split_sentences else [line]
                for part in parts:
                    sentence = normalize_line(part)
                    if sentence:
                        words += len(sentence)
                        yield sentence
                if progress is not None and lines % PROGRESS_EVERY_LINES == 0:
                    progress.write(f"  read {lines:,} lines, {words:,} words "
                                   f"({time.monotonic() - start:.0f} s)\n")
                    progress.flush()
    if progress is not None:
        progress.write(f"read {lines:,} lines, {words:,} words\n")


def read_vocab(path: str) -> list[str]:
    """Words of a word-list file that fit the LM's spelling (lower-case a-z and apostrophe)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            word = line.strip().lower()
            if _VOCAB_WORD.match(word) and word.strip("'"):
                out.append(word.strip("'"))
    return out


def build(text: Sequence[str], out: str | Path, order: int = 3, prune: Sequence[int] = (),
          vocab: str | None = None, split_sentences: bool = False,
          progress: TextIO | None = None) -> dict[str, int]:
    """Count, estimate and write; returns the number of n-grams written per order."""
    counts = count_ngrams(read_sentences(text, split_sentences, progress), order)
    extra = read_vocab(vocab) if vocab else []
    if progress is not None:
        progress.write(f"estimating order-{order} modified Kneser-Ney"
                       f"{f' with {len(extra):,} extra vocabulary words' if extra else ''}\n")
    model = estimate(counts, extra_vocab=extra, prune=prune)
    write_arpa(model, out)
    sizes = {f"{k + 1}-grams": len(table) for k, table in enumerate(model.orders)}
    if progress is not None:
        progress.write(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB): "
                       + ", ".join(f"{v:,} {k}" for k, v in sizes.items()) + "\n")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.lm.build", description=__doc__.split("\n")[0])
    parser.add_argument("--text", nargs="+", required=True, help="text files, one sentence a line ('-': stdin)")
    parser.add_argument("--out", required=True, help="output ARPA file; .gz compresses")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("--prune", type=int, nargs="+", default=[],
                        help="per-order count thresholds from unigrams up, e.g. '0 1' (last repeats)")
    parser.add_argument("--vocab", help="extra words, one a line (e.g. /usr/share/dict/american-english)")
    parser.add_argument("--split-sentences", action="store_true", help="also split lines at . ! ? ; :")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if not 1 <= args.order <= 6:
        parser.error(f"--order must be 1..6, got {args.order}")
    for path in args.text + ([args.vocab] if args.vocab else []):
        if path != "-" and not Path(path).is_file():
            parser.error(f"no such file: {path}")
    try:
        build(args.text, args.out, args.order, args.prune, args.vocab, args.split_sentences,
              None if args.quiet else sys.stderr)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
