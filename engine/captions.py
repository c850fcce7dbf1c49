"""Greedy CTC decoding that continues across window commits, word by word.

The stream hands over each committed frame exactly once (`commit`), in order; the decoder keeps
the previous frame's symbol, so a repeated symbol or a blank at a seam collapses exactly as it
would inside one window, and no word is duplicated or lost at a join. A word is final once a
word delimiter (or `word_gap_frames` of silence) follows it; `partial` decodes the pending word
plus the uncommitted tail without changing any state; `flush` finalises the pending word.

Partial text with a language model: given a `partial_decoder` (a beam decoder with a word LM,
e.g. `models.lm.CTCBeamDecoder` at a small beam), `partial(..., use_lm=True)` beam-decodes the
pending word's frames plus the tail instead, with the last final words as LM history, so the
guess a viewer reads first is spelled from the LM's words. Its work is bounded by the decoder's
beam and by the frames it sees: at most `partial_max_frames` (the newest ones). With
`use_lm=False` (the stream's choice under load) or no decoder, partials are greedy, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from engine.events import Word
from engine.model_side import Vocab


@dataclass(frozen=True, slots=True)
class PartialText:
    """The decoder's guess for everything not yet final; `words` with their frames."""

    text: str
    start_frame: int
    end_frame: int
    words: tuple[Word, ...] = ()
    lm: bool = False  # decoded with the language model (else greedy)


class PartialBeamDecoder(Protocol):
    """What partial decoding needs of a beam decoder (`models.lm.CTCBeamDecoder` fits)."""

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0,
               context: Sequence[str] = ()) -> Sequence: ...


class _Greedy:
    """The mutable part of greedy decoding; copied to decode a tail without committing it."""

    __slots__ = ("prev_id", "chars", "start", "end", "silent_run", "next_frame")

    def __init__(self) -> None:
        self.prev_id: int | None = None
        self.chars: list[str] = []
        self.start = 0  # first frame of the pending word
        self.end = 0  # one past the last frame of its last character
        self.silent_run = 0  # silent frames since the pending word's last character
        self.next_frame = 0  # the frame the decoder expects next

    def copy(self) -> "_Greedy":
        g = _Greedy()
        g.prev_id, g.chars, g.start, g.end = self.prev_id, list(self.chars), self.start, self.end
        g.silent_run, g.next_frame = self.silent_run, self.next_frame
        return g


