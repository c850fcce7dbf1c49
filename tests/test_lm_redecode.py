"""The streaming LM re-decoder: chunking invariance, commit lag, revisions, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import Word
from engine.lm_redecode import LMRedecoder, RedecodeConfig
from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa
from models.lm.decoder import CTCBeamDecoder
from models.lm.synthetic_check import LIBRI_TOKENS, noisy_logits

TOKENS = list(LIBRI_TOKENS)
TEXT = ["the cat sat on the mat", "a big bat flies at night", "fat cat sleeps on the mat",
        "the dog ran", "a cat and a dog sat"] * 3


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    write_arpa(estimate(count_ngrams([normalize_line(s) for s in TEXT], 3)), path)
    return CTCBeamDecoder(TOKENS, 0, lm=path, alpha=0.8, beta=1.0, beam_width=16)


def _stream(seed: int, sentences: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [noisy_logits(TEXT[int(rng.integers(len(TEXT)))].split(), TOKENS, rng)
             for _ in range(sentences)]
    return np.concatenate(parts)


def _run(redecoder: LMRedecoder, frames: np.ndarray, chunks: list[int]) -> list:
    updates, pos, i = [], 0, 0
    while pos < len(frames):
        n = chunks[i % len(chunks)]
        updates += redecoder.accept(frames[pos : pos + n])
        pos, i = pos + n, i + 1
    return updates + redecoder.flush()


def _committed(updates) -> list[Word]:
    return [w for u in updates for w in u.committed]


CONFIG = RedecodeConfig(redecode_every_frames=8, commit_lag_frames=30, max_lookback_frames=200)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 3), chunks=st.lists(st.integers(1, 90), min_size=1, max_size=6))
def test_chunking_invariance(decoder, seed, chunks):
    frames = _stream(seed)
    reference = _run(LMRedecoder(decoder, CONFIG), frames, [len(frames)])
    assert _run(LMRedecoder(decoder, CONFIG), frames, chunks) == reference


def test_commits_respect_the_lag_and_never_overlap(decoder):
    frames = _stream(5, sentences=5)
    updates = _run(LMRedecoder(decoder, CONFIG), frames, [13])
    for u in updates[:-1]:
        assert u.frame % CONFIG.redecode_every_frames == 0
        assert all(w.end_frame <= u.frame - CONFIG.commit_lag_frames for w in u.committed)
    words = _committed(updates)
    assert len(words) > 15
    for a, b in zip(words, words[1:]):
        assert a.start_frame < a.end_frame <= b.start_frame
    assert updates[-1].provisional == ()  # flush settles everything


def test_streaming_matches_offline_decode_on_separated_sentences(decoder):
    rng = np.random.default_rng(2)
    silence = np.full((60, len(TOKENS)), -9.0, np.float32)
    silence[:, 0] = 0.0
    parts, offline, offset = [], [], 0
    for text in TEXT[:5]:
        logits = noisy_logits(text.split(), TOKENS, rng)
        offline += [Word(w.text, w.start_frame, w.end_frame)
                    for w in decoder.decode(logits, frame_offset=offset)]
        parts += [logits, silence]
        offset += len(logits) + len(silence)
    updates = _run(LMRedecoder(decoder, CONFIG), np.concatenate(parts), [37])
    assert [w.text for w in _committed(updates)] == [w.text for w in offline]


def test_right_context_revises_a_provisional_word(tmp_path):
    path = tmp_path / "lm.arpa"
    text = ["cat"] * 6 + ["bat flies"] * 3 + ["cat naps"] * 3
    write_arpa(estimate(count_ngrams([s.split() for s in text], 3)), path)
    decoder = CTCBeamDecoder(TOKENS, 0, lm=path, alpha=1.0, beta=1.0)
    index = {t: i for i, t in enumerate(TOKENS)}
    spelled = "--B-AT-|-FLIES--"  # frame 2 is B or C equally; "flies" decides
    frames = np.full((len(spelled), len(TOKENS)), -9.0, np.float32)
    for t, ch in enumerate(spelled):
        frames[t, 0 if ch == "-" else index[ch]] = 0.0
    frames[2, index["C"]] = 0.0
    cfg = RedecodeConfig(redecode_every_frames=8, commit_lag_frames=30, max_lookback_frames=100)
    redecoder = LMRedecoder(decoder, cfg)
    first = redecoder.accept(frames[:8])
    assert [w.text for w in first[-1].provisional] == ["CAT"]
    later = redecoder.accept(frames[8:]) + redecoder.flush()
    revised = [r for u in later for r in u.revisions]
    assert revised and revised[0].old.text == "CAT" and [w.text for w in revised[0].new] == ["BAT"]
    assert [w.text for w in _committed(later)] == ["BAT", "FLIES"]


def test_memory_stays_bounded_over_a_long_stream(decoder):
    cfg = RedecodeConfig(redecode_every_frames=10, commit_lag_frames=20, max_lookback_frames=120)
    redecoder = LMRedecoder(CTCBeamDecoder(TOKENS, 0, beam_width=2, beam_size_token=4), cfg)
    silence = np.full((200, len(TOKENS)), -9.0, np.float32)
    silence[:, 0] = 0.0  # longer than the look-back: the anchor must move over it
    block = np.concatenate([_stream(7, sentences=2), silence])
    most = 0
    for _ in range(20):
        redecoder.accept(block)
        most = max(most, redecoder.buffered_frames)
        assert len(redecoder._context) <= cfg.context_words
    assert redecoder.next_frame == 20 * len(block)
    assert most <= cfg.max_lookback_frames
    assert redecoder.dropped_frames == 0


def test_an_endless_word_is_cut_at_the_lookback(decoder):
    cfg = RedecodeConfig(redecode_every_frames=10, commit_lag_frames=20, max_lookback_frames=60)
    redecoder = LMRedecoder(CTCBeamDecoder(TOKENS, 0, beam_width=2, beam_size_token=4), cfg)
    frames = np.full((500, len(TOKENS)), -9.0, np.float32)
    frames[np.arange(500), 5 + np.arange(500) % 20] = 0.0  # letters, never a delimiter
    redecoder.accept(frames)
    assert redecoder.buffered_frames <= 60 and redecoder.dropped_frames > 0


def test_flush_twice_and_reset(decoder):
    redecoder = LMRedecoder(decoder, CONFIG)
    frames = _stream(1, sentences=1)
    redecoder.accept(frames)
    assert redecoder.flush()
    assert redecoder.flush() == []
    redecoder.reset()
    assert redecoder.next_frame == 0 and redecoder.buffered_frames == 0


def test_bad_input_and_config(decoder):
    with pytest.raises(ValueError, match="symbols per frame"):
        LMRedecoder(decoder).accept(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(frames, vocab\)"):
        LMRedecoder(decoder).accept(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="max_lookback_frames"):
        RedecodeConfig(commit_lag_frames=50, max_lookback_frames=60)
    with pytest.raises(ValueError, match="redecode_every_frames"):
        RedecodeConfig(redecode_every_frames=0)
