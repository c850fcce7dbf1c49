"""A small modified Kneser-Ney n-gram estimator that writes ARPA files, and an ARPA reader.

KenLM's PyPI module can query ARPA/binary models but builds none (no `lmplz`), so the project
estimates its own word n-gram model here: interpolated modified Kneser-Ney (Chen & Goodman, as
`lmplz` does it) with three discounts per order taken from the count-of-counts, continuation
counts at lower orders, `<s>`, `</s>` and `<unk>`, optional extra vocabulary words (they get only
the uniform share of the unigram distribution) and optional pruning by count. Pruned n-grams give
their mass to the backoff weight, which is renormalised so every history's distribution still sums
to one. All probabilities in ARPA files are log10.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TextIO

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL = (BOS, EOS, UNK)
LOG10_ZERO = -99.0  # the ARPA convention for "never predicted" (used for <s>)
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # used when a corpus is too small for count-of-counts

Ngram = tuple[str, ...]

_NOT_WORD = re.compile(r"[^a-z']+")


def normalize_line(line: str) -> list[str]:
    """Lower-case words of letters a-z and apostrophes; everything else separates words.

    This is the spelling the project's CTC vocabularies share (letters, apostrophe, `|`); the
    decoder maps case to its own token set.
    """
    words = []
    for raw in _NOT_WORD.split(line.lower()):
        word = raw.strip("'")
        if word:
            words.append(word)
    return words


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter]:
    """Raw counts of all 1..order-grams of `<s> words </s>`; `counts[k]` holds (k+1)-grams."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    counts: list[Counter] = [Counter() for _ in range(order)]
    for words in sentences:
        if not words:
            continue
        seq = (BOS, *words, EOS)
        for k in range(order):
            counts[k].update(zip(*(seq[i:] for i in range(k + 1))))
    return counts


def _adjusted_counts(raw: list[Counter]) -> list[Counter]:
    """Kneser-Ney counts: raw at the top order and for n-grams starting with `<s>`, else the
    number of distinct words seen to the left."""
    order = len(raw)
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    adjusted[-1] = Counter(raw[-1])
    for k in range(order - 1, 0, -1):  # fill order k (index k-1) from the n-grams of order k+1
        for gram in raw[k]:
            adjusted[k - 1][gram[1:]] += 1  # one distinct left extension each
        for gram, c in raw[k - 1].items():
            if gram[0] == BOS:
                adjusted[k - 1][gram] = c
    return adjusted


