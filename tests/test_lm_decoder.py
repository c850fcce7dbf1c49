"""CTCBeamDecoder on hand-made CTC scores: words and frame times, LM corrections, history, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa
from models.ctc_vocab import WordSpan
from models.lm.decoder import DEFAULT_BEAM_WIDTH, CTCBeamDecoder
from models.lm.synthetic_check import LIBRI_TOKENS, edit_distance, greedy_words, noisy_logits

LOWER = ["<pad>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
UPPER = list(LIBRI_TOKENS)


def scores(frames: str, tokens, alt: dict[int, str] | None = None) -> np.ndarray:
    """Log-probs spelling `frames` ('-' blank, ' ' delimiter); alt[t] = a second token at frame t
    that scores as high as the first (an acoustic tie for the LM to break)."""
    index = {t.lower(): i for i, t in enumerate(tokens)}
    out = np.full((len(frames), len(tokens)), -8.0, dtype=np.float32)
    for t, ch in enumerate(frames):
        out[t, 0 if ch == "-" else index["|" if ch == " " else ch]] = -0.1
        if alt and t in alt:
            out[t, index[alt[t]]] = -0.1
    return out


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    text = ["big bat flies", "fat cat sleeps", "the cat sat on the mat", "a big bat", "fat cat"] * 4
    path = tmp_path_factory.mktemp("lm") / "lm.arpa.gz"
    write_arpa(estimate(count_ngrams([normalize_line(s) for s in text], 3)), path)
    return path


def test_lexicon_free_words_and_frames():
    decoder = CTCBeamDecoder(LOWER, 0, beam_width=8)
    # frames:           0123456789012345
    words = decoder.decode(scores("-cc-a-t- -dd-og-", LOWER), frame_offset=100)
    assert words == [WordSpan("cat", 101, 107), WordSpan("dog", 110, 115)]


def test_lexicon_free_keeps_doubled_letters_and_drops_empty_words():
    decoder = CTCBeamDecoder(LOWER, 0)
    assert [w.text for w in decoder.decode(scores("  ll-l-o- - ", LOWER))] == ["llo"]


@pytest.mark.parametrize("tokens", [LOWER, UPPER], ids=["lower", "libri-upper"])
def test_lm_breaks_an_acoustic_tie_and_spells_in_the_vocab_case(lm_path, tokens):
    decoder = CTCBeamDecoder(tokens, 0, lm=lm_path, alpha=1.0, beta=0.5)
    #         012345678
    frames = "fa-t c-at"  # frame 5 is 'c' or 'b' equally: "fat cat" is in the LM, "fat bat" not
    words = decoder.decode(scores(frames, tokens, alt={5: "b"}))
    assert [w.text.lower() for w in words] == ["fat", "cat"]
    assert words[0].text == ("fat" if tokens is LOWER else "FAT")
    assert (words[1].start_frame, words[1].end_frame) == (5, 9)


def _word_scores(probs: np.ndarray, tokens: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Brute force over every alignment: each single word's summed and best path probability."""
    import itertools

    total: dict[str, float] = {}
    best: dict[str, float] = {}
    for path in itertools.product(range(len(tokens)), repeat=len(probs)):
        kept = [t for k, t in enumerate(path) if t != 0 and (k == 0 or t != path[k - 1])]
        words = [w for w in "".join(tokens[t] for t in kept).split("|") if w]
        if len(words) == 1:
            p = float(np.prod([probs[k, t] for k, t in enumerate(path)]))
            total[words[0]] = total.get(words[0], 0.0) + p
            best[words[0]] = max(best.get(words[0], 0.0), p)
    return total, best


def test_log_add_picks_the_word_with_more_probability_over_all_alignments():
    # "b" has more probability summed over its alignments, "a" the single best alignment
    tokens = ["<pad>", "|", "a", "b"]
    probs = np.array([[0.253, 0.578, 0.047, 0.122], [0.143, 0.235, 0.425, 0.197], [0.523, 0.044, 0.013, 0.42]])
    probs /= probs.sum(1, keepdims=True)
    total, best = _word_scores(probs, tokens)
    assert max(total, key=total.get) == "b" and max(best, key=best.get) == "a"
    decode = {log_add: [w.text for w in CTCBeamDecoder(tokens, 0, "|", lexicon=["a", "b"], log_add=log_add,
                                                       pause_frames=None).decode(np.log(probs))]
              for log_add in (True, False)}
    assert decode == {True: ["b"], False: ["a"]}
    assert CTCBeamDecoder(tokens, 0, "|", lexicon=["a"]).log_add  # the default
    assert not CTCBeamDecoder(tokens, 0, "|", lexicon=["a"], log_add=False).with_weights(1.0, 0.0).log_add


