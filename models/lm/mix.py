"""Prune a large backoff model by weighted difference, and interpolate backoff models into one.

Both keep the ARPA contract that every history's distribution sums to one: after dropping
n-grams or mixing, each backoff weight is recomputed as

    bow(h) = (1 - sum_{w kept after h} P(w | h)) / (1 - sum_{w kept after h} P(w | h'))

with h' the history without its oldest word (as SRILM's `ngram -prune` and `-mix-lm` do).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from models.lm.arpa import BOS, EOS, LOG10_ZERO, Ngram, NgramModel
from models.lm.sphinx import SphinxNgrams


def _keys(grams: np.ndarray, vocab_size: int) -> np.ndarray:
    key = grams[:, 0].astype(np.int64)
    for j in range(1, grams.shape[1]):
        key = key * vocab_size + grams[:, j]
    return key


class _Lookup:
    """Vectorised membership and position of n-grams of one order (int64 keys, sorted)."""

    def __init__(self, grams: np.ndarray, vocab_size: int):
        self.vocab_size = vocab_size
        keys = _keys(grams, vocab_size)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def find(self, grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, row index into the original table; garbage where not found)."""
        keys = _keys(grams, self.vocab_size)
        pos = np.clip(np.searchsorted(self.sorted, keys), 0, max(len(self.sorted) - 1, 0))
        found = self.sorted[pos] == keys if len(self.sorted) else np.zeros(len(keys), bool)
        return found, self.order[pos]


def _history_logprob(logp1: np.ndarray, words: Sequence[str]) -> np.ndarray:
    """log10 P(h) of one-word histories; `<s>` (never predicted, -99) gets P(</s>), the rate at
    which sentences start, so n-grams after `<s>` are not all pruned."""
    out = logp1.copy()
    if BOS in words and EOS in words:
        out[words.index(BOS)] = logp1[words.index(EOS)]
    return out


