"""Stream tests with scripted fake models: chunking invariance, exactly-once commits, seams, flush."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, EngineConfig, HeadSchedule
from engine.captions import CaptionDecoder
from engine.config import DegradeConfig, frames_in
from engine.events import CaptionFinal, CaptionPartial, CaptionRevision, Stats, apply_revision
from engine.fakes import LIBRI_VOCAB, ScriptedModels, frames_to_audio, script

CONVERSATION = [
    (0, "hello world this is alice"),
    (1, "and this is bob speaking"),
    (0, "good morning all"),
    (None, ""),
    (1, "see you tomorrow"),
]
TEXT = " ".join(t for _, t in CONVERSATION if t).upper().split()


def _engine(**kw) -> Engine:
    cfg = EngineConfig()
    models = ScriptedModels(garble_right_frames=cfg.ctc.right_frames - 1, **kw)
    return Engine(models, cfg)


def _feed(engine: Engine, audio: np.ndarray, sizes: list[int]) -> list:
    stream = engine.new_stream()
    events, pos, i = [], 0, 0
    while pos < len(audio):
        n = sizes[i % len(sizes)]
        events += stream.accept(audio[pos : pos + n])
        pos, i = pos + n, i + 1
    return events + stream.flush()


def _final_words(events) -> list[str]:
    return [w.text for e in events if isinstance(e, CaptionFinal) for w in e.words]


AUDIO = frames_to_audio(script(CONVERSATION))


def test_captions_exact_despite_garbled_right_edges():
    events = _feed(_engine(), AUDIO, [1600])
    assert _final_words(events) == TEXT
    # a caption id is final once; revisions only name existing ids
    ids = [e.caption_id for e in events if isinstance(e, CaptionFinal)]
    assert ids == sorted(set(ids))
    assert {e.caption_id for e in events if isinstance(e, CaptionRevision)} <= set(ids)


def test_garble_beyond_right_context_is_visible():
    """Control for the test above: if commits used frames without right context, text would break."""
    cfg = EngineConfig()
    engine = Engine(ScriptedModels(garble_right_frames=cfg.ctc.right_frames + 8), cfg)
    assert _final_words(_feed(engine, AUDIO, [1600])) != TEXT


def _strip(events):
    return [e for e in events if not isinstance(e, Stats)]


REFERENCE = _strip(_feed(_engine(), AUDIO, [16000]))


@pytest.mark.parametrize("size", [7, 160, 1600, 16000, len(AUDIO)])
def test_same_events_for_any_block_size(size):
    engine = _engine()
    if size == 7:  # 7-sample blocks over the whole clip are slow in Python: a 3 s prefix suffices
        audio = AUDIO[: 3 * 16000]
        assert _strip(_feed(engine, audio, [7])) == _strip(_feed(_engine(), audio, [16000]))
    else:
        assert _strip(_feed(engine, AUDIO, [size])) == REFERENCE


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=97, max_value=40000), min_size=1, max_size=30))  # tiny blocks: the size-7 test
def test_same_events_for_random_blocks(sizes):
    assert _strip(_feed(_engine(), AUDIO, sizes)) == REFERENCE


def test_every_frame_committed_exactly_once(monkeypatch):
    commits: list[tuple[int, int]] = []
    original = CaptionDecoder.commit

    def spy(self, start_frame, log_probs):
        commits.append((start_frame, start_frame + len(log_probs)))
        return original(self, start_frame, log_probs)

    monkeypatch.setattr(CaptionDecoder, "commit", spy)
    for cfg in (EngineConfig(), EngineConfig(ctc=HeadSchedule.from_seconds(0.4, 0.3, 0.2))):
        commits.clear()
        audio = AUDIO[: 123_457]  # ends mid-frame, mid-window
        stream = Engine(ScriptedModels(), cfg).new_stream()
        stream.accept(audio)
        stream.flush()
        assert commits[0][0] == 0
        for (a0, a1), (b0, _) in zip(commits, commits[1:]):
            assert a1 == b0 and a0 < a1  # contiguous, no overlap, no gap
        assert commits[-1][1] == frames_in(len(audio))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_decoder_seams_any_split(splits):
    """Greedy decoding split at arbitrary seams equals one pass (repeats and blanks at the seam)."""
    frames = script([(0, "all ill little bookkeeper"), (1, "zoo")], char_frames=3)
    ids = np.array([f.token_id for f in frames])
    lp = np.full((len(ids), len(LIBRI_VOCAB.tokens)), -9.0, dtype=np.float32)
    lp[np.arange(len(ids)), ids] = 0.0
    whole = CaptionDecoder(LIBRI_VOCAB)
    expect = whole.commit(0, lp) + whole.flush()
    assert [w.text for w in expect] == ["ALL", "ILL", "LITTLE", "BOOKKEEPER", "ZOO"]
    pieced, pos, out, i = CaptionDecoder(LIBRI_VOCAB), 0, [], 0
    while pos < len(ids):
        n = splits[i % len(splits)]
        out += pieced.commit(pos, lp[pos : pos + n])
        pos, i = pos + n, i + 1
    assert out + pieced.flush() == expect


def test_decoder_refuses_gaps_and_overlaps():
    d = CaptionDecoder(LIBRI_VOCAB)
    lp = np.zeros((5, len(LIBRI_VOCAB.tokens)), dtype=np.float32)
    d.commit(0, lp)
    with pytest.raises(ValueError, match="expected frame 5"):
        d.commit(4, lp)
    with pytest.raises(ValueError, match="expected frame 5"):
        d.commit(6, lp)


def test_partials_preview_then_clear():
    events = _feed(Engine(ScriptedModels()), AUDIO, [1600])  # a model that is right at the edges too
    partials = [e for e in events if isinstance(e, CaptionPartial)]
    assert sum(bool(p.text) for p in partials) >= 5
    assert partials[-1].text == ""  # flush clears the partial line
    for a, b in zip(partials, partials[1:]):
        assert (a.text, a.speaker) != (b.text, b.speaker)  # no repeated partials
    for p in partials:  # every partial word is (a prefix of) a word that becomes final
        for word in p.text.split():
            assert any(t.startswith(word) for t in TEXT), (word, p)


def test_flush_finalises_short_stream_and_is_idempotent():
    audio = frames_to_audio(script([(0, "hi")], gap_frames=2))
    stream = Engine(ScriptedModels()).new_stream()  # the end has no right context: no garbling
    assert [e for e in stream.accept(audio) if isinstance(e, CaptionFinal)] == []
    events = stream.flush()
    assert _final_words(events) == ["HI"]
    assert stream.flush() == []
    with pytest.raises(RuntimeError, match="flushed"):
        stream.accept(audio)
    stream.reset()
    assert _final_words(stream.accept(audio) + stream.flush()) == ["HI"]


def test_bad_input_is_refused_clearly():
    stream = _engine().new_stream()
    with pytest.raises(ValueError, match="1-D"):
        stream.accept(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(TypeError, match="float"):
        stream.accept(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="whole number"):
        HeadSchedule(16000, 1000, 3200)


def test_memory_bounded_on_long_stream():
    """6 minutes of speech-like fake audio: buffers, captions and runs stop growing."""
    engine = _engine(num_speakers=2)
    stream = engine.new_stream()
    block = frames_to_audio(script([(0, "one two three four"), (1, "five six seven eight")]))
    sizes = []
    for _ in range(int(6 * 60 * 16000 / len(block))):
        stream.accept(block)
        sizes.append((len(stream.audio), len(stream.captions), len(stream.tracker.runs),
                      len(stream.tracker.frame_runs), len(stream.queue)))
    late = np.array(sizes[len(sizes) // 2 :])
    early = np.array(sizes[len(sizes) // 4 : len(sizes) // 2])
    assert (late.max(axis=0) <= 1.1 * early.max(axis=0) + 2).all(), (early.max(axis=0), late.max(axis=0))
    assert late[:, 0].max() <= 5 * 16000 and late[:, 3].max() <= 2 * stream.config.revise_horizon_frames
    assert len(stream.audio) <= stream.audio.capacity


def test_degrade_policy_reports_and_recovers():
    cfg = EngineConfig(degrade=DegradeConfig(level_samples=(16000, 32000, 64000)))
    stream = Engine(ScriptedModels(), cfg).new_stream()
    stream.report_load(backlog_samples=40000)
    assert stream.level == 2 and "no-partials" in stream.degraded and "no-reembedding" in stream.degraded
    events = stream.accept(AUDIO[:80000])
    assert not any(isinstance(e, CaptionPartial) for e in events)
    stream.report_load(backlog_samples=0)
    assert stream.level == 0 and stream.degraded == ()
    off = Engine(ScriptedModels(), EngineConfig(degrade=DegradeConfig(enabled=False))).new_stream()
    off.report_load(backlog_samples=10**7)
    assert off.level == 0


class _FixingLM:
    """A scripted beam decoder: greedy CTC of the frames it is given, with spelling fixes."""

    def __init__(self, fixes):
        self.fixes = fixes
        self.calls = 0

    def decode(self, log_probs, frame_offset=0, context=()):
        self.calls += 1
        d = CaptionDecoder(LIBRI_VOCAB)
        d._g.next_frame = frame_offset
        words = d.commit(frame_offset, log_probs) + d.flush()
        return [type(w)(self.fixes.get(w.text, w.text), w.start_frame, w.end_frame) for w in words]


def _final_text_after_revisions(events):
    captions = {}
    for e in events:
        if isinstance(e, CaptionFinal):
            captions[e.caption_id] = e
        elif isinstance(e, CaptionRevision):
            captions[e.caption_id] = apply_revision(captions[e.caption_id], e)
    return " ".join(captions[k].text for k in sorted(captions)).split()


@pytest.mark.parametrize("with_speakers", [True, False])
def test_language_model_revises_caption_text(with_speakers):
    turns = [(0, "helo world this is alice"), (1, "and the wether is fine"), (0, "good")]
    audio = frames_to_audio(script(turns))
    heads = frozenset({"ctc", "diar", "sv"} if with_speakers else {"ctc"})
    lm = _FixingLM({"HELO": "HELLO", "WETHER": "WEATHER"})
    runs = []
    for block in (1600, 7000):
        engine = Engine(ScriptedModels(heads=heads), EngineConfig(), lm=lm)
        runs.append(_strip(_feed(engine, audio, [block])))
    assert runs[0] == runs[1]  # deterministic under any chunking, LM included
    events = runs[0]
    assert _final_words(events)[:2] == ["HELO", "WORLD"]  # greedy finals come first, fast
    revs = [e for e in events if isinstance(e, CaptionRevision) and e.text is not None]
    assert {"text", "words"} <= set(revs[0].changed)
    assert _final_text_after_revisions(events) == "HELLO WORLD THIS IS ALICE AND THE WEATHER IS FINE GOOD".split()
    assert lm.calls > 0


def test_real_beam_decoder_plugs_in():
    """models.lm.CTCBeamDecoder without an LM agrees with greedy decoding: no text revisions."""
    from engine.fakes import LIBRI_TOKENS
    from models.lm import CTCBeamDecoder

    decoder = CTCBeamDecoder(list(LIBRI_TOKENS), 0, "|", lm=None)
    engine = Engine(ScriptedModels(heads=frozenset({"ctc"})), EngineConfig(), lm=decoder)
    events = _feed(engine, AUDIO, [4000])
    assert _final_words(events) == TEXT
    assert not [e for e in events if isinstance(e, CaptionRevision)]
    with pytest.raises(TypeError, match="beam decoder"):
        Engine(ScriptedModels(), lm=42)


def test_engine_builds_the_lm_decoder_with_the_configured_beam_and_merging(tmp_path):
    from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa

    path = tmp_path / "lm.arpa.gz"
    write_arpa(estimate(count_ngrams([normalize_line(s) for s in ["hello world"] * 3], 2)), path)
    for config, beam, log_add in ((EngineConfig(), 512, True),
                                  (EngineConfig(lm_beam_width=7, lm_log_add=False), 7, False)):
        engine = Engine(ScriptedModels(heads=frozenset({"ctc"})), config, lm=path)
        decoder = engine.lm_factory().decoder
        assert (decoder.beam_width, decoder.log_add) == (beam, log_add)
    with pytest.raises(ValueError, match="lm_beam_width"):
        EngineConfig(lm_beam_width=0)
