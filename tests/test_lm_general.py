"""The general-English LM recipe on small models: Sphinx trie-binary reading, ARPA validation,
weighted-difference pruning and interpolation (every history still sums to one), the build step."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from models.lm.arpa import BOS, EOS, count_ngrams, estimate, normalize_line, read_arpa, validate_arpa, write_arpa
from models.lm.general import BUILD_RECORD_NAME, NOTICE_NAME, build_general
from models.lm.mix import _logprob_or_none, interpolate, mixture_perplexities, perplexity, prune_weighted_difference
from models.lm.sphinx import ngrams_from_model, read_sphinx_trie

TOY = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ran",
       "a dog ran on the mat", "the cat sat on a dog", "a bird sat on the log", "the bird ran"]
OTHER = ["a fish swam in the sea", "the fish ate the worm", "the cat ate the fish", "a bird ate a worm"]
HISTORIES = [(), ("the",), (BOS,), (BOS, "the"), ("the", "cat"), ("sat", "on"), ("fish", "the"),
             ("zebra",), ("on", "zebra")]


def _toy(lines=TOY, order=3, extra=("zebra",)):
    return estimate(count_ngrams([normalize_line(s) for s in lines], order), list(extra))


def _sums(model):
    vocab = [g[0] for g in model.orders[0] if g[0] != BOS]
    out = {}
    for h in HISTORIES:
        out[h] = sum(10 ** (_logprob_or_none(model, w, h) or -99.0) for w in vocab)
    return out


@pytest.fixture(scope="module")
def toy_bin(tmp_path_factory):
    """The toy model converted by pocketsphinx itself into its trie-binary format."""
    ps = pytest.importorskip("pocketsphinx")
    folder = tmp_path_factory.mktemp("sphinx")
    write_arpa(_toy(), folder / "toy.arpa")
    logmath = ps.LogMath()  # kept alive: the model holds a bare pointer to it
    lm = ps.NGramModel(ps.Config(), logmath, str(folder / "toy.arpa"))
    lm.write(str(folder / "toy.lm.bin"), ps.NGramModel.str_to_type("bin"))
    lm.write(str(folder / "sphinx.arpa"), ps.NGramModel.str_to_type("arpa"))
    return folder


def test_trie_reader_matches_the_arpa_it_was_made_from(toy_bin):
    model = _toy()
    sph = read_sphinx_trie(toy_bin / "toy.lm.bin")
    assert sph.counts == sph.header_counts == tuple(len(t) for t in model.orders)
    for k in range(sph.order):
        for ids, lp, bow in zip(sph.grams[k], sph.logp[k],
                                sph.bow[k] if sph.bow[k] is not None else [None] * len(sph.logp[k])):
            gram = tuple(sph.words[i] for i in ids)
            want_lp, want_bow = model.orders[k][gram]
            if gram != (BOS,):
                assert lp == pytest.approx(want_lp, abs=2e-4), gram  # float32 logs in base 1.0001
            if bow is not None and want_bow is not None:
                assert bow == pytest.approx(want_bow, abs=2e-4), gram


def test_trie_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.lm.bin"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a Sphinx trie-binary"):
        read_sphinx_trie(bad)


def test_trie_reader_rejects_a_cut_file(toy_bin, tmp_path):
    data = (toy_bin / "toy.lm.bin").read_bytes()
    cut = tmp_path / "cut.lm.bin"
    cut.write_bytes(data[: len(data) - 20])
    with pytest.raises(ValueError, match="cut short|word strings"):
        read_sphinx_trie(cut)


def test_validate_arpa_accepts_whole_files_and_names_what_is_missing(toy_bin, tmp_path):
    assert validate_arpa(toy_bin / "sphinx.arpa") == [len(t) for t in _toy().orders]
    lines = (toy_bin / "sphinx.arpa").read_text().splitlines(keepends=True)
    cases = {
        "no_end.arpa": ("".join(lines[:-1]), "no \\\\end\\\\"),
        "short_bigrams.arpa": ("".join(lines[: lines.index("\\2-grams:\n") + 5]), "2-grams, the section has 4"),
        "count.arpa": ("".join(lines).replace("ngram 2=", "ngram 2=1"), "declares 1"),
        "half_line.arpa": ("".join(lines)[: -len(lines[-1]) - len(lines[-2]) - 12], "fields|\\\\end"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            validate_arpa(tmp_path / name)
    with gzip.open(tmp_path / "ok.arpa.gz", "wt") as f:
        f.write("".join(lines))
    assert validate_arpa(tmp_path / "ok.arpa.gz")[0] == len(_toy().orders[0])


@pytest.mark.parametrize("keep", [(None, None), (10, 8), (4, 0), (0, 0)])
def test_pruning_keeps_contexts_and_every_history_sums_to_one(keep):
    full = _toy()
    pruned = prune_weighted_difference(ngrams_from_model(full), keep)
    if keep[0] is not None:
        assert len(pruned.orders[2]) <= keep[1]
        assert len(pruned.orders[1]) < len(full.orders[1])
    assert len(pruned.orders[0]) == len(full.orders[0])
    for gram in pruned.orders[2]:
        assert gram[:-1] in pruned.orders[1] and gram[1:] in pruned.orders[1]
    for h, total in _sums(pruned).items():
        assert total == pytest.approx(1.0, abs=1e-6), h
    for k in (1, 2):  # what is kept keeps its probability
        for gram, (lp, _) in pruned.orders[k].items():
            assert lp == pytest.approx(full.orders[k][gram][0])


def test_pruning_drops_the_ngrams_backoff_predicts_best():
    full = _toy()
    sph = ngrams_from_model(full)
    pruned = prune_weighted_difference(sph, (len(full.orders[1]), 5))
    kept = set(pruned.orders[2])
    # each dropped trigram differs less (weighted) from its backoff estimate than the kept ones
    def score(g):
        lp = full.orders[2][g][0]
        q = full.orders[1][g[:2]][1] + full.logprob(g[2], g[1:2])
        ph = full.logprob(g[0]) if g[0] != BOS else full.logprob(EOS)
        return 10 ** (ph + full.logprob(g[1], g[:1]) + lp) * abs(lp - q)
    assert min(score(g) for g in kept) >= max(score(g) for g in full.orders[2] if g not in kept) - 1e-12


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_interpolation_sums_to_one_and_mixes_listed_ngrams(weight):
    a, b = _toy(), _toy(OTHER, extra=())
    mixed = interpolate([a, b], [weight, 1 - weight])
    assert {g[0] for g in mixed.orders[0]} == {g[0] for g in a.orders[0]} | {g[0] for g in b.orders[0]}
    for h, total in _sums(mixed).items():
        assert total == pytest.approx(1.0, abs=1e-6), h
    for gram in [("the", "cat"), ("the", "fish"), ("cat", "ate", "the")]:
        want = sum(lam * 10 ** (_logprob_or_none(m, gram[-1], gram[:-1]) or -99.0)
                   for m, lam in ((a, weight), (b, 1 - weight)))
        assert 10 ** mixed.orders[len(gram) - 1][gram][0] == pytest.approx(want, rel=1e-6)


def test_interpolation_rejects_bad_weights():
    with pytest.raises(ValueError, match="sum to 1"):
        interpolate([_toy(), _toy(OTHER)], [0.5, 0.6])


def test_mixture_perplexity_agrees_with_the_mixed_model_on_listed_ngrams():
    a, b = _toy(), _toy(OTHER, extra=())
    own = [normalize_line("the dog sat on a cat")]
    (ppl,) = [r[0] for r in mixture_perplexities([a, b], own, [1.0])]
    assert ppl == pytest.approx(perplexity(a, own)[0], rel=1e-9)
    both = [normalize_line("the cat ate the fish")]  # words of both worlds: only a mix knows all
    assert mixture_perplexities([a, b], both, [1.0])[0][0] == float("inf")
    assert all(math.isfinite(r[0]) for r in mixture_perplexities([a, b], both, [0.1, 0.5, 0.9]))


def test_build_general_writes_a_valid_lm_with_notice_and_record(toy_bin, tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(OTHER * 2) + "\n")
    held = tmp_path / "val.txt"
    held.write_text("the cat ate the fish\na bird swam\n")
    out = tmp_path / "lm" / "lm.arpa.gz"
    out.parent.mkdir()
    record = build_general(out, [str(text)], sphinx=toy_bin / "toy.lm.bin", keep=(12, 10),
                           tune_text=[str(held)], weights=(0.2, 0.5, 0.8), licence="TEST LICENCE\n")
    assert validate_arpa(out) == record["counts"]
    assert record["weight_general"] in (0.2, 0.5, 0.8)
    assert len(record["tuning"]) == 4 and record["general_kept"][2] <= 10
    assert "TEST LICENCE" in (out.parent / NOTICE_NAME).read_text()
    assert json.loads((out.parent / BUILD_RECORD_NAME).read_text())["counts"] == record["counts"]
    model = read_arpa(out)
    for h, total in _sums(model).items():
        assert total == pytest.approx(1.0, abs=1e-4), h  # written with 7 significant digits
    assert math.isfinite(model.logprob("fish", ("the",)))


def test_build_general_needs_a_weight_or_held_out_text(toy_bin, tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("a fish swam\n")
    with pytest.raises(ValueError, match="--weight or --tune-text"):
        build_general(tmp_path / "lm.arpa", [str(text)], sphinx=toy_bin / "toy.lm.bin", licence="x")


@pytest.mark.slow
def test_pocketsphinx_en_us_model_reads_whole():
    """The shipped en-us.lm.bin: the trie holds 6 bigrams fewer than its header claims (why
    pocketsphinx's own ARPA writer crashes); the reader takes the trie's count."""
    ps = pytest.importorskip("pocketsphinx")
    from models.lm.general import sphinx_model_path

    sph = read_sphinx_trie(sphinx_model_path())
    assert sph.header_counts == (72547, 2051547, 1669625)
    assert sph.counts == (72547, 2051541, 1669625)
    assert float(np.sum(10 ** sph.logp[0])) == pytest.approx(1.0, abs=0.02)
    del ps


def test_domain_lm_mixes_user_text_in_and_caches(tmp_path):
    from models.lm.decoder import LM_WEIGHTS_NAME
    from models.lm.domain import domain_lm

    base_dir = tmp_path / "base"
    base_dir.mkdir()
    write_arpa(_toy(), base_dir / "lm.arpa")
    (base_dir / LM_WEIGHTS_NAME).write_text('{"alpha": 1.5, "beta": -1.0, "blank_penalty": 2.5}')
    text = tmp_path / "mine.txt"
    text.write_text("\n".join(OTHER * 6) + "\n")  # 24 lines: the weight is chosen on every tenth
    out = domain_lm(base_dir / "lm.arpa", [text], tmp_path / "cache")
    model = read_arpa(out)
    assert {"fish", "log"} <= {g[0] for g in model.orders[0]}
    assert model.logprob("fish", ("the",)) > _toy().logprob("zebra", ("the",))
    for h, total in _sums(model).items():
        assert total == pytest.approx(1.0, abs=1e-4), h
    assert json.loads((out.parent / LM_WEIGHTS_NAME).read_text())["alpha"] == 1.5  # tuned weights kept
    mtime = out.stat().st_mtime_ns
    assert domain_lm(base_dir / "lm.arpa", [text], tmp_path / "cache") == out
    assert out.stat().st_mtime_ns == mtime  # cached, not rebuilt
    alone = domain_lm(None, [text], tmp_path / "cache")
    assert alone != out and "log" not in {g[0] for g in read_arpa(alone).orders[0]}
    empty = tmp_path / "empty.txt"
    empty.write_text("123 !!!\n")
    with pytest.raises(ValueError, match="no words"):
        domain_lm(None, [empty], tmp_path / "cache")


def test_cli_lm_options_refuse_bad_paths_in_one_line(tmp_path, capsys):
    import soundfile as sf

    from app.cli import main

    audio = tmp_path / "a.wav"
    sf.write(audio, 0.1 * np.sin(np.arange(16000) * 0.3).astype(np.float32), 16000)
    assert main(["--input", str(audio), "--headless", "--lm", str(tmp_path / "nope.arpa")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --lm") and "no such file" in err[0]
    not_arpa = tmp_path / "x.arpa"
    not_arpa.write_text("hello\n")
    assert main(["--input", str(audio), "--headless", "--lm", str(not_arpa)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable ARPA" in err[0]
    assert main(["--input", str(audio), "--headless", "--lm-text", str(tmp_path / "none.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --lm-text") and "no such file" in err[0]


def test_held_out_sentences_read_text_and_corpus_jsonl(tmp_path):
    from models.lm.general import held_out_sentences

    (tmp_path / "a.txt").write_text("Hello, World!\n\n")
    (tmp_path / "val.jsonl").write_text('{"id": "v1", "text": "THE CAT"}\n{"id": "v2", "text": "THE CAT"}\n'
                                        '{"id": "v3", "text": "A DOG"}\n')
    assert held_out_sentences([tmp_path / "a.txt", tmp_path / "val.jsonl"]) == [
        ["hello", "world"], ["the", "cat"], ["a", "dog"]]