def test_history_changes_the_decision(lm_path):
    decoder = CTCBeamDecoder(UPPER, 0, lm=lm_path, alpha=1.0, beta=0.5)
    tie = scores("b-at", UPPER, alt={0: "c"})
    assert [w.text for w in decoder.decode(tie, context=["BIG"])] == ["BAT"]
    assert [w.text for w in decoder.decode(tie, context=["FAT"])] == ["CAT"]
    assert [w.text for w in decoder.decode(tie, context=["UNHEARD", "FAT"])] == ["CAT"]


def test_logits_and_log_probs_decode_alike(lm_path):
    decoder = CTCBeamDecoder(LOWER, 0, lm=lm_path)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (60, len(LOWER))).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert decoder.decode(logits) == decoder.decode(log_probs) == decoder.decode(logits + 5.0)


def test_lexicon_without_lm_is_a_closed_vocabulary():
    decoder = CTCBeamDecoder(LOWER, 0, lexicon=["cat", "dog"])
    assert [w.text for w in decoder.decode(scores("kat", LOWER, alt={0: "c"}))] == ["cat"]


def test_beam_with_lm_beats_greedy_on_noisy_posteriors(lm_path):
    decoder = CTCBeamDecoder(UPPER, 0, lm=lm_path, alpha=0.8, beta=1.0)
    rng = np.random.default_rng(0)
    refs = [s.split() for s in ["the cat sat on the mat", "fat cat sleeps", "a big bat flies"]] * 4
    greedy = beam = total = 0
    for ref in refs:
        logits = noisy_logits(ref, UPPER, rng)
        upper = [w.upper() for w in ref]
        greedy += edit_distance(upper, greedy_words(logits, UPPER))
        beam += edit_distance(upper, [w.text for w in decoder.decode(logits)])
        total += len(ref)
    assert beam / total < 0.5 * greedy / total


def test_empty_input_and_bad_input(lm_path):
    decoder = CTCBeamDecoder(LOWER, 0, lm=lm_path)
    assert decoder.decode(np.zeros((0, len(LOWER)), np.float32)) == []
    with pytest.raises(ValueError, match=r"\(frames, 29\)"):
        decoder.decode(np.zeros((5, 7), np.float32))
    with pytest.raises(ValueError, match="blank_id"):
        CTCBeamDecoder(LOWER, 99)
    with pytest.raises(ValueError, match="delimiter"):
        CTCBeamDecoder(LOWER, 0, delimiter="_")
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        CTCBeamDecoder(LOWER, 0, lm="nope.arpa")
    with pytest.raises(ValueError, match="spelled"):
        CTCBeamDecoder(["<pad>", "|", "x"], 0, lm=lm_path)


def test_from_vocab(lm_path):
    from models import CTCVocab

    vocab = CTCVocab(tokens=tuple(UPPER), blank_id=0, delimiter="|")
    decoder = CTCBeamDecoder.from_vocab(vocab, lm=lm_path)
    assert decoder.tokens == UPPER and decoder.blank_id == 0
    assert [w.text for w in decoder.decode(scores("c-at", UPPER))] == ["CAT"]


def test_a_long_pause_starts_a_new_sentence(lm_path):
    decoder = CTCBeamDecoder(UPPER, 0, lm=lm_path, alpha=1.0, beta=0.5, pause_frames=25)
    tie = scores("b-at", UPPER, alt={0: "c"})
    assert [w.text for w in decoder.decode(tie, context=["BIG"])] == ["BAT"]
    paused = np.concatenate([scores("-" * 30, UPPER), tie])
    words = decoder.decode(paused, context=["BIG"], frame_offset=10)
    assert [(w.text, w.start_frame) for w in words] == [("CAT", 40)]  # history dropped at the pause
    short = np.concatenate([scores("-" * 10, UPPER), tie])
    assert [w.text for w in decoder.decode(short, context=["BIG"])] == ["BAT"]


