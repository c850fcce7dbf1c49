"""Read CMU Sphinx's trie-binary n-gram models (pocketsphinx's `en-us.lm.bin`) without pocketsphinx.

pocketsphinx 5.1.1 can write its bundled US-English 3-gram model as ARPA
(`NGramModel(...).write(path, NGramModel.str_to_type('arpa'))`), but on `en-us.lm.bin` that call
crashes the interpreter (SIGSEGV) and leaves a truncated file: the binary's header says 2,051,547
bigrams while its trie holds 2,051,541 (the unigrams' end pointer), so the writer's
`calloc`ed array keeps 6 empty slots whose word pointer is NULL, and `fprintf` dereferences it
after the last real bigram (`ngram_model_trie_write_arpa`, `src/lm/ngram_model_trie.c`; seen in
gdb). What had been written stays in the C stdio buffer, so the file also loses its last ~4 KB.
The writer also never sets the raw n-grams' order, so its sort is a no-op and sections come out
grouped by the last word. And the one-liner `NGramModel(Config(), LogMath(), path)` frees its
temporary `LogMath` at once (the model keeps a bare pointer to it), so a later `write` converts
log values with freed memory: the numbers come out wrong (seen here: 4x too large from
`en-us.lm.bin`, around -1e30 from a small model).

So this module reads the same file directly with numpy, following pocketsphinx's own layout
(`lm_trie.c`, `lm_trie_quant.c`, `bitarr.c`): the header, counts, the 16-bit quantisation tables,
the unigram array, the bit-packed middle and longest arrays, the word strings. N-gram counts come
from the trie's own end pointers, not from the header. Probabilities are stored as logs in
base 1.0001 (pocketsphinx's default `logbase`; the file does not record it), so the reader checks
that the unigram distribution sums to one in that base.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRIE_HEADER = b"Trie Language Model"
SPHINX_LOG_BASE = 1.0001  # pocketsphinx's default -logbase, used when its models were built
_QUANT_BITS = 16  # probability and backoff bins (lm_trie_quant.c)
_MIDDLE_QUANT_BITS = 32  # a middle entry holds a backoff then a probability, 16 bits each
_TABLE = 1 << _QUANT_BITS


def _required_bits(max_value: int) -> int:
    return int(max_value).bit_length()


def _base_size(entries: int, max_vocab: int, remaining_bits: int) -> int:
    total_bits = _required_bits(max_vocab) + remaining_bits
    return ((1 + entries) * total_bits + 7) // 8 + 8  # one extra entry and 8 bytes of slack


def _read_bits(mem: np.ndarray, bit_offsets: np.ndarray, mask: int) -> np.ndarray:
    """`bitarr_read_int25` on many offsets: 32 little-endian bits at offset // 8, shifted, masked."""
    at = bit_offsets >> 3
    word = (mem[at].astype(np.uint64) | (mem[at + 1].astype(np.uint64) << 8)
            | (mem[at + 2].astype(np.uint64) << 16) | (mem[at + 3].astype(np.uint64) << 24))
    return ((word >> (bit_offsets & 7).astype(np.uint64)) & np.uint64(mask)).astype(np.int64)


@dataclass(frozen=True)
class SphinxNgrams:
    """All n-grams of a trie-binary model as arrays, in ARPA word order.

    `grams[k]`: (n, k+1) int32 word ids (oldest word first, predicted word last); `logp[k]`:
    log10 probabilities; `bow[k]`: log10 backoff weights (None at the top order). `words[i]` is
    word id i. `header_counts`: what the file's header claims (may disagree with the trie).
    """

    words: tuple[str, ...]
    grams: tuple[np.ndarray, ...]
    logp: tuple[np.ndarray, ...]
    bow: tuple[np.ndarray | None, ...]
    header_counts: tuple[int, ...]

    @property
    def order(self) -> int:
        return len(self.grams)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(g) for g in self.grams)


