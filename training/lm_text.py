"""Extra language-model text: the fortune sentences the corpus could not speak.

The corpus keeps only sentences that synthesize and transcribe exactly (3-16 words, no digits,
symbols, acronyms or abbreviations), so most of the `fortunes` package never reaches the LM. Those
rejected sentences are still English of the same style: written out as plain words they add
186,000 words to the training text's 129,000 (validation WER of run 5's model with beam 128: 27.8 %
against 29.0 %, docs/lm.md). Nothing a held-out transcript occurs in is kept, so the validation,
test and everyday figures stay honest.

    python -m training.lm_text --corpus /work/runs/corpus --out /work/runs/lm/extra.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from training.text import (EVERYDAY_SENTENCES, FORTUNE_DIR, _clean_spoken, fortune_raw_sentences,
                           normalize_transcript)

HELD_OUT_SPLITS = ("val", "test", "everyday")
_DIGIT = re.compile(r"[0-9]")
_NOT_WORD = re.compile(r"[^a-z']+")


def plain_words(sentence: str) -> list[str]:
    """Lower-case words of letters and inner apostrophes; everything else separates words."""
    words = (w.strip("'") for w in _NOT_WORD.split(sentence.lower().replace("\u2019", "'")))
    return [w for w in words if w]


def extra_lm_sentences(held_out: Iterable[str], fortune_dir: Path = FORTUNE_DIR,
                       min_words: int = 2) -> list[str]:
    """Return the fortune sentences the corpus rejects, as lower-case word lines, in a stable order.

    Sentences with digits are skipped (their spoken form is unknown); so is every line that
    contains a `held_out` transcript as a run of whole words. Lines are distinct.
    """
    held = {" " + " ".join(plain_words(t)) + " " for t in held_out}
    held.discard("  ")
    seen: set[str] = set()
    out: list[str] = []
    for sentence in fortune_raw_sentences(fortune_dir):
        if _DIGIT.search(sentence) or _clean_spoken(sentence) is not None:
            continue  # unknown spoken form, or spoken in some split already
        words = plain_words(sentence)
        if len(words) < min_words:
            continue
        line = " ".join(words)
        if line in seen or any(h in f" {line} " for h in held):
            continue
        seen.add(line)
        out.append(line)
    return out


def corpus_held_out(corpus_root: Path) -> list[str]:
    """Transcripts the LM must never see: the corpus's validation, test and everyday rows."""
    from training.corpus import Corpus

    corpus = Corpus(corpus_root)
    texts = [row["text"] for split in HELD_OUT_SPLITS for row in corpus.rows.get(split, [])]
    return texts + [normalize_transcript(s) for s in EVERYDAY_SENTENCES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="built corpus (its held-out transcripts are excluded)")
    parser.add_argument("--out", type=Path, required=True, help="text file, one sentence a line")
    args = parser.parse_args(argv)
    held = corpus_held_out(args.corpus)
    lines = extra_lm_sentences(held)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"wrote {args.out}: {len(lines):,} lines, {sum(len(l.split()) for l in lines):,} words "
          f"({len(set(held)):,} held-out transcripts excluded)", file=sys.stderr)


if __name__ == "__main__":
    main()
