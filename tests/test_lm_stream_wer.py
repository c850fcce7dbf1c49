"""Slow: streaming LM re-decoding keeps the accuracy of offline beam search (its cost is printed;
bench/lm_beam.py measures it against a baseline).

Synthetic noisy CTC posteriors of held-out sentences from Debian's fortunes (the LM never saw
them), joined with short pauses into one long stream. Run with
`.venv/bin/python -m pytest -m slow tests/test_lm_stream_wer.py -s` to see the figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.lm_redecode import LMRedecoder, RedecodeConfig
from models.lm.arpa import count_ngrams, estimate, write_arpa
from models.lm.build import read_sentences, read_vocab
from models.lm.decoder import CTCBeamDecoder
from models.lm.synthetic_check import (
    LIBRI_TOKENS,
    edit_distance,
    greedy_words,
    noisy_logits,
    split_corpus,
)

FORTUNES = Path("/usr/share/games/fortunes")
WORDS = Path("/usr/share/dict/american-english")
TOKENS = list(LIBRI_TOKENS)


@pytest.mark.slow
def test_streaming_wer_matches_offline(tmp_path):
    files = sorted(str(p) for p in FORTUNES.glob("*") if p.is_file() and p.suffix not in (".dat", ".u8"))
    if not files:
        pytest.skip("Debian's fortunes package is not installed")
    sentences = [s for s in read_sentences(files, split_sentences=True) if 4 <= len(s) <= 20]
    train, test = split_corpus(sentences)
    test = test[:80]
    held_out = {" ".join(s) for s in test}
    train = [s for s in train if " ".join(s) not in held_out]
    lm = tmp_path / "lm.arpa.gz"
    extra = read_vocab(str(WORDS)) if WORDS.is_file() else []
    write_arpa(estimate(count_ngrams(train, 3), extra, prune=(0, 1)), lm)
    decoder = CTCBeamDecoder(TOKENS, 0, lm=lm, beam_width=32)  # the figures in docs/lm.md

    rng = np.random.default_rng(0)
    parts, ref = [], []
    for words in test:
        parts.append(noisy_logits(words, TOKENS, rng))
        pause = np.full((int(rng.integers(5, 30)), len(TOKENS)), -9.0, np.float32)
        pause[:, 0] = 0.0
        parts.append(pause)
        ref += [w.upper() for w in words]
    stream = np.concatenate(parts)

    offline = []
    for part in parts[::2]:
        offline += [w.text for w in decoder.decode(part)]
    redecoder = LMRedecoder(decoder, RedecodeConfig())
    t0 = time.perf_counter()
    updates = []
    for start in range(0, len(stream), 25):  # 0.5 s blocks of committed frames
        updates += redecoder.accept(stream[start : start + 25])
    updates += redecoder.flush()
    stream_s = time.perf_counter() - t0
    streamed = [w.text for u in updates for w in u.committed]

    wer = {name: edit_distance(ref, hyp) / len(ref)
           for name, hyp in (("greedy", greedy_words(stream, TOKENS)), ("offline", offline),
                             ("streaming", streamed))}
    audio_s = len(stream) / 50
    print(f"\n{len(test)} held-out sentences, {len(ref)} words, {audio_s:.0f} s of frames: "
          + ", ".join(f"WER {k} {v:.3f}" for k, v in wer.items())
          + f"; streaming re-decode {stream_s:.2f} s ({stream_s / audio_s * 1000:.1f} ms per "
          f"second of audio, {redecoder.frames_decoded / len(stream):.1f} frames decoded per frame)")
    assert wer["offline"] < 0.5 * wer["greedy"]
    assert wer["streaming"] <= wer["offline"] + 0.03
