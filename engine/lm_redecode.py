"""Streaming LM re-decoding of committed CTC frames: words settle a fixed lag behind the audio.

Greedy captions are final as soon as their frames are committed; a word LM needs right context, so
this module re-decodes a bounded look-back of committed frames with a beam decoder (e.g.
`models.lm.CTCBeamDecoder`) and commits the words that end at least `commit_lag_frames` before the
newest frame. Pure: no I/O, no clock; deterministic.

API (engine side)::

    redecoder = LMRedecoder(decoder, RedecodeConfig(redecode_every_frames=10, commit_lag_frames=50))
    for update in redecoder.accept(log_probs):   # (frames, vocab) committed CTC frames, in order
        update.frame        # frames decoded so far (a multiple of redecode_every_frames)
        update.committed    # newly final words (engine.events.Word), in order; never change again
        update.provisional  # the current guess for the words after them; replaces the last one
        update.revisions    # provisional words shown before that changed, and what replaced them
    redecoder.flush()       # decode the rest and commit every word (end of stream)
    redecoder.reset()

Chunking invariance: decodes happen only when the frame count reaches a multiple of
`redecode_every_frames`, on frames [anchor, that multiple), so the same frames fed in any chunk
sizes give the same list of updates. The anchor is the end of the last committed word (moved over
the silence after it), and the last committed words are passed to the decoder as LM history, so
nothing is decoded twice and no word is lost or duplicated at a commit. Bounded memory: only frames
from the anchor on are kept; the anchor trails the newest frame by at most `commit_lag_frames` plus
the first uncommitted word, and never more than `max_lookback_frames` (a longer "word" is cut and
its older frames dropped, counted in `dropped_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from engine.events import Word


class DecodedWordLike(Protocol):
    text: str
    start_frame: int
    end_frame: int


class BeamDecoder(Protocol):
    """What the re-decoder needs of a decoder (`models.lm.CTCBeamDecoder` fits)."""

    def decode(self, log_probs: np.ndarray, frame_offset: int = 0,
               context: Sequence[str] = ()) -> Sequence[DecodedWordLike]: ...


@dataclass(frozen=True, slots=True)
class RedecodeConfig:
    """When to re-decode, how long words stay provisional, and the look-back bound (in frames).

    Defaults: every 10 frames (200 ms); words settle 50 frames (1 s) after they end; at most 500
    frames (10 s) are re-decoded; the 2 last committed words are LM history (a trigram's context),
    unless 25 frames (0.5 s) or more of silence followed them: then the LM starts a new sentence
    (match the decoder's `pause_frames`).
    """

    redecode_every_frames: int = 10
    commit_lag_frames: int = 50
    max_lookback_frames: int = 500
    context_words: int = 2
    sentence_gap_frames: int = 25

    def __post_init__(self) -> None:
        if self.redecode_every_frames < 1:
            raise ValueError(f"redecode_every_frames must be >= 1, got {self.redecode_every_frames}")
        if self.commit_lag_frames < 0:
            raise ValueError(f"commit_lag_frames must be >= 0, got {self.commit_lag_frames}")
        if self.sentence_gap_frames < 1:
            raise ValueError(f"sentence_gap_frames must be >= 1, got {self.sentence_gap_frames}")
        if self.context_words < 0:
            raise ValueError(f"context_words must be >= 0, got {self.context_words}")
        least = self.commit_lag_frames + 2 * self.redecode_every_frames
        if self.max_lookback_frames < least:
            raise ValueError(
                f"max_lookback_frames ({self.max_lookback_frames}) must be at least commit_lag_frames "
                f"+ 2 * redecode_every_frames ({least})")


@dataclass(frozen=True, slots=True)
class WordRevision:
    """A provisional word shown earlier that the latest decode changed: `new` now covers its frames
    (empty when the word disappeared)."""

    old: Word
    new: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class RedecodeUpdate:
    """The result of one re-decode over frames [.., frame)."""

    frame: int
    committed: tuple[Word, ...]
    provisional: tuple[Word, ...]
    revisions: tuple[WordRevision, ...]


class LMRedecoder:
    """Per-stream state of LM re-decoding; the decoder may be shared between streams."""

    def __init__(self, decoder: BeamDecoder, config: RedecodeConfig = RedecodeConfig(),
                 vocab_size: int | None = None) -> None:
        self.decoder = decoder
        self.config = config
        self.vocab_size = vocab_size if vocab_size is not None else getattr(decoder, "vocabulary_size", None)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame accepted is frame 0 of a new stream."""
        self._frames = np.zeros((0, self.vocab_size or 0), dtype=np.float32)  # frames [anchor, next)
        self._anchor = 0
        self._next_frame = 0
        self._context: tuple[str, ...] = ()
        self._last_end: int | None = None  # end frame of the last committed word
        self._shown: tuple[Word, ...] = ()
        self.dropped_frames = 0
        self.frames_decoded = 0  # total window frames passed to the decoder (a cost figure)

    @property
    def next_frame(self) -> int:
        """The index the next accepted frame will have."""
        return self._next_frame

    @property
    def anchor_frame(self) -> int:
        """Frames before this are settled: everything from here on may still be re-decoded."""
        return self._anchor

    @property
    def buffered_frames(self) -> int:
        """Frames held for re-decoding (bounded by `max_lookback_frames`)."""
        return len(self._frames)

    def accept(self, log_probs: np.ndarray) -> list[RedecodeUpdate]:
        """Take the next committed frames (frames, vocab); return one update per decode boundary
        reached."""
        arr = np.asarray(log_probs, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"log_probs must be (frames, vocab), got shape {arr.shape}")
        if self.vocab_size is None:
            self.vocab_size = arr.shape[1]
            self._frames = self._frames.reshape(0, self.vocab_size)
        if arr.shape[1] != self.vocab_size:
            raise ValueError(f"log_probs has {arr.shape[1]} symbols per frame, expected {self.vocab_size}")
        every = self.config.redecode_every_frames
        updates: list[RedecodeUpdate] = []
        pos = 0
        while pos < len(arr):
            boundary = (self._next_frame // every + 1) * every
            take = min(len(arr) - pos, boundary - self._next_frame)
            self._frames = np.concatenate([self._frames, arr[pos : pos + take]])
            self._next_frame += take
            pos += take
            if self._next_frame == boundary:
                updates.append(self._redecode(final=False))
        return updates

    def flush(self) -> list[RedecodeUpdate]:
        """Decode the remaining frames and commit every word; the stream may go on afterwards."""
        if self._next_frame == self._anchor:  # nothing undecided (provisional words lie after it)
            return []
        return [self._redecode(final=True)]

    def _redecode(self, final: bool) -> RedecodeUpdate:
        cfg = self.config
        end = self._next_frame
        if end - self._anchor > cfg.max_lookback_frames:
            cut = end - cfg.max_lookback_frames
            self.dropped_frames += cut - self._anchor
            self._drop_before(cut)
        window = self._frames
        self.frames_decoded += len(window)
        context = self._context
        if self._last_end is None or self._anchor - self._last_end >= cfg.sentence_gap_frames:
            context = ()  # a long pause: the next words start a new sentence for the LM
        decoded = self.decoder.decode(window, frame_offset=self._anchor, context=context) \
            if len(window) else []
        words = [Word(w.text, int(w.start_frame), int(w.end_frame)) for w in decoded]
        cutoff = end if final else end - cfg.commit_lag_frames
        n_commit = 0
        while n_commit < len(words) and words[n_commit].end_frame <= cutoff:
            n_commit += 1
        committed, provisional = tuple(words[:n_commit]), tuple(words[n_commit:])
        revisions = self._revisions(committed + provisional)
        if committed:
            for word in committed:
                gap = word.start_frame - (self._last_end if self._last_end is not None else 0)
                if gap >= cfg.sentence_gap_frames:
                    context = ()
                context = (context + (word.text,))[-cfg.context_words:] if cfg.context_words else ()
                self._last_end = word.end_frame
            self._context = context
            self._drop_before(committed[-1].end_frame)
        # Skip the silence before the next word: nothing there can become a word any more.
        quiet_until = provisional[0].start_frame if provisional else end
        self._drop_before(min(quiet_until, max(cutoff, self._anchor)))
        self._shown = provisional
        return RedecodeUpdate(end, committed, provisional, revisions)

    def _revisions(self, now: tuple[Word, ...]) -> tuple[WordRevision, ...]:
        current = set(now)
        out = []
        for old in self._shown:
            if old not in current:
                new = tuple(w for w in now
                            if w.start_frame < old.end_frame and old.start_frame < w.end_frame)
                out.append(WordRevision(old, new))
        return tuple(out)

    def _drop_before(self, frame: int) -> None:
        if frame > self._anchor:
            self._frames = self._frames[frame - self._anchor :]
            self._anchor = frame