def test_speech_segments_split_at_pauses_only():
    decoder = CTCBeamDecoder(LOWER, 0, pause_frames=5)
    frames = scores("--ab-----cd- -ef--------", LOWER)
    #                012345678901234567890123
    assert decoder.speech_segments(frames) == [(0, 4), (9, 16)]
    assert [w.text for w in decoder.decode(frames)] == ["ab", "cd", "ef"]
    assert CTCBeamDecoder(LOWER, 0, pause_frames=None).speech_segments(frames) == [(0, 24)]


def test_find_language_model(tmp_path, lm_path):
    from models.lm import find_language_model

    assert find_language_model(tmp_path) is None
    (tmp_path / "language_model").mkdir()
    (tmp_path / "language_model" / "lm.arpa").write_bytes(lm_path.read_bytes())
    assert find_language_model(tmp_path) == tmp_path / "language_model" / "lm.arpa"
    (tmp_path / "lm.arpa.gz").write_bytes(lm_path.read_bytes())
    assert find_language_model(tmp_path) == tmp_path / "lm.arpa.gz"


@pytest.mark.parametrize("prune", [(), (0, 1)])
def test_kenlm_reads_our_arpa_as_we_do(tmp_path, prune):
    """flashlight's KenLM and our own reader agree on every score of a few sentences, backoffs
    and unknown words included: the file is valid ARPA, not just readable by us."""
    text = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ran"] * 2
    model = estimate(count_ngrams([s.split() for s in text], 3), prune=prune)
    path = tmp_path / "lm.arpa.gz"
    write_arpa(model, path)
    decoder = CTCBeamDecoder(LOWER, 0, lm=path)
    kenlm, index = decoder._kenlm, decoder._word_index
    for sentence in ["the cat sat on the log", "a dog ran on the mat", "the zebra sat"]:
        state, history = kenlm.start(False), ["<s>"]
        for word in sentence.split():
            state, score = kenlm.score(state, index.get(word, decoder._unk_word))
            assert score == pytest.approx(model.logprob(word, history[-2:]), abs=1e-5)
            history.append(word)
        _, score = kenlm.finish(state)
        assert score == pytest.approx(model.logprob("</s>", history[-2:]), abs=1e-5)


def test_with_weights_shares_the_lm_and_changes_the_decision(lm_path):
    decoder = CTCBeamDecoder(UPPER, 0, lm=lm_path, alpha=1.0, beta=0.5)
    tie = scores("b-at", UPPER, alt={0: "c"})
    deaf = decoder.with_weights(alpha=0.0, beta=0.5)
    assert deaf._kenlm is decoder._kenlm and deaf._trie is decoder._trie
    assert (deaf.alpha, decoder.alpha) == (0.0, 1.0)
    assert [w.text for w in decoder.decode(tie, context=["BIG"])] == ["BAT"]
    assert [w.text for w in decoder.with_weights(3.0, 0.5).decode(tie, context=["FAT"])] == ["CAT"]


def test_tune_weights_finds_a_grid_point_better_than_greedy(lm_path):
    from models.lm.tune import tune_weights

    rng = np.random.default_rng(3)
    refs = ["the cat sat on the mat", "fat cat sleeps", "a big bat flies"] * 2
    samples = [(noisy_logits(r.split(), UPPER, rng), r) for r in refs]
    result = tune_weights(CTCBeamDecoder(UPPER, 0, lm=lm_path), samples, alphas=(0.0, 1.0),
                          betas=(0.0, 1.0))
    assert len(result.table) == 4
    assert (result.alpha, result.beta, result.wer, result.blank_penalty) in result.table
    assert result.blank_penalty == 0.0  # the decoder's own: no penalty axis asked for
    assert result.wer == min(row[2] for row in result.table)
    assert result.wer < result.greedy_wer
    with pytest.raises(ValueError, match="no validation"):
        tune_weights(CTCBeamDecoder(UPPER, 0, lm=lm_path), [])


def _blanked(frames: str) -> np.ndarray:
    """Log-probs spelling `frames` where every letter frame's best token is the blank, the letter
    a close second: how a small CTC model hedges on letters it is unsure of."""
    out = scores(frames, UPPER)
    letters = np.array([ch not in "- " for ch in frames])
    out[letters, 0] = -0.05
    out[letters] -= np.log(np.exp(out[letters]).sum(axis=1, keepdims=True))
    return out


