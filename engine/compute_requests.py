"""What a stream asks of the model side: one window (or x-vector span) and the heads to run on it.

A `Stream` turns audio into `WindowRequest`s and results into events; the model side
(engine/scheduler.py) runs the pending requests of all streams in batches. Requests with equal
`key` (equal length, same heads) may share a forward: group-norm encoders must never see padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CTC, DIAR, VAD, XVEC = "ctc", "diar", "vad", "xvec"  # heads a request may ask for
SKIP = "skip"  # a caption window the degrade policy dropped: nothing to run, delivered empty


@dataclass(frozen=True, slots=True)
class SpanRequest:
    """A span tracker's x-vector to compute: frames [start_frame, end_frame) of the stream's audio
    (engine/span_speakers.py numbers them with `index`)."""

    index: int
    start_frame: int
    end_frame: int


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """One window to run: which heads, where it starts, its samples, and what it commits.

    `want` is a subset of {ctc, diar, vad}, or {xvec} alone (one x-vector of `samples`: a span of
    the span tracker when `span` is set, else the clean speech of an activity-tracker run), or {skip}.
    """

    stream_id: int
    seq: int
    want: frozenset[str]
    start_sample: int
    samples: np.ndarray  # (N,) float32, a private copy
    final: bool = False  # a flush window (shorter than a full window, commits to the end)
    span: SpanRequest | None = None  # for an x-vector request ({"xvec"}): the speaker span

    @property
    def key(self) -> tuple[int, frozenset[str]]:
        """Windows with equal keys may share a batch (equal length, same heads)."""
        return (len(self.samples), self.want)

    @property
    def computes(self) -> bool:
        """False for a skipped window, which is delivered with empty outputs."""
        return SKIP not in self.want

    @property
    def blocks_stream(self) -> bool:
        """An activity tracker's x-vector: its stream waits for it before taking further results."""
        return XVEC in self.want and self.span is None
