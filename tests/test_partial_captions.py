"""Partial captions decoded with the language model: greedy when the LM is off or the stream is
under load, bounded work (frames and beam), spelled from the LM's words when it is on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine, EngineConfig
from engine.captions import CaptionDecoder
from engine.events import CaptionPartial
from engine.fakes import LIBRI_VOCAB, ScriptedModels, frames_to_audio, script

TURNS = [(0, "helo world this is alice"), (1, "and the wether is fine"), (0, "good")]
AUDIO = frames_to_audio(script(TURNS))


class _SpyDecoder:
    """A scripted beam decoder: greedy CTC of the frames it is given, with spelling fixes; it
    records how many frames each call saw and the LM history it was given."""

    def __init__(self, fixes=None):
        self.fixes = fixes or {}
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def decode(self, log_probs, frame_offset=0, context=()):
        self.calls.append((len(log_probs), tuple(context)))
        d = CaptionDecoder(LIBRI_VOCAB)
        d._g.next_frame = frame_offset
        words = d.commit(frame_offset, log_probs) + d.flush()
        return [type(w)(self.fixes.get(w.text, w.text), w.start_frame, w.end_frame) for w in words]


def _random_log_probs(seed: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(LIBRI_VOCAB.tokens), size=frames, p=None)
    ids[rng.random(frames) < 0.5] = LIBRI_VOCAB.blank_id  # mostly blanks, as CTC output is
    lp = np.full((frames, len(LIBRI_VOCAB.tokens)), -9.0, dtype=np.float32)
    lp[np.arange(frames), ids] = 0.0
    return lp


def _walk(decoder: CaptionDecoder, lp: np.ndarray, cuts: list[int], tail: int, use_lm: bool):
    """Commit in pieces; after each, a partial over the next `tail` frames (as the stream does)."""
    out, pos, i = [], 0, 0
    while pos < len(lp):
        n = cuts[i % len(cuts)]
        out.append(("final", decoder.commit(pos, lp[pos : pos + n])))
        pos, i = pos + n, i + 1
        if pos < len(lp):
            out.append(("partial", decoder.partial(pos, lp[pos : pos + tail], use_lm=use_lm)))
    return out + [("final", decoder.flush())]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 60), min_size=1, max_size=8),
       tail=st.integers(1, 30))
def test_identical_to_greedy_when_the_lm_is_off(seed, cuts, tail):
    lp = _random_log_probs(seed, 300)
    greedy = _walk(CaptionDecoder(LIBRI_VOCAB), lp, cuts, tail, use_lm=True)
    spy = _SpyDecoder({"A": "ZZZ"})
    off = _walk(CaptionDecoder(LIBRI_VOCAB, partial_decoder=spy), lp, cuts, tail, use_lm=False)
    assert off == greedy and not spy.calls
    for kind, value in greedy:
        if kind == "partial":
            assert not value.lm


def test_engine_partials_unchanged_without_lm_or_at_beam_zero(tmp_path):
    from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa

    def partials(**kw):
        lm = kw.pop("lm", None)
        stream = Engine(ScriptedModels(heads=frozenset({"ctc"})), EngineConfig(**kw), lm=lm).new_stream()
        events = stream.accept(AUDIO) + stream.flush()
        return [e for e in events if isinstance(e, CaptionPartial)]

    path = tmp_path / "lm.arpa"
    write_arpa(estimate(count_ngrams([normalize_line(t) for _, t in TURNS], 3)), path)
    greedy = partials()
    assert greedy and partials(partial_lm_beam=0, lm=path) == greedy
    assert partials(partial_lm_beam=32) == greedy  # no LM: nothing to decode partials with


def test_lm_partials_read_the_lm_words_with_final_words_as_history():
    spy = _SpyDecoder({"HELO": "HELLO", "WETHER": "WEATHER"})
    frames = script(TURNS)
    ids = np.array([f.token_id for f in frames])
    lp = np.full((len(ids), len(LIBRI_VOCAB.tokens)), -9.0, dtype=np.float32)
    lp[np.arange(len(ids)), ids] = 0.0
    texts = [v.text for k, v in _walk(CaptionDecoder(LIBRI_VOCAB, partial_decoder=spy), lp, [10], 20, True)
             if k == "partial" and v.text]
    greedy = [v.text for k, v in _walk(CaptionDecoder(LIBRI_VOCAB), lp, [10], 20, True)
              if k == "partial" and v.text]
    assert any("HELLO" in t for t in texts) and not any("HELO" in t.split() for t in texts)
    assert any("HELO" in t.split() for t in greedy)
    assert any(ctx for _, ctx in spy.calls)  # final words went along as LM history
    assert all(len(ctx) <= 2 for _, ctx in spy.calls)


def test_partial_work_is_bounded_by_frames():
    """A 'word' that never ends (no delimiter, no silence) is decoded over at most
    partial_max_frames frames per partial, however long it grows."""
    spy = _SpyDecoder()
    decoder = CaptionDecoder(LIBRI_VOCAB, partial_decoder=spy, partial_max_frames=30)
    letters = [i for i, t in enumerate(LIBRI_VOCAB.tokens) if t.isalpha()]
    lp = np.full((1000, len(LIBRI_VOCAB.tokens)), -9.0, dtype=np.float32)
    lp[np.arange(1000), np.array(letters)[np.arange(1000) % 2]] = 0.0  # ABAB...: one endless word
    _walk(decoder, lp, [40], 20, True)
    assert len(spy.calls) == 25 - 1 and max(n for n, _ in spy.calls) == 30
    assert decoder.partial_frames_decoded == sum(n for n, _ in spy.calls)
    assert len(decoder._held) <= 30  # memory bounded too


def test_beam_search_work_is_bounded_by_the_beam():
    """The partial decoder is the LM decoder at `partial_lm_beam`; flashlight's LM is asked for
    at most beam x tokens-per-frame scores per frame, whatever the audio's length."""
    from flashlight.lib.text.decoder import LM

    from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa

    class CountingLM(LM):
        def __init__(self, inner):
            LM.__init__(self)
            self.inner, self.calls = inner, 0

        def start(self, start_with_nothing):
            return self.inner.start(start_with_nothing)

        def score(self, state, token_index):
            self.calls += 1
            return self.inner.score(state, token_index)

        def finish(self, state):
            return self.inner.finish(state)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.arpa"
        write_arpa(estimate(count_ngrams([normalize_line(t) for _, t in TURNS] * 2, 3)), path)
        engine = Engine(ScriptedModels(heads=frozenset({"ctc"})), EngineConfig(partial_lm_beam=4), lm=path)
        stream = engine.new_stream()
        partial = stream._decoder.partial_decoder
        assert partial.beam_width == 4 and partial._kenlm is stream.lm.decoder._kenlm  # shares the LM
        rng = np.random.default_rng(0)
        lp = np.log(rng.dirichlet(np.ones(len(LIBRI_VOCAB.tokens)) * 0.3, size=200)).astype(np.float32)
        tokens_per_frame = 10
        for beam in (1, 4, 16):
            d = partial.with_beam_width(beam)
            counting = CountingLM(d._lm)
            d._lm = counting
            d.decode(lp)
            assert 0 < counting.calls <= len(lp) * beam * tokens_per_frame, (beam, counting.calls)