def test_blank_penalty_lets_hedged_letters_through_and_tuning_finds_it(lm_path):
    from models.lm.tune import tune_weights

    hedged = _blanked("-t-h-e- -c-a-t- -s-a-t-")
    plain = CTCBeamDecoder(UPPER, 0, lm=lm_path, alpha=0.5, beta=0.0, blank_penalty=0.0)
    assert [w.text for w in plain.decode(hedged)] == []  # every letter lost to the blank
    penalised = plain.with_weights(0.5, 0.0, blank_penalty=1.0)
    assert [w.text for w in penalised.decode(hedged)] == ["THE", "CAT", "SAT"]
    assert plain.blank_penalty == 0.0  # with_weights copied, it did not change the original
    refs = ["the cat sat", "fat cat sleeps", "a big bat"]
    samples = [(_blanked("-" + "-".join(r) + "-"), r) for r in refs]
    result = tune_weights(plain, samples, alphas=(0.5,), betas=(0.0,), blank_penalties=(0.0, 1.0))
    assert (result.blank_penalty, result.wer) == (1.0, 0.0)
    assert [row[3] for row in result.table] == [0.0, 1.0] and result.table[0][2] == 1.0
    with pytest.raises(ValueError, match="blank_penalty must be finite"):
        CTCBeamDecoder(UPPER, 0, lm=lm_path, blank_penalty=float("nan"))


def test_tuned_weights_beside_the_lm_are_the_decoders_defaults(lm_path, tmp_path):
    import shutil

    from models.lm.tune import TuneResult, write_lm_weights

    lm = tmp_path / "lm.arpa.gz"
    shutil.copy(lm_path, lm)
    assert (CTCBeamDecoder(UPPER, 0, lm=lm).alpha, CTCBeamDecoder(UPPER, 0, lm=lm).beta) == (0.5, 1.0)
    result = TuneResult(1.2, 2.0, 0.3, 0.5, ((1.2, 2.0, 0.3), (0.5, 1.0, 0.4)))
    path = write_lm_weights(lm, result, tuned_on="unit test")
    assert path == tmp_path / "lm_weights.json"
    decoder = CTCBeamDecoder(UPPER, 0, lm=lm)
    assert (decoder.alpha, decoder.beta, decoder.blank_penalty) == (1.2, 2.0, 0.0)
    penalised = TuneResult(1.0, 0.0, 0.2, 0.5, ((1.0, 0.0, 0.2, 1.5),), blank_penalty=1.5)
    write_lm_weights(lm, penalised, tuned_on="unit test")
    assert CTCBeamDecoder(UPPER, 0, lm=lm).blank_penalty == 1.5
    assert CTCBeamDecoder(UPPER, 0, lm=lm, blank_penalty=0.0).blank_penalty == 0.0  # an explicit value wins
    assert json.loads(path.read_text())["grid"] == [{"alpha": 1.0, "beta": 0.0, "wer": 0.2, "blank_penalty": 1.5}]
    write_lm_weights(lm, result, tuned_on="unit test")
    given = CTCBeamDecoder(UPPER, 0, lm=lm, alpha=0.1)  # an explicit value wins, the other stays tuned
    assert (given.alpha, given.beta) == (0.1, 2.0)
    path.write_text('{"alpha": "much"}')
    with pytest.raises(ValueError, match="lm_weights.json: expected a JSON object"):
        CTCBeamDecoder(UPPER, 0, lm=lm)


def test_with_beam_width_shares_the_lm_and_decodes_the_same_easy_input(lm_path):
    decoder = CTCBeamDecoder(LOWER, 0, lm=lm_path, alpha=1.0, beta=0.5)
    narrow = decoder.with_beam_width(4)
    assert (decoder.beam_width, narrow.beam_width) == (DEFAULT_BEAM_WIDTH, 4)
    assert narrow._lm is decoder._lm  # no reload
    frames = scores("-f-a-t- -c-a-t-", LOWER)
    assert [w.text for w in narrow.decode(frames)] == [w.text for w in decoder.decode(frames)] == ["fat", "cat"]
    with pytest.raises(ValueError, match="beam_width"):
        decoder.with_beam_width(0)
    assert CTCBeamDecoder(LOWER, 0).with_beam_width(2).decode(scores("-c-a-t-", LOWER))[0].text == "cat"