class CaptionDecoder:
    """Greedy CTC over committed frames, producing final `Word`s and partial text."""

    def __init__(self, vocab: Vocab, word_gap_frames: int = 15,
                 partial_decoder: PartialBeamDecoder | None = None, partial_max_frames: int = 100,
                 context_words: int = 2) -> None:
        if word_gap_frames < 1:
            raise ValueError(f"word_gap_frames must be >= 1, got {word_gap_frames}")
        if partial_max_frames < 1:
            raise ValueError(f"partial_max_frames must be >= 1, got {partial_max_frames}")
        self.vocab = vocab
        self.word_gap_frames = word_gap_frames
        self.partial_decoder = partial_decoder
        self.partial_max_frames = partial_max_frames
        self.context_words = context_words
        self.partial_frames_decoded = 0  # frames given to the partial beam decoder (a cost figure)
        self.reset()

    @property
    def next_frame(self) -> int:
        """The first frame not yet committed."""
        return self._g.next_frame

    def reset(self) -> None:
        self._g = _Greedy()
        # With a partial decoder: committed frames of the pending word (at most
        # partial_max_frames, from frame _held_from) and the last final words (LM history).
        self._held = np.zeros((0, len(self.vocab.tokens)), dtype=np.float32)
        self._held_from = 0
        self._context: tuple[str, ...] = ()

    def commit(self, start_frame: int, log_probs: np.ndarray) -> list[Word]:
        """Take frames [start_frame, start_frame + len(log_probs)) and return the words they end.

        Frames must arrive in order, each once: a gap or an overlap raises, because either would
        lose or duplicate text.
        """
        if start_frame != self._g.next_frame:
            raise ValueError(f"commit at frame {start_frame}, expected frame {self._g.next_frame}")
        arr = np.asarray(log_probs)
        words = self._run(self._g, start_frame, arr.argmax(axis=-1))
        if self.partial_decoder is not None:
            self._hold(start_frame, arr, words)
        return words

    def _hold(self, start_frame: int, arr: np.ndarray, words: list[Word]) -> None:
        """Keep the committed frames of the pending word (bounded) and the last final words."""
        if words and self.context_words:
            self._context = (self._context + tuple(w.text for w in words))[-self.context_words:]
        g = self._g
        keep_from = g.start if g.chars else g.next_frame
        held = np.concatenate([self._held, arr.astype(np.float32, copy=False)]) if len(self._held) else \
            arr.astype(np.float32)
        held_from = self._held_from if len(self._held) else start_frame
        keep_from = max(keep_from, g.next_frame - self.partial_max_frames)
        self._held = held[max(0, keep_from - held_from):]
        self._held_from = max(keep_from, held_from)

    def partial(self, start_frame: int, log_probs: np.ndarray, use_lm: bool = True) -> PartialText:
        """Decode the pending word plus tail frames starting at `start_frame` (no state change):
        with the partial beam decoder when there is one and `use_lm`, else greedily."""
        if start_frame != self._g.next_frame:
            raise ValueError(f"partial at frame {start_frame}, expected frame {self._g.next_frame}")
        if self.partial_decoder is not None and use_lm:
            return self._partial_lm(start_frame, np.asarray(log_probs))
        g = self._g.copy()
        ids = np.asarray(log_probs).argmax(axis=-1)
        words = self._run(g, start_frame, ids)
        if g.chars:
            words.append(Word("".join(g.chars), g.start, g.end))
        if not words:
            return PartialText("", start_frame, start_frame + len(ids))
        return PartialText(
            " ".join(w.text for w in words), words[0].start_frame, max(start_frame + len(ids), words[-1].end_frame),
            tuple(words),
        )

    def _partial_lm(self, start_frame: int, tail: np.ndarray) -> PartialText:
        assert self.partial_decoder is not None
        end = start_frame + len(tail)
        frames = np.concatenate([self._held, tail.astype(np.float32, copy=False)]) if len(self._held) else \
            tail.astype(np.float32)
        first = self._held_from if len(self._held) else start_frame
        if len(frames) > self.partial_max_frames:  # bounded work: only the newest frames
            first += len(frames) - self.partial_max_frames
            frames = frames[-self.partial_max_frames:]
        self.partial_frames_decoded += len(frames)
        decoded = self.partial_decoder.decode(frames, frame_offset=first, context=self._context) if len(frames) else []
        words = tuple(Word(w.text, int(w.start_frame), int(w.end_frame)) for w in decoded)
        if not words:
            return PartialText("", start_frame, end, (), True)
        return PartialText(" ".join(w.text for w in words), words[0].start_frame,
                           max(end, words[-1].end_frame), words, True)

    def flush(self) -> list[Word]:
        """Finalise the pending word, if any (end of stream)."""
        g = self._g
        words = [Word("".join(g.chars), g.start, g.end)] if g.chars else []
        g.chars = []
        g.prev_id = None
        self._held = self._held[:0]
        self._context = ()
        return words

    def _run(self, g: _Greedy, start_frame: int, ids: np.ndarray) -> list[Word]:
        vocab, words = self.vocab, []
        for i, tok in enumerate(ids.tolist()):
            frame = start_frame + i
            if tok == g.prev_id:
                if g.chars and not vocab.is_silent(tok) and tok != vocab.delimiter_id:
                    g.end = frame + 1  # a held character
                elif g.chars:
                    g.silent_run += 1
            elif tok == vocab.delimiter_id:
                if g.chars:
                    words.append(Word("".join(g.chars), g.start, g.end))
                    g.chars = []
            elif vocab.is_silent(tok):
                if g.chars:
                    g.silent_run += 1
            else:
                if not g.chars:
                    g.start = frame
                g.chars.append(vocab.tokens[tok])
                g.end = frame + 1
                g.silent_run = 0
            if g.chars and g.silent_run >= self.word_gap_frames:
                words.append(Word("".join(g.chars), g.start, g.end))
                g.chars = []
            g.prev_id = tok
        g.next_frame = start_frame + len(ids)
        return words