def test_under_load_partials_fall_back_to_greedy():
    spy = _SpyDecoder({"HELO": "HELLO"})
    config = EngineConfig()
    engine = Engine(ScriptedModels(heads=frozenset({"ctc"})), config)
    quiet, loaded, reference = engine.new_stream(), engine.new_stream(), engine.new_stream()
    for s in (quiet, loaded):
        s._decoder.partial_decoder = spy
    quiet.accept(AUDIO)
    calls_quiet = len(spy.calls)
    assert calls_quiet > 0
    loaded.report_load(backlog_samples=config.partial_lm_max_lag_samples)  # still level 0: partials on
    assert loaded.level == 0
    events = loaded.accept(AUDIO)
    assert len(spy.calls) == calls_quiet  # greedy under load ...
    reference.report_load(backlog_samples=config.partial_lm_max_lag_samples)
    greedy = reference.accept(AUDIO)  # ... exactly as a stream without a partial decoder
    assert [e for e in events if isinstance(e, CaptionPartial)] == \
        [e for e in greedy if isinstance(e, CaptionPartial)] != []


def test_config_refuses_bad_partial_settings():
    with pytest.raises(ValueError, match="partial_lm_beam"):
        EngineConfig(partial_lm_beam=-1)
    with pytest.raises(ValueError, match="partial_max_frames"):
        CaptionDecoder(LIBRI_VOCAB, partial_max_frames=0)