def prune_weighted_difference(model: SphinxNgrams, keep: Sequence[int | None]) -> NgramModel:
    """Keep the `keep[k]` (k+1)-grams (k >= 1; None keeps all) that matter most, then renormalise.

    An n-gram (h, w) with explicit log10 probability p would, if dropped, be predicted by backing
    off: q = bow(h) + log10 P(w | h'). Its score is P(h) P(w | h) |p - q| (the weighted difference
    of Seymore & Rosenfeld 1996, a one-pass approximation of Stolcke's relative-entropy pruning that
    ignores the change of bow(h)); P(h) is the model's own probability of the history. The
    highest-scoring n-grams are kept, plus the prefix and suffix of every kept n-gram (so each
    context and backoff path exists), and the backoff weights are recomputed. Unigrams are all
    kept. Orders up to 3 (int64 keys).
    """
    order = model.order
    if order > 3:
        raise ValueError(f"pruning supports orders up to 3, got {order}")
    if len(keep) != order - 1:
        raise ValueError(f"keep needs one count per order above 1 ({order - 1}), got {len(keep)}")
    vocab = len(model.words)
    words = list(model.words)
    p1 = model.logp[0]
    bow1 = model.bow[0] if model.bow[0] is not None else np.zeros(vocab)
    hist1 = _history_logprob(p1, words)
    kept: list[np.ndarray] = [np.arange(vocab)]
    scores: list[np.ndarray] = [np.zeros(vocab)]
    lookups = [None, _Lookup(model.grams[1], vocab) if order > 1 else None]

    def bigram_logprob(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        found, row = lookups[1].find(np.stack([a, b], axis=1))
        return np.where(found, model.logp[1][row], bow1[a] + p1[b])

    if order > 1:
        g = model.grams[1]
        q = bow1[g[:, 0]] + p1[g[:, 1]]
        ph = hist1[g[:, 0]]
        scores.append(10.0 ** (ph + model.logp[1]) * np.abs(model.logp[1] - q))
    if order > 2:
        g = model.grams[2]
        found, row = lookups[1].find(g[:, :2])
        if not found.all():
            raise ValueError(f"{(~found).sum()} trigrams have no bigram context in the model")
        assert model.bow[1] is not None
        q = model.bow[1][row] + bigram_logprob(g[:, 1], g[:, 2])
        ph = hist1[g[:, 0]] + model.logp[1][row]
        scores.append(10.0 ** (ph + model.logp[2]) * np.abs(model.logp[2] - q))
    masks = [np.ones(vocab, bool)]
    for k in range(1, order):
        n = len(model.grams[k])
        limit = keep[k - 1]
        mask = np.ones(n, bool)
        if limit is not None and limit < n:
            mask[:] = False
            mask[np.argsort(-scores[k], kind="stable")[:limit]] = True
        masks.append(mask)
    if order > 2:  # closure: the context and the suffix of every kept trigram stay
        g = model.grams[2][masks[2]]
        for part in (g[:, :2], g[:, 1:]):
            found, row = lookups[1].find(part)
            masks[1][row[found]] = True
    kept = [np.flatnonzero(m) for m in masks]

    # Renormalise bottom-up. Unigrams are untouched.
    new_bow1 = bow1.copy()
    tables_logp = [p1]
    if order > 1:
        g2 = model.grams[1][kept[1]]
        lp2 = model.logp[1][kept[1]]
        num = 1.0 - np.bincount(g2[:, 0], weights=10.0 ** lp2, minlength=vocab)
        den = 1.0 - np.bincount(g2[:, 0], weights=10.0 ** p1[g2[:, 1]], minlength=vocab)
        has = np.bincount(g2[:, 0], minlength=vocab) > 0
        ok = has & (num > 0) & (den > 1e-12)
        new_bow1[ok] = np.log10(num[ok] / den[ok])
        new_bow1[~has] = 0.0
        tables_logp.append(lp2)
    new_bow2 = None
    if order > 2:
        assert model.bow[1] is not None
        g2 = model.grams[1][kept[1]]
        look2 = _Lookup(g2, vocab)
        lp2 = tables_logp[1]
        g3 = model.grams[2][kept[2]]
        lp3 = model.logp[2][kept[2]]
        _, hist_row = look2.find(g3[:, :2])
        found, low_row = look2.find(g3[:, 1:])
        lower = np.where(found, lp2[low_row], new_bow1[g3[:, 1]] + p1[g3[:, 2]])
        n2 = len(g2)
        num = 1.0 - np.bincount(hist_row, weights=10.0 ** lp3, minlength=n2)
        den = 1.0 - np.bincount(hist_row, weights=10.0 ** lower, minlength=n2)
        has = np.bincount(hist_row, minlength=n2) > 0
        new_bow2 = model.bow[1][kept[1]].copy()
        ok = has & (num > 0) & (den > 1e-12)
        new_bow2[ok] = np.log10(num[ok] / den[ok])
        new_bow2[~has] = 0.0
        tables_logp.append(lp3)

    orders: list[dict[Ngram, tuple[float, float | None]]] = []
    unigrams: dict[Ngram, tuple[float, float | None]] = {}
    for i, w in enumerate(words):
        lp = LOG10_ZERO if w == BOS else float(p1[i])
        unigrams[(w,)] = (lp, float(new_bow1[i]) if order > 1 else None)
    orders.append(unigrams)
    for k in range(1, order):
        g = model.grams[k][kept[k]]
        bows = new_bow2 if k == 1 and order > 2 else None
        table: dict[Ngram, tuple[float, float | None]] = {}
        for j, (ids, lp) in enumerate(zip(g.tolist(), tables_logp[k].tolist())):
            table[tuple(words[i] for i in ids)] = (lp, float(bows[j]) if bows is not None else None)
        orders.append(table)
    return NgramModel(orders=tuple(orders), discounts=tuple((0.0, 0.0, 0.0) for _ in orders))


def _logprob_or_none(model: NgramModel, word: str, history: Ngram) -> float | None:
    """log10 P(word | history) by backoff, or None when `word` is outside the model's vocabulary
    (it then contributes nothing to a mixture; its `<unk>` mass is not spread over other words)."""
    orders = model.orders
    if (word,) not in orders[0]:
        return None
    history = history[-(len(orders) - 1):] if len(orders) > 1 else ()
    bow = 0.0
    for start in range(len(history) + 1):
        ctx = history[start:]
        entry = orders[len(ctx)].get((*ctx, word))
        if entry is not None:
            return bow + entry[0]
        ctx_entry = orders[len(ctx) - 1].get(ctx) if ctx else None
        if ctx_entry is not None and ctx_entry[1] is not None:
            bow += ctx_entry[1]
    raise AssertionError("unreachable: the unigram exists")


def interpolate(models: Sequence[NgramModel], weights: Sequence[float]) -> NgramModel:
    """Static linear interpolation: P(w | h) = sum_i weights[i] P_i(w | h) for every n-gram any
    model lists, over the union of the vocabularies (a word a model lacks has probability 0
    there), then backoff weights recomputed so each history sums to one (SRILM's `-mix-lm`
    approximation: exact for listed n-grams, backed-off ones follow the mixed lower order)."""
    if len(models) != len(weights) or not models:
        raise ValueError("need one weight per model")
    if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
        raise ValueError(f"weights must be >= 0 and sum to 1, got {list(weights)}")
    order = max(m.order for m in models)

    def mixed(word: str, history: Ngram) -> float:
        total = 0.0
        for m, lam in zip(models, weights):
            if lam == 0:
                continue
            lp = _logprob_or_none(m, word, history)
            if lp is not None:
                total += lam * 10.0 ** lp
        return math.log10(total) if total > 0 else LOG10_ZERO

    orders: list[dict[Ngram, tuple[float, float | None]]] = []
    for k in range(order):
        grams: set[Ngram] = set()
        for m in models:
            if k < m.order:
                grams.update(m.orders[k])
        table: dict[Ngram, tuple[float, float | None]] = {}
        for g in sorted(grams):  # a fixed order: the same sums, the same file, in every process
            lp = LOG10_ZERO if g[-1] == BOS else mixed(g[-1], g[:-1])
            table[g] = (lp, None)
        orders.append(table)
    # Backoff weights of order-k histories from their children in order k+1, bottom-up.
    for k in range(order - 1):
        children: dict[Ngram, list[Ngram]] = defaultdict(list)
        for g in orders[k + 1]:
            children[g[:-1]].append(g)
        partial = NgramModel(orders=tuple(orders[: k + 1]), discounts=())
        for h, (lp, _) in orders[k].items():
            kids = children.get(h)
            bow = 0.0
            if kids:
                num = 1.0 - sum(10.0 ** orders[k + 1][g][0] for g in kids)
                den = 1.0 - sum(10.0 ** (_logprob_or_none(partial, g[-1], h[1:]) or LOG10_ZERO) for g in kids)
                if num > 0 and den > 1e-12:
                    bow = math.log10(num / den)
                else:  # the children take all the mass (rounding): back off as little as allowed
                    bow = LOG10_ZERO
            orders[k][h] = (lp, bow)
    return NgramModel(orders=tuple(orders), discounts=tuple((0.0, 0.0, 0.0) for _ in orders))


def mixture_perplexities(models: Sequence[NgramModel], sentences: Iterable[Sequence[str]],
                         weights: Sequence[float]) -> list[tuple[float, int, int]]:
    """Perplexity of the linear mixture `w * P_0 + (1 - w) * P_1` for each weight w, from each
    model's word probabilities computed once (as SRILM's compute-best-mix does). A word neither
    model knows is skipped and counted as OOV. Returns (perplexity, words scored, OOV) per weight."""
    if len(models) != 2:
        raise ValueError("mixture_perplexities mixes two models")
    probs: list[tuple[float, float]] = []
    oov = 0
    order = max(m.order for m in models)
    for words in sentences:
        history: tuple[str, ...] = (BOS,)
        for w in (*words, EOS):
            pair = [_logprob_or_none(m, w, history) for m in models]
            p = tuple(0.0 if lp is None or lp <= LOG10_ZERO else 10.0 ** lp for lp in pair)
            if not any(p):
                oov += 1
                history = ()
                continue
            probs.append(p)  # type: ignore[arg-type]
            history = (*history, w)[-(order - 1):]
    arr = np.asarray(probs, dtype=np.float64).reshape(-1, 2)
    out = []
    for lam in weights:
        mix = lam * arr[:, 0] + (1 - lam) * arr[:, 1]
        with np.errstate(divide="ignore"):
            ppl = float(10.0 ** (-np.log10(mix).mean())) if len(mix) else float("inf")
        out.append((ppl, len(mix), oov))
    return out


def perplexity(model: NgramModel, sentences: Iterable[Sequence[str]]) -> tuple[float, int, int]:
    """(perplexity over in-vocabulary words and `</s>`, words scored, out-of-vocabulary words
    skipped), as SRILM's `ngram -ppl` counts them."""
    total, n, oov = 0.0, 0, 0
    for words in sentences:
        history: tuple[str, ...] = (BOS,)
        for w in (*words, EOS):
            lp = _logprob_or_none(model, w, history)
            if lp is None or lp <= LOG10_ZERO:
                oov += 1
                history = ()  # as SRILM: an OOV word breaks the context
                continue
            total += lp
            n += 1
            history = (*history, w)[-(model.order - 1):] if model.order > 1 else ()
    return (10.0 ** (-total / n) if n else float("inf")), n, oov