def read_sphinx_trie(path: str | Path, log_base: float = SPHINX_LOG_BASE,
                     check_sum: bool = True) -> SphinxNgrams:
    """Read a pocketsphinx trie-binary LM (`*.lm.bin`) into arrays (see `SphinxNgrams`).

    Raises ValueError for a file that is not one, is cut short, or (with `check_sum`) whose
    unigram probabilities do not sum to one in `log_base` (a model built with another logbase).
    """
    data = Path(path).read_bytes()
    if not data.startswith(TRIE_HEADER):
        raise ValueError(f"{path}: not a Sphinx trie-binary LM (no {TRIE_HEADER.decode()!r} header)")
    pos = len(TRIE_HEADER)
    try:
        order = data[pos]
        pos += 1
        header = list(struct.unpack_from(f"<{order}I", data, pos))
        pos += 4 * order
        if not 1 <= order <= 5:
            raise ValueError(f"{path}: n-gram order {order} out of range")
        n_words = header[0]
        to_log10 = math.log10(log_base)
        quant = None
        if order > 1:
            pos += 4  # a dummy int (formerly the quantisation type)
            n_values = (order - 2) * 2 * _TABLE + _TABLE
            quant = np.frombuffer(data, "<f4", n_values, pos).astype(np.float64) * to_log10
            pos += 4 * n_values
        unigrams = np.frombuffer(data, np.dtype([("prob", "<f4"), ("bo", "<f4"), ("next", "<u4")]),
                                 n_words + 1, pos)
        pos += 12 * (n_words + 1)
        middle_sizes = [_base_size(header[i], n_words, _MIDDLE_QUANT_BITS + _required_bits(header[i + 1]))
                        for i in range(1, order - 1)]
        longest_size = _base_size(header[order - 1], n_words, _QUANT_BITS) if order > 1 else 0
        mem_size = sum(middle_sizes) + longest_size
        mem = np.frombuffer(data, np.uint8, mem_size, pos)
        pos += mem_size
        (n_chars,) = struct.unpack_from("<I", data, pos)
        pos += 4
        blob = data[pos : pos + n_chars]
        if len(blob) != n_chars:
            raise ValueError(f"{path}: word strings cut short")
    except struct.error as exc:
        raise ValueError(f"{path}: file cut short ({exc})") from None
    words = tuple(w.decode("utf-8", "replace") for w in blob.split(b"\0")[:-1])
    if len(words) != n_words:
        raise ValueError(f"{path}: {len(words)} word strings for {n_words} unigrams")

    grams = [np.arange(n_words, dtype=np.int32)[:, None]]
    logp = [unigrams["prob"].astype(np.float64)[:n_words] * to_log10]
    bows: list[np.ndarray | None] = [unigrams["bo"].astype(np.float64)[:n_words] * to_log10]
    parent_next = unigrams["next"].astype(np.int64)  # children of entry i: [next[i], next[i+1])
    word_bits = _required_bits(n_words)
    mem_at = 0
    for k in range(1, order):  # entries of order k+1
        n = int(parent_next[-1])  # the trie's own count (the header may claim more)
        parent = np.searchsorted(parent_next, np.arange(n), side="right") - 1
        top = k == order - 1
        next_bits = 0 if top else _required_bits(header[k + 1])
        total_bits = word_bits + (_QUANT_BITS if top else _MIDDLE_QUANT_BITS + next_bits)
        offsets = np.arange(n + 1, dtype=np.int64) * total_bits + mem_at * 8
        word = _read_bits(mem, offsets[:-1], (1 << word_bits) - 1)
        table = (order - 2) * 2 * _TABLE if top else (k - 1) * 2 * _TABLE
        assert quant is not None
        if top:
            logp.append(quant[table + _read_bits(mem, offsets[:-1] + word_bits, _TABLE - 1)])
            bows.append(None)
        else:
            bows.append(quant[table + _TABLE + _read_bits(mem, offsets[:-1] + word_bits, _TABLE - 1)])
            logp.append(quant[table + _read_bits(mem, offsets[:-1] + word_bits + _QUANT_BITS, _TABLE - 1)])
            parent_next = _read_bits(mem, offsets + word_bits + _MIDDLE_QUANT_BITS, (1 << next_bits) - 1)
            mem_at += middle_sizes[k - 1]
        # The trie is keyed newest word first: the new word is the oldest of the n-gram.
        grams.append(np.concatenate([word[:, None].astype(np.int32), grams[k - 1][parent]], axis=1))
    if check_sum:
        total = float(np.sum(10.0 ** logp[0]))
        if not 0.98 < total < 1.02:
            raise ValueError(f"{path}: unigram probabilities sum to {total:.4f} in log base {log_base}, "
                             f"not 1; was the model built with another -logbase?")
    return SphinxNgrams(words, tuple(grams), tuple(logp), tuple(bows), tuple(header))


def ngrams_from_model(model) -> SphinxNgrams:
    """The arrays of `read_sphinx_trie` from an in-memory `models.lm.arpa.NgramModel` (orders up
    to 3 with every n-gram's context present), so any ARPA model can be pruned the same way."""
    words = tuple(sorted(g[0] for g in model.orders[0]))
    index = {w: i for i, w in enumerate(words)}
    grams, logp, bows = [], [], []
    for k, table in enumerate(model.orders):
        items = sorted(table.items())
        grams.append(np.array([[index[w] for w in g] for g, _ in items], dtype=np.int32).reshape(-1, k + 1))
        logp.append(np.array([v[0] for _, v in items], dtype=np.float64))
        top = k == model.order - 1
        bows.append(None if top else np.array([v[1] or 0.0 for _, v in items], dtype=np.float64))
    counts = tuple(len(t) for t in model.orders)
    return SphinxNgrams(words, tuple(grams), tuple(logp), tuple(bows), counts)
