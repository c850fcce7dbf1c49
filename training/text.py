"""Text for the synthetic corpus: sentence extraction from local sources and CTC normalisation.

Sources are Debian's `fortunes` (sentences) and `wamerican` (a word list); both are installed by
the project's set-up, so the corpus is rebuilt offline. Transcripts use the standard wav2vec2
character layout: upper-case letters, apostrophe, and `|` between words (see `CTC_TOKENS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDLIST_PATH = Path("/usr/share/dict/american-english")

# The 32-token character vocabulary of wav2vec2/UniSpeech-SAT CTC checkpoints (blank `<pad>` = 0).
CTC_TOKENS: tuple[str, ...] = (
    "<pad>", "<s>", "</s>", "<unk>", "|",
    "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G",
    "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
)
ALLOWED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")

# Plain everyday English written for this project (never used for training or for the LM), so
# test figures are not flattered by the style of the training text.
EVERYDAY_SENTENCES: tuple[str, ...] = (
    "can you pass me the salt please",
    "i will call you back in ten minutes",
    "the bus was late again this morning",
    "we need to buy milk and bread on the way home",
    "did you remember to lock the front door",
    "my sister is coming to visit next weekend",
    "let's meet at the coffee shop near the station",
    "it looks like it is going to rain today",
    "please turn off the lights when you leave",
    "the meeting has been moved to thursday afternoon",
    "i forgot my umbrella at the office",
    "how much does this jacket cost",
    "could you send me the report before lunch",
    "the children are playing in the garden",
    "we watched a funny movie last night",
    "don't forget to water the plants",
    "the train to the city leaves at noon",
    "i would like a cup of tea with lemon",
    "she is learning to play the piano",
    "the kitchen window is open",
    "he parked the car behind the house",
    "we are going to the beach on sunday",
    "can you help me carry these boxes upstairs",
    "the doctor said i should get more sleep",
    "my phone battery is almost empty",
    "they painted the fence green last summer",
    "what time does the shop close tonight",
    "i am sorry but i can't come to the party",
    "the soup needs a little more pepper",
    "our neighbours have a very friendly dog",
    "please write your name at the top of the page",
    "the library is closed on public holidays",
    "i think we should leave a bit earlier",
    "he always reads the newspaper at breakfast",
    "the printer on the second floor is broken again",
    "you can leave your coat on the chair",
    "we ran out of coffee yesterday",
    "the baby finally fell asleep",
    "turn left at the next traffic light",
    "thank you for dinner it was lovely",
    "the new road will open in the spring",
    "my brother works at the hospital downtown",
)

_WS = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")
_BAD_CHARS = re.compile(r"[0-9@#$%^&*_=+<>{}\[\]|\\/~`]")


def normalize_transcript(text: str) -> str:
    """Return `text` as a CTC transcript: upper-case letters, apostrophes and single spaces.

    Hyphens become spaces, other punctuation is dropped, and apostrophes not inside a word are
    removed. Raises ValueError when characters outside the alphabet remain (digits, symbols).
    """
    t = text.replace("\u2019", "'").replace("-", " ").upper()
    t = re.sub(r"[.,;:!?\"()]", " ", t)
    t = re.sub(r"(?<![A-Z])'|'(?![A-Z])", " ", t)
    t = _WS.sub(" ", t).strip()
    bad = set(t) - ALLOWED_CHARS
    if bad:
        raise ValueError(f"transcript has characters outside the CTC alphabet: {sorted(bad)!r} in {text!r}")
    return t


def transcript_to_ctc(text: str) -> str:
    """Return a normalised transcript with `|` as the word delimiter (the vocab.json form)."""
    return normalize_transcript(text).replace(" ", "|")


def _clean_spoken(sentence: str) -> str | None:
    """Return a sentence fit to be spoken and transcribed exactly, or None when it is not.

    Rejects digits, symbols, acronyms (spoken letter by letter) and dotted abbreviations, whose
    pronunciation would not match their spelling.
    """
    s = _WS.sub(" ", sentence).strip().lstrip("-\"' ").rstrip("\"' ")
    if not s or _BAD_CHARS.search(s) or _ACRONYM.search(s.replace("I ", "i ")):
        return None
    if re.search(r"\b[A-Za-z]{1,3}\.\S|\b(Mr|Mrs|Dr|St|Jr|Sr|vs|etc|Ms|Prof|Mt)\.", s):
        return None
    try:
        norm = normalize_transcript(s)
    except ValueError:
        return None
    words = norm.split()
    if not 3 <= len(words) <= 16 or any(len(w) > 16 for w in words):
        return None
    return s


def fortune_raw_sentences(fortune_dir: Path = FORTUNE_DIR) -> Iterator[str]:
    """Yield every sentence of the fortune files as written (attributions dropped), in a stable order."""
    if not fortune_dir.is_dir():
        raise FileNotFoundError(f"fortune directory {fortune_dir} not found (install Debian's 'fortunes')")
    for path in sorted(fortune_dir.iterdir()):
        if path.suffix or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            if "--" in entry:  # drop attributions ("-- Mark Twain")
                entry = entry.split("--")[0]
            yield from _SENTENCE_END.split(_WS.sub(" ", entry))


def fortune_sentences(fortune_dir: Path = FORTUNE_DIR) -> list[str]:
    """Return the distinct speakable sentences of the fortune files, in a stable order.

    Deduplicated by normalised transcript, so two splits never share a transcript.
    """
    seen: set[str] = set()
    out: list[str] = []
    for sentence in fortune_raw_sentences(fortune_dir):
        s = _clean_spoken(sentence)
        if s is None:
            continue
        key = normalize_transcript(s)
        if key in seen or key in _EVERYDAY_KEYS:
            continue
        seen.add(key)
        out.append(s)
    return out


def dictionary_words(path: Path = WORDLIST_PATH) -> list[str]:
    """Return the lower-case alphabetic words of the system word list (no possessives)."""
    if not path.is_file():
        raise FileNotFoundError(f"word list {path} not found (install Debian's 'wamerican')")
    words = [w.strip() for w in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    return sorted({w for w in words if w.isascii() and w.isalpha() and w.islower() and 2 <= len(w) <= 12})


_EVERYDAY_KEYS = frozenset(normalize_transcript(s) for s in EVERYDAY_SENTENCES)
