"""CTC vocabulary decoding (with offsets) and the feature extractor, against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import CTCVocab, FeatureExtractor
from tests.tiny_checkpoints import LIBRI_VOCAB, write_preprocessor, write_vocab

VOCAB = CTCVocab.from_dict(LIBRI_VOCAB)
ID = LIBRI_VOCAB


def _ids(text_with_blanks: str) -> list[int]:
    """'HH_EL_LO' -> ids; '_' is the blank, ' ' the delimiter."""
    return [0 if c == "_" else ID["|" if c == " " else c] for c in text_with_blanks]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tok")
    write_vocab(folder)
    return transformers.Wav2Vec2CTCTokenizer.from_pretrained(folder)


def test_doubled_letter_separated_by_blank_survives():
    ids = _ids("_HH_EL_LLO_  _WOR_LD_")
    assert VOCAB.decode(ids) == "HELLO WORLD"
    assert VOCAB.decode(ids, skip_special_tokens=True) == "HELLO WORLD"  # not transformers' "HELO WORLD"


def test_repeats_merge_and_blanks_vanish():
    assert VOCAB.decode(_ids("AAA___AAB")) == "AAB"
    assert VOCAB.decode(_ids("____")) == ""
    assert VOCAB.decode([]) == ""
    assert VOCAB.decode(_ids("  A  ")) == "A"
    assert VOCAB.decode([ID["<unk>"], ID["A"]]) == "<unk>A"
    assert VOCAB.decode([ID["<unk>"], ID["A"]], skip_special_tokens=True) == "A"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        VOCAB.decode([40])


def test_offsets_in_frames_and_seconds():
    text, chars, words = VOCAB.decode_with_offsets(_ids("_HH_I__ _YO_U"))
    assert text == "HI YOU"
    assert [(c.char, c.start_frame, c.end_frame) for c in chars][:3] == [("H", 1, 3), ("I", 4, 5), (" ", 7, 8)]
    assert [(w.text, w.start_frame, w.end_frame) for w in words] == [("HI", 1, 5), ("YOU", 9, 13)]
    assert words[1].start_s == pytest.approx(0.18) and words[1].end_s == pytest.approx(0.26)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0, 0, 0, 4, 5, 6, 7, 15, 15, 27]), max_size=40))
def test_text_and_offsets_match_transformers_default_decode(hf_tokenizer, ids):
    ours_text, chars, words = VOCAB.decode_with_offsets(ids)
    theirs = hf_tokenizer.decode(ids, output_char_offsets=True, output_word_offsets=True)
    assert ours_text == hf_tokenizer.decode(ids) == theirs.text
    assert [(c.char, c.start_frame, c.end_frame) for c in chars] == [
        (o["char"], o["start_offset"], o["end_offset"]) for o in theirs.char_offsets]
    assert [(w.text, w.start_frame, w.end_frame) for w in words] == [
        (o["word"], o["start_offset"], o["end_offset"]) for o in theirs.word_offsets]


def test_vocab_from_folder_and_bad_vocab(tmp_path):
    write_vocab(tmp_path)
    vocab = CTCVocab.from_pretrained(tmp_path)
    assert vocab.blank_id == 0 and vocab.delimiter == "|" and vocab.tokens[5] == "E"
    with pytest.raises(ValueError, match="without gaps"):
        CTCVocab.from_dict({"<pad>": 0, "A": 2})
    with pytest.raises(ValueError, match="blank token"):
        CTCVocab.from_dict({"A": 0, "B": 1})


def test_feature_extractor_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    audio = [rng.normal(0.1, 0.3, 16000).astype(np.float64), rng.normal(0, 0.05, 9000).astype(np.float32)]
    for normalize, with_mask in ((True, True), (False, True), (True, False)):
        write_preprocessor(tmp_path, normalize, with_mask)
        ours = FeatureExtractor.from_pretrained(tmp_path)
        theirs = transformers.Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
        values, mask = ours(audio if with_mask else audio[:1], sampling_rate=16000)
        ref = theirs(audio if with_mask else audio[:1], sampling_rate=16000, padding=True, return_tensors="pt")
        assert values.dtype == torch.float32
        assert torch.equal(values, ref.input_values)
        if with_mask:
            assert torch.equal(mask, ref.attention_mask.long())
        else:
            assert mask is None


def test_feature_extractor_normalises_each_item_without_its_padding():
    fe = FeatureExtractor(do_normalize=True, return_attention_mask=False)
    short = np.linspace(-1, 1, 800)
    values, _ = fe([np.ones(1600) * 0.3 + np.sin(np.arange(1600)), short])
    alone, _ = fe(short)
    assert torch.equal(values[1, :800], alone[0]) and torch.all(values[1, 800:] == 0)


def test_feature_extractor_errors():
    fe = FeatureExtractor()
    with pytest.raises(ValueError, match="8000 Hz"):
        fe(np.zeros(100), sampling_rate=8000)
    with pytest.raises(ValueError, match="1-D"):
        fe([np.zeros((2, 100))])
    with pytest.raises(ValueError, match="empty"):
        fe([np.zeros(0)])
