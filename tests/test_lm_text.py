"""The extra LM text: only sentences the corpus rejects, never a held-out transcript."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.lm_text import extra_lm_sentences, plain_words
from training.text import fortune_sentences

LONG = ("Whenever you find yourself on the side of the majority it is time to pause and reflect "
        "on what you are doing there")


def write_fortunes(folder: Path, entries: list[str]) -> Path:
    folder.mkdir()
    (folder / "sayings").write_text("\n%\n".join(entries) + "\n", encoding="utf-8")
    (folder / "sayings.dat").write_bytes(b"\x00binary index")  # files with a suffix are not text
    return folder


def test_plain_words_keeps_inner_apostrophes_only() -> None:
    assert plain_words("Don't 'quote' me -- it’s U.S.A. stuff!") == ["don't", "quote", "me", "it's", "u", "s", "a", "stuff"]


def test_extra_sentences_are_the_rejected_ones_minus_held_out(tmp_path: Path) -> None:
    fortunes = write_fortunes(tmp_path / "fortunes", [
        "The cat sat on the mat.",                                 # speakable: a corpus sentence
        LONG + ".\n\t\t-- Mark Twain",                            # too long to speak: extra text
        "He paid 20 dollars for a very long and winding road trip.",  # digits: unknown spoken form
        "He said the butler did it in the library with a rope and then he went home to sleep all week.",  # holds held-out words
        "I saw the NASA rocket launch from the beach.",            # acronym: extra text
        LONG + "!",                                               # duplicate line
    ])
    held_out = ["THE BUTLER DID IT"]
    lines = extra_lm_sentences(held_out, fortune_dir=fortunes)

    assert lines == [" ".join(plain_words(LONG)), "i saw the nasa rocket launch from the beach"]
    spoken = {" ".join(plain_words(s)) for s in fortune_sentences(fortunes)}
    assert spoken == {"the cat sat on the mat"} and not spoken & set(lines)
    assert not any("mark twain" in line for line in lines)
    assert any("butler" in line for line in extra_lm_sentences([], fortune_dir=fortunes))


def test_held_out_match_is_by_whole_words(tmp_path: Path) -> None:
    fortunes = write_fortunes(tmp_path / "fortunes", [
        "A catalogue of every single thing that went wrong at the office party was written up by Tom afterwards.",
    ])
    assert extra_lm_sentences(["A CAT"], fortune_dir=fortunes)  # "a cat" is not a word run of "a catalogue"
    assert extra_lm_sentences(["the office party"], fortune_dir=fortunes) == []


def test_missing_fortunes_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fortunes"):
        extra_lm_sentences([], fortune_dir=tmp_path / "nowhere")
