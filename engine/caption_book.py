"""The captions a stream has sent and may still revise: grouping words, speaker labels, LM text.

Committed words become `CaptionFinal`s, one per run of words with the same speaker (or after a
pause of `caption_gap_frames`). A caption stays open for revision while its speakers may still
settle (the revise horizon) or while the language model has not settled its words; a revision
says which fields changed (`CaptionRevision`). Speakers come from a `who(start, end)` function of
the stream's speaker tracker, so this module knows nothing about trackers or models.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from engine.events import CaptionFinal, CaptionRevision, Event, Word

WhoFn = Callable[[int, int], "str | None"]  # speaker of frames [start, end), None if unknown


@dataclass(slots=True)
class _Caption:
    caption_id: int
    words: tuple[Word, ...]
    speaker: str | None
    start_frame: int = 0
    end_frame: int = 0
    lm_done: bool = False  # the language model has settled this caption's words


def majority(words: tuple[Word, ...]) -> str | None:
    """The speaker who holds the most frames of `words` (a known one on ties)."""
    weight: dict[str | None, int] = {}
    for w in words:
        weight[w.speaker] = weight.get(w.speaker, 0) + (w.end_frame - w.start_frame)
    if not weight:
        return None
    return max(weight, key=lambda s: (weight[s], s is not None))


class CaptionBook:
    """Open captions of one stream and the LM words not yet given to one."""

    def __init__(self, caption_gap_frames: int, with_lm: bool) -> None:
        self.caption_gap_frames = caption_gap_frames
        self.with_lm = with_lm
        self.captions: deque[_Caption] = deque()
        self._next_caption = 1
        self._lm_words: list[Word] = []  # LM-committed words not yet given to a caption

    def __len__(self) -> int:
        return len(self.captions)

    def finals(self, words: list[Word], who: WhoFn) -> list[Event]:
        """Group committed words into captions, one per run of words with the same speaker."""
        events: list[Event] = []
        labelled = [Word(w.text, w.start_frame, w.end_frame, who(w.start_frame, w.end_frame)) for w in words]
        group: list[Word] = []
        for w in labelled + [None]:  # type: ignore[list-item]
            if group and (
                w is None
                or w.speaker != group[-1].speaker
                or w.start_frame - group[-1].end_frame >= self.caption_gap_frames
            ):
                cap = _Caption(self._next_caption, tuple(group), group[0].speaker,
                               group[0].start_frame, group[-1].end_frame, lm_done=not self.with_lm)
                self._next_caption += 1
                self.captions.append(cap)
                events.append(CaptionFinal(
                    cap.caption_id, " ".join(x.text for x in group), cap.words,
                    group[0].start_frame, group[-1].end_frame, cap.speaker,
                ))
                group = []
            if w is not None:
                group.append(w)
        return events

    def revise(self, who: WhoFn) -> list[Event]:
        """Speaker labels may have settled or changed: revise captions whose speakers differ."""
        events: list[Event] = []
        for cap in self.captions:
            words = tuple(
                Word(w.text, w.start_frame, w.end_frame, who(w.start_frame, w.end_frame) or w.speaker)
                for w in cap.words
            )  # a known label is never revised back to unknown (None)
            if words == cap.words:
                continue
            speaker = majority(words)
            changed = ("words",) if speaker == cap.speaker else ("speaker", "words")
            cap.words, cap.speaker = words, speaker
            events.append(CaptionRevision(cap.caption_id, changed, words=words, speaker=speaker))
        return events

    def trim(self, settled_frame: int | None, horizon_frames: int) -> None:
        """Close captions nothing can revise any more: without speakers (`settled_frame` None)
        once the LM settled them, else once they end `horizon_frames` before the settled frame."""
        if settled_frame is None:
            while self.captions and self.captions[0].lm_done:
                self.captions.popleft()
            return
        while self.captions and self.captions[0].words[-1].end_frame < settled_frame - horizon_frames:
            self.captions.popleft()

    def lm_updates(self, committed: Iterable[Word], anchor: float, final: bool, who: WhoFn) -> list[Event]:
        """LM-committed words replace the greedy words of the captions they fall in.

        A caption is settled once the re-decoder's anchor passed its end (no later decode can touch
        its frames); it gets the committed words whose middle lies before its end and after the
        previous caption's end. Where the text differs, a CaptionRevision carries text and words.
        """
        self._lm_words += list(committed)
        events: list[Event] = []
        pending = [c for c in self.captions if not c.lm_done]
        for i, cap in enumerate(pending):
            if cap.end_frame > anchor:
                break
            last = final and i == len(pending) - 1
            mine = [w for w in self._lm_words if last or (w.start_frame + w.end_frame) / 2 < cap.end_frame]
            self._lm_words = [w for w in self._lm_words if w not in mine]
            cap.lm_done = True
            new_text = " ".join(w.text for w in mine)
            if not mine or new_text == " ".join(w.text for w in cap.words):
                continue
            words = tuple(Word(w.text, w.start_frame, w.end_frame, who(w.start_frame, w.end_frame)) for w in mine)
            speaker = majority(words) or cap.speaker
            changed = ("text", "words") if speaker == cap.speaker else ("text", "words", "speaker")
            cap.words, cap.speaker = words, speaker
            events.append(CaptionRevision(cap.caption_id, changed, text=new_text, words=words, speaker=speaker))
        return events
