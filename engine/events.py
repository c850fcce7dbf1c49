"""The engine's output values: frozen events that sinks (TUI, websocket feed, files) render.

Every event carries integer frame times (20 ms frames since the start of the stream). A caption
revision names the caption it changes by id and carries only the fields that changed, so a sink
can update what it already showed. `event_to_dict` gives the wire form used by the JSON feed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Union

from engine.timebase import frames_to_seconds


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word on the shared 20 ms frame grid; `end_frame` is exclusive."""

    text: str
    start_frame: int
    end_frame: int
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class CaptionPartial:
    """The current guess for the uncommitted tail; replaces the previous partial of the stream."""

    text: str
    start_frame: int
    end_frame: int
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class CaptionFinal:
    """Committed words of one speaker turn segment; never changes except through a revision."""

    caption_id: int
    text: str
    words: tuple[Word, ...]
    start_frame: int
    end_frame: int
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class CaptionRevision:
    """A change to an already emitted final caption: only the fields named in `changed` differ."""

    caption_id: int
    changed: tuple[str, ...]
    text: str | None = None
    words: tuple[Word, ...] | None = None
    speaker: str | None = None


def apply_revision(caption: CaptionFinal, revision: CaptionRevision) -> CaptionFinal:
    """`caption` as it stands after `revision`: the one reducer every sink (TUI, files, feed
    exports, evaluations) and test uses, so they all show the same captions.

    Only the fields named in `changed` move (a `None` text or words is not a change). A speaker
    change that brings no words of its own relabels the caption's words, so a caption and its
    words never disagree; words that come with the revision keep their own labels.
    """
    if revision.caption_id != caption.caption_id:
        raise ValueError(f"revision of caption {revision.caption_id} applied to caption {caption.caption_id}")
    changed = set(revision.changed)
    text = revision.text if "text" in changed and revision.text is not None else caption.text
    new_words = "words" in changed and revision.words is not None
    words = revision.words if new_words else caption.words
    speaker = revision.speaker if "speaker" in changed else caption.speaker
    if "speaker" in changed and not new_words:
        words = tuple(Word(w.text, w.start_frame, w.end_frame, speaker) for w in words)
    return CaptionFinal(caption.caption_id, text, words, caption.start_frame, caption.end_frame, speaker)


@dataclass(frozen=True, slots=True)
class SpeakerActivity:
    """Per-frame speaker activity probabilities for a settled span, one row per frame."""

    start_frame: int
    speakers: tuple[str, ...]
    probs: tuple[tuple[float, ...], ...]  # (frames, len(speakers))


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    """A settled stretch of one speaker's speech; turns of different speakers may overlap."""

    turn_id: int
    speaker: str
    start_frame: int
    end_frame: int
    overlap: bool = False


@dataclass(frozen=True, slots=True)
class SpeakerMatch:
    """A speaker track matched (or not) against the enrolled voiceprints."""

    track: str
    name: str | None
    score: float
    threshold: float
    accepted: bool
    candidates: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Stats:
    """Throughput and latency figures; the only event whose values depend on wall time."""

    audio_frames: int
    windows: int
    rtf: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    dropped_samples: int = 0
    degraded: tuple[str, ...] = ()


Event = Union[
    CaptionPartial, CaptionFinal, CaptionRevision, SpeakerActivity, SpeakerTurn, SpeakerMatch, Stats
]

EVENT_TYPES: dict[type, str] = {
    CaptionPartial: "caption_partial",
    CaptionFinal: "caption_final",
    CaptionRevision: "caption_revision",
    SpeakerActivity: "speaker_activity",
    SpeakerTurn: "speaker_turn",
    SpeakerMatch: "speaker_match",
    Stats: "stats",
}

_FRAME_FIELDS = ("start_frame", "end_frame")


def _plain(value: Any) -> Any:
    if isinstance(value, Word):
        return _with_seconds({f.name: getattr(value, f.name) for f in fields(value)})
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _with_seconds(d: dict[str, Any]) -> dict[str, Any]:
    for name in _FRAME_FIELDS:
        if name in d and isinstance(d[name], int):
            d[name.replace("_frame", "_s")] = round(frames_to_seconds(d[name]), 3)
    return d


def event_to_dict(event: Event) -> dict[str, Any]:
    """The JSON-ready wire form: `type`, the event's fields, and seconds beside every frame time."""
    d: dict[str, Any] = {"type": EVENT_TYPES[type(event)]}
    for f in fields(event):
        d[f.name] = _plain(getattr(event, f.name))
    return _with_seconds(d)