def discounts_from_counts(counts: Iterable[int]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from count-of-counts, or the fallback
    (0.5, 1.0, 1.5) when the counts are too sparse to give valid ones (0 < Dc < c)."""
    t = Counter(c for c in counts if 1 <= c <= 4)
    if any(t[i] == 0 for i in (1, 2, 3, 4)):
        return FALLBACK_DISCOUNTS
    y = t[1] / (t[1] + 2 * t[2])
    d = (1 - 2 * y * t[2] / t[1], 2 - 3 * y * t[3] / t[2], 3 - 4 * y * t[4] / t[3])
    if not all(0 < dc < c for dc, c in zip(d, (1, 2, 3))):
        return FALLBACK_DISCOUNTS
    return d


@dataclass(frozen=True, slots=True)
class NgramModel:
    """An estimated backoff model: `orders[k]` maps (k+1)-grams to (log10 prob, log10 backoff or
    None); the vocabulary is the set of unigrams."""

    orders: tuple[dict[Ngram, tuple[float, float | None]], ...]
    discounts: tuple[tuple[float, float, float], ...]

    @property
    def order(self) -> int:
        return len(self.orders)

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 P(word | history) by ARPA backoff (unknown words score as `<unk>`)."""
        return _backoff_logprob(self.orders, word, tuple(history))


def _backoff_logprob(orders, word: str, history: Ngram) -> float:
    if (word,) not in orders[0]:
        word = UNK
    history = tuple(w if (w,) in orders[0] else UNK for w in history)
    keep = len(orders) - 1  # the longest usable history
    history = history[-keep:] if keep else ()
    bow = 0.0
    for start in range(len(history) + 1):
        ctx = history[start:]
        entry = orders[len(ctx)].get((*ctx, word))
        if entry is not None:
            return bow + entry[0]
        ctx_entry = orders[len(ctx) - 1].get(ctx) if ctx else None
        if ctx_entry is not None and ctx_entry[1] is not None:
            bow += ctx_entry[1]
    raise AssertionError("unigram table lost a word")  # unreachable: every word has a unigram


def _prune_closure(adjusted: list[Counter], thresholds: Sequence[int]) -> list[set[Ngram]]:
    """N-grams kept at each order: count above the order's threshold, plus every prefix and suffix
    of a kept higher-order n-gram (so contexts and backoff paths exist in the file)."""
    order = len(adjusted)
    kept: list[set[Ngram]] = [set() for _ in range(order)]
    for k in range(order - 1, -1, -1):
        thr = thresholds[k] if k else 0
        kept[k] = {g for g, c in adjusted[k].items() if c > thr}
        if k + 1 < order:
            for g in kept[k + 1]:
                kept[k].add(g[:-1])
                kept[k].add(g[1:])
    return kept


def estimate(
    counts: list[Counter],
    extra_vocab: Iterable[str] = (),
    prune: Sequence[int] = (),
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModel:
    """Interpolated modified Kneser-Ney from raw `count_ngrams` output.

    `prune[k]` drops (k+1)-grams whose Kneser-Ney count is <= that value (unigrams are never
    pruned; the last value repeats for higher orders), like `lmplz --prune`. `discounts` overrides
    the per-order (D1, D2, D3+) taken from count-of-counts.
    """
    order = len(counts)
    if order < 1 or not counts[0]:
        raise ValueError("no n-gram counts: the text had no words")
    if any(p < 0 for p in prune):
        raise ValueError(f"prune thresholds must be >= 0, got {list(prune)}")
    thresholds = [0] * order
    for k in range(1, order):
        thresholds[k] = prune[min(k, len(prune) - 1)] if prune else 0
    adjusted = _adjusted_counts(counts)
    if discounts is None:
        discounts = tuple(discounts_from_counts(a.values()) for a in adjusted)
    elif len(discounts) != order:
        raise ValueError(f"need one (D1, D2, D3+) per order ({order}), got {len(discounts)}")

    vocab = {g[0] for g in counts[0]} | {w for w in extra_vocab if w} | {EOS, UNK}
    vocab.discard(BOS)
    # Full (unpruned) interpolated probabilities and gammas, order by order.
    full: list[dict[Ngram, float]] = []
    gammas: list[dict[Ngram, float]] = []
    for k in range(order):
        d1, d2, d3 = discounts[k]
        totals: dict[Ngram, float] = defaultdict(float)
        mass: dict[Ngram, float] = defaultdict(float)
        for g, c in adjusted[k].items():
            if g[-1] == BOS:
                continue  # <s> is never predicted
            totals[g[:-1]] += c
            mass[g[:-1]] += d1 if c == 1 else d2 if c == 2 else d3
        gamma = {h: mass[h] / totals[h] for h in totals}
        probs: dict[Ngram, float] = {}
        for g, c in adjusted[k].items():
            if g[-1] == BOS:
                continue
            h = g[:-1]
            disc = d1 if c == 1 else d2 if c == 2 else d3
            lower = 1.0 / len(vocab) if k == 0 else full[k - 1][g[1:]]
            probs[g] = max(c - disc, 0.0) / totals[h] + gamma[h] * lower
        if k == 0:
            for w in vocab:
                probs.setdefault((w,), gamma[()] / len(vocab))
        full.append(probs)
        gammas.append(gamma)

    kept = _prune_closure(adjusted, thresholds)
    pruned_any = any(thresholds)
    orders: list[dict[Ngram, tuple[float, float | None]]] = []
    for k in range(order):
        table: dict[Ngram, tuple[float, float | None]] = {}
        source = full[0] if k == 0 else {g: full[k][g] for g in kept[k] if g in full[k]}
        for g, p in source.items():
            table[g] = (math.log10(p), None)
        if k == 0:
            table[(BOS,)] = (LOG10_ZERO, None)
        orders.append(table)
    # Backoff weights, bottom-up so lower orders are final when a higher order needs them.
    for k in range(order - 1):
        children: dict[Ngram, list[str]] = defaultdict(list)
        for g in orders[k + 1]:
            children[g[:-1]].append(g[-1])
        for h, words in children.items():  # h is kept: the closure keeps every context
            bow = gammas[k + 1][h]
            if pruned_any:
                num = 1.0 - sum(10 ** orders[k + 1][(*h, w)][0] for w in words)
                den = 1.0 - sum(10 ** _backoff_logprob(orders, w, h[1:]) for w in words)
                if den > 1e-12 and num > 0:
                    bow = num / den
            orders[k][h] = (orders[k][h][0], math.log10(bow) if bow > 0 else LOG10_ZERO)
    return NgramModel(orders=tuple(orders), discounts=tuple(tuple(d) for d in discounts))


def _open_for_reading(path: str | Path) -> TextIO:
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


@contextlib.contextmanager
def _open_for_writing(path: str | Path) -> Iterator[TextIO]:
    """A text file to write; gzip when the name ends in `.gz`, with no name or time in the gzip
    header, so the same model gives byte-identical files (reproducible builds)."""
    if not str(path).endswith(".gz"):
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            yield f
        return
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as f:
            yield f


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """Write `model` as an ARPA file (gzip-compressed when the name ends in `.gz`)."""
    with _open_for_writing(path) as f:
        f.write("\n\\data\\\n")
        for k, table in enumerate(model.orders):
            f.write(f"ngram {k + 1}={len(table)}\n")
        for k, table in enumerate(model.orders):
            f.write(f"\n\\{k + 1}-grams:\n")
            for gram in sorted(table):
                logp, bow = table[gram]
                line = f"{logp:.7g}\t{' '.join(gram)}"
                if bow is not None and k + 1 < model.order:
                    line += f"\t{bow:.7g}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def _arpa_lines(path: str | Path) -> Iterator[str]:
    with _open_for_reading(path) as f:
        for line in f:
            yield line.strip()


def read_arpa(path: str | Path) -> NgramModel:
    """Read an ARPA file (plain or `.gz`) into an `NgramModel` (discounts unknown: zeros)."""
    orders: list[dict[Ngram, tuple[float, float | None]]] = []
    declared: list[int] = []
    section = 0
    for line in _arpa_lines(path):
        if not line:
            continue
        if line.startswith("ngram ") and section == 0:
            declared.append(int(line.split("=", 1)[1]))
        elif line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-", 1)[0])
            orders.append({})
        elif line == "\\end\\":
            break
        elif section:
            parts = line.split()
            n = section
            logp, gram = float(parts[0]), tuple(parts[1 : 1 + n])
            bow = float(parts[1 + n]) if len(parts) > 1 + n else None
            orders[n - 1][gram] = (logp, bow)
    if not orders:
        raise ValueError(f"{path}: no n-gram sections; is this an ARPA file?")
    for k, (want, table) in enumerate(zip(declared, orders)):
        if want != len(table):
            raise ValueError(f"{path}: header says {want} {k + 1}-grams, found {len(table)}")
    return NgramModel(orders=tuple(orders), discounts=tuple((0.0, 0.0, 0.0) for _ in orders))


def read_arpa_vocabulary(path: str | Path) -> list[str]:
    """The unigram words of an ARPA file in file order, read without loading higher orders."""
    words: list[str] = []
    in_unigrams = False
    for line in _arpa_lines(path):
        if line == "\\1-grams:":
            in_unigrams = True
        elif in_unigrams:
            if line.startswith("\\"):
                break
            if line:
                words.append(line.split()[1])
    if not words:
        raise ValueError(f"{path}: no unigrams found; is this an ARPA file?")
    return words


def validate_arpa(path: str | Path) -> list[int]:
    """Check that an ARPA file is whole: a `\\data\\` header, one section per declared order in
    order, each with exactly the declared number of entries of the right length, and `\\end\\`.
    Returns the counts per order; raises ValueError naming the first problem (a writer that died
    mid-file leaves a short section and no `\\end\\`)."""
    declared: list[int] = []
    found: list[int] = []
    section = 0
    seen_data = ended = False
    with _open_for_reading(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if ended:
                raise ValueError(f"{path}:{lineno}: text after \\end\\")
            if line == "\\data\\":
                seen_data = True
            elif line.startswith("ngram ") and section == 0 and seen_data:
                order_s, count_s = line[6:].split("=", 1)
                if int(order_s) != len(declared) + 1:
                    raise ValueError(f"{path}:{lineno}: header declares order {order_s} out of sequence")
                declared.append(int(count_s))
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-", 1)[0])
                if section != len(found) + 1:
                    raise ValueError(f"{path}:{lineno}: section {line} out of sequence")
                found.append(0)
            elif line == "\\end\\":
                ended = True
            elif section:
                if len(line.split()) not in (section + 1, section + 2):
                    raise ValueError(f"{path}:{lineno}: a {section}-gram line with "
                                     f"{len(line.split())} fields: {line[:60]!r}")
                found[-1] += 1
    if not seen_data or not declared:
        raise ValueError(f"{path}: no \\data\\ header with ngram counts; is this an ARPA file?")
    for k, want in enumerate(declared):
        have = found[k] if k < len(found) else None
        if have is None:
            raise ValueError(f"{path}: header declares {want} {k + 1}-grams but the file has no "
                             f"\\{k + 1}-grams: section (cut short?)")
        if have != want:
            raise ValueError(f"{path}: header declares {want} {k + 1}-grams, the section has {have}")
    if len(found) > len(declared):
        raise ValueError(f"{path}: {len(found)} sections for {len(declared)} declared orders")
    if not ended:
        raise ValueError(f"{path}: no \\end\\ line (cut short?)")
    return declared
