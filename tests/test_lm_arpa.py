"""The Kneser-Ney estimator and ARPA reader/writer: normalisation, hand-computed values, pruning."""

from __future__ import annotations

import math

import pytest

from models.lm.arpa import (
    BOS,
    EOS,
    UNK,
    count_ngrams,
    discounts_from_counts,
    estimate,
    normalize_line,
    read_arpa,
    read_arpa_vocabulary,
    write_arpa,
)
from models.lm.build import main as build_main

TOY = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ran",
       "a dog ran on the mat", "the cat sat on a dog"]


def _model(order, prune=(), extra=()):
    return estimate(count_ngrams([normalize_line(s) for s in TOY], order), extra, prune)


def _predictable(model):
    return [g[0] for g in model.orders[0] if g[0] != BOS]


def test_normalize_line_keeps_letters_and_inner_apostrophes():
    assert normalize_line("Don't PANIC -- it's 42 o'clock! 'quoted'") == [
        "don't", "panic", "it's", "o'clock", "quoted"]


def test_discounts_from_count_of_counts():
    counts = [1] * 10 + [2] * 5 + [3] * 3 + [4] * 2
    d1, d2, d3 = discounts_from_counts(counts)
    assert (d1, d2) == pytest.approx((0.5, 1.1))
    assert d3 == pytest.approx(3 - 4 * 0.5 * 2 / 3)
    assert discounts_from_counts([1, 1, 2]) == (0.5, 1.0, 1.5)  # too sparse: fallback


def test_bigram_values_match_hand_computation():
    # Corpus "a b" / "b a b", D = (0.5, 1, 1.5) at both orders, vocabulary {a, b, </s>, <unk>}.
    # Continuation counts: a 2 ({<s>, b}), b 2 ({a, <s>}), </s> 1 -> total 5, gamma 2.5/5.
    model = estimate(count_ngrams([["a", "b"], ["b", "a", "b"]], 2),
                     discounts=[(0.5, 1.0, 1.5)] * 2)
    p = lambda w, h=(): 10 ** model.logprob(w, h)  # noqa: E731
    assert p("a") == pytest.approx(1 / 5 + 0.5 / 4)
    assert p(EOS) == pytest.approx(0.5 / 5 + 0.5 / 4)
    assert p(UNK) == pytest.approx(0.5 / 4)
    assert p("b", ("a",)) == pytest.approx(1 / 2 + 0.5 * 0.325)
    assert p("a", ("a",)) == pytest.approx(0.5 * 0.325)  # unseen: backoff weight x unigram
    assert p(EOS, ("b",)) == pytest.approx(1 / 3 + 0.5 * 0.225)
    assert p("a", ("b",)) == pytest.approx(0.5 / 3 + 0.5 * 0.325)
    assert p("a", (BOS,)) == pytest.approx(0.25 + 0.5 * 0.325)
    assert model.orders[0][("a",)][1] == pytest.approx(math.log10(0.5))  # bow(a) = gamma(a)
    assert model.logprob("zebra", ("a",)) == model.logprob(UNK, ("a",))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("prune", [(), (0, 1), (0, 0, 1)])
def test_distributions_sum_to_one(order, prune):
    model = _model(order, prune, extra=["zebra", "yak"])
    vocab = _predictable(model)
    assert {"zebra", "yak", EOS, UNK} <= set(vocab)
    for history in [(), ("the",), (BOS,), (BOS, "the"), ("cat", "sat"), ("sat", "on", "the"),
                    ("zebra", "the"), ("unseen", "words")]:
        total = sum(10 ** model.logprob(w, history) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-6), history


def test_pruning_drops_rare_ngrams_but_keeps_contexts():
    full, pruned = _model(3), _model(3, prune=(0, 1))
    assert len(pruned.orders[2]) < len(full.orders[2])
    assert len(pruned.orders[1]) < len(full.orders[1])
    for k in (1, 2):
        for gram in pruned.orders[k]:
            assert gram[:-1] in pruned.orders[k - 1] and gram[1:] in pruned.orders[k - 1]


def test_higher_order_prefers_seen_continuations():
    model = _model(3)
    assert model.logprob("sat", ("the", "cat")) > model.logprob("mat", ("the", "cat"))
    assert model.logprob("the", ("sat", "on")) > model.logprob("cat", ("sat", "on"))


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip(tmp_path, name):
    model = _model(3, prune=(0, 1), extra=["zebra"])
    path = tmp_path / name
    write_arpa(model, path)
    back = read_arpa(path)
    assert [set(t) for t in back.orders] == [set(t) for t in model.orders]
    for history in [(), ("the",), ("the", "cat"), (BOS, "a")]:
        for w in _predictable(model):
            assert back.logprob(w, history) == pytest.approx(model.logprob(w, history), abs=1e-6)
    assert set(read_arpa_vocabulary(path)) == {g[0] for g in model.orders[0]}


def test_gzip_output_is_reproducible(tmp_path):
    for name in ("a.arpa.gz", "b.arpa.gz"):
        write_arpa(_model(2), tmp_path / name)
    assert (tmp_path / "a.arpa.gz").read_bytes() == (tmp_path / "b.arpa.gz").read_bytes()


def test_estimate_rejects_empty_text():
    with pytest.raises(ValueError, match="no words"):
        estimate(count_ngrams([], 3))


def test_read_arpa_rejects_other_files(tmp_path):
    path = tmp_path / "x.arpa"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="ARPA"):
        read_arpa(path)


def test_build_cli(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TOY * 3) + "\n")
    vocab = tmp_path / "words"
    vocab.write_text("zebra\nCafé\nyak's\n")
    out = tmp_path / "lm.arpa.gz"
    assert build_main(["--text", str(text), "--order", "3", "--prune", "0", "1",
                       "--vocab", str(vocab), "--out", str(out)]) == 0
    words = set(read_arpa_vocabulary(out))
    assert {"zebra", "yak's", "cat"} <= words and "café" not in words
    assert "wrote" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--text", str(tmp_path / "missing.txt"), "--out", str(out)])
