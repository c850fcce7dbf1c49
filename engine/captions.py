"""Greedy CTC decoding that continues across window commits, word by word.

The stream hands over each committed frame exactly once (`commit`), in order; the decoder keeps
the previous frame's symbol, so a repeated symbol or a blank at a seam collapses exactly as it
would inside one window, and no word is duplicated or lost at a join. A word is final once a
word delimiter (or `word_gap_frames` of silence) follows it; `partial` decodes the pending word
plus the uncommitted tail without changing any state; `flush` finalises the pending word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.events import Word
from engine.model_side import Vocab


@dataclass(frozen=True, slots=True)
class PartialText:
    """The decoder's guess for everything not yet final."""

    text: str
    start_frame: int
    end_frame: int


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

    def __init__(self, vocab: Vocab, word_gap_frames: int = 15) -> None:
        if word_gap_frames < 1:
            raise ValueError(f"word_gap_frames must be >= 1, got {word_gap_frames}")
        self.vocab = vocab
        self.word_gap_frames = word_gap_frames
        self._g = _Greedy()

    @property
    def next_frame(self) -> int:
        """The first frame not yet committed."""
        return self._g.next_frame

    def reset(self) -> None:
        self._g = _Greedy()

    def commit(self, start_frame: int, log_probs: np.ndarray) -> list[Word]:
        """Take frames [start_frame, start_frame + len(log_probs)) and return the words they end.

        Frames must arrive in order, each once: a gap or an overlap raises, because either would
        lose or duplicate text.
        """
        if start_frame != self._g.next_frame:
            raise ValueError(f"commit at frame {start_frame}, expected frame {self._g.next_frame}")
        return self._run(self._g, start_frame, np.asarray(log_probs).argmax(axis=-1))

    def partial(self, start_frame: int, log_probs: np.ndarray) -> PartialText:
        """Decode the pending word plus tail frames starting at `start_frame` (no state change)."""
        g = self._g.copy()
        ids = np.asarray(log_probs).argmax(axis=-1)
        if start_frame != g.next_frame:
            raise ValueError(f"partial at frame {start_frame}, expected frame {g.next_frame}")
        words = self._run(g, start_frame, ids)
        if g.chars:
            words.append(Word("".join(g.chars), g.start, g.end))
        if not words:
            return PartialText("", start_frame, start_frame + len(ids))
        return PartialText(
            " ".join(w.text for w in words), words[0].start_frame, max(start_frame + len(ids), words[-1].end_frame)
        )

    def flush(self) -> list[Word]:
        """Finalise the pending word, if any (end of stream)."""
        g = self._g
        words = [Word("".join(g.chars), g.start, g.end)] if g.chars else []
        g.chars = []
        g.prev_id = None
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
