"""CTC vocabulary from vocab.json and greedy decoding with character and word frame offsets.

Decoding merges repeated ids first, then removes the blank (pad) token, so "L <pad> L" stays two
letters; transformers' `decode(skip_special_tokens=True)` drops the blank before merging and turns
"HELLO" into "HELO", which we do not copy. `|` (the word delimiter) becomes a space.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Iterable, Sequence

from models.loading import CheckpointError, load_json, resolve_pretrained

VOCAB_NAME = "vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_NAME = "special_tokens_map.json"
FRAME_S = 0.02  # one output frame = 320 samples at 16 kHz


class _FrameSeconds:
    """Seconds of a span's integer frames, for display and wire formats."""

    __slots__ = ()
    start_frame: int
    end_frame: int

    @property
    def start_s(self) -> float:
        return self.start_frame * FRAME_S

    @property
    def end_s(self) -> float:
        return self.end_frame * FRAME_S


@dataclass(frozen=True, slots=True)
class CharSpan(_FrameSeconds):
    """One decoded character and its frames [start_frame, end_frame)."""

    char: str
    start_frame: int
    end_frame: int


@dataclass(frozen=True, slots=True)
class WordSpan(_FrameSeconds):
    """One decoded word and its frames [start_frame, end_frame) on the 20 ms grid (greedy decoding
    here, beam search in `models.lm`)."""

    text: str
    start_frame: int
    end_frame: int


@dataclass(frozen=True, slots=True)
class CTCVocab:
    """Token strings by id, the blank id and the word delimiter of a CTC head."""

    tokens: tuple[str, ...]
    blank_id: int = 0
    delimiter: str = "|"
    special_tokens: frozenset[str] = frozenset({"<pad>", "<s>", "</s>", "<unk>"})
    do_lower_case: bool = False

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("the vocabulary is empty")
        if not 0 <= self.blank_id < len(self.tokens):
            raise ValueError(f"blank id {self.blank_id} is outside the vocabulary of {len(self.tokens)} tokens")

    @classmethod
    def from_dict(cls, vocab: dict[str, int], pad_token: str = "<pad>", delimiter: str = "|",
                  special_tokens: Iterable[str] = (), do_lower_case: bool = False) -> "CTCVocab":
        """From vocab.json's {token: id} mapping; ids must be 0..V-1."""
        if not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError("vocab.json must map each token to an integer id (multi-language vocabs are not supported)")
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"vocab.json ids must be 0..{len(ids) - 1} without gaps or repeats")
        tokens = [""] * len(ids)
        for token, i in vocab.items():
            tokens[i] = token
        if pad_token not in vocab:
            raise ValueError(f"the blank token {pad_token!r} is not in vocab.json")
        specials = frozenset({pad_token, "<s>", "</s>", "<unk>", *special_tokens}) & set(vocab)
        return cls(tuple(tokens), vocab[pad_token], delimiter, specials, do_lower_case)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path) -> "CTCVocab":
        """Read vocab.json (and tokenizer_config.json / special_tokens_map.json when present)."""
        folder = resolve_pretrained(path_or_repo_id, weights=False)
        vocab = load_json(folder, VOCAB_NAME)
        settings: dict = {}
        for name in (SPECIAL_TOKENS_NAME, TOKENIZER_CONFIG_NAME):
            if (folder / name).exists():
                settings.update(load_json(folder, name))
        pad = settings.get("pad_token", "<pad>")
        pad = pad.get("content", "<pad>") if isinstance(pad, dict) else pad
        try:
            return cls.from_dict(vocab, pad_token=pad, delimiter=settings.get("word_delimiter_token", "|"),
                                 do_lower_case=bool(settings.get("do_lower_case", False)))
        except ValueError as exc:
            raise CheckpointError(f"{folder / VOCAB_NAME}: {exc}") from exc

    def _spans(self, ids: Sequence[int], skip_special_tokens: bool) -> list[CharSpan]:
        """Merge repeats, then drop blanks (and other specials if asked); delimiter -> ' '."""
        spans: list[CharSpan] = []
        frame = 0
        for token_id, group in groupby(int(i) for i in ids):
            n = sum(1 for _ in group)
            start, frame = frame, frame + n
            if token_id == self.blank_id:
                continue
            if not 0 <= token_id < len(self.tokens):
                raise ValueError(f"token id {token_id} is outside the vocabulary of {len(self.tokens)} tokens")
            token = self.tokens[token_id]
            if skip_special_tokens and token in self.special_tokens:
                continue
            char = " " if token == self.delimiter else (token.lower() if self.do_lower_case else token)
            spans.append(CharSpan(char, start, frame))
        return spans

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Greedy CTC text of per-frame ids (the argmax of the logits)."""
        return "".join(s.char for s in self._spans(ids, skip_special_tokens)).strip()

    def decode_with_offsets(
        self, ids: Sequence[int], skip_special_tokens: bool = False
    ) -> tuple[str, list[CharSpan], list[WordSpan]]:
        """(text, characters with frames, words with frames); frames are 20 ms output frames."""
        chars = self._spans(ids, skip_special_tokens)
        words: list[WordSpan] = []
        current: list[CharSpan] = []
        for span in chars + [CharSpan(" ", -1, -1)]:
            if span.char == " ":
                if current:
                    words.append(WordSpan("".join(c.char for c in current), current[0].start_frame,
                                          current[-1].end_frame))
                current = []
            else:
                current.append(span)
        return "".join(s.char for s in chars).strip(), chars, words
