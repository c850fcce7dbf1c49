"""Online speaker activity, turns and identity from the activity head's channels (`--speaker-tracking activity`).

- `ActivityAggregator` (engine/activity_alignment.py) aligns and averages the overlapping windows;
- `ChannelTurns`: hysteresis (onset/offset) and minimum on/off durations turn a channel's settled
  activity into runs (one speaker's stretch of speech); overlapping runs of two channels are kept;
- `SpeakerClusters` (engine/speaker_clusters.py) names a run from the x-vector of its
  single-speaker audio.
`ActivitySpeakerTracker` ties them together and answers "who spoke frames [a, b)?" for captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np

from engine.activity_alignment import ActivityAggregator
from engine.buffers import RollingArray
from engine.config import MIN_XVECTOR_SAMPLES, SpeakerConfig
from engine.events import SpeakerActivity, SpeakerTurn
from engine.speaker_clusters import SpeakerClusters, unit_vector
from engine.timebase import FRAME_SAMPLES


@dataclass(slots=True)
class Run:
    """One channel's stretch of speech (mutable bookkeeping, not an event)."""

    run_id: int
    channel: int
    start: int
    end: int | None = None
    label: str | None = None
    clean: list[np.ndarray] = field(default_factory=list)
    clean_samples: int = 0
    next_embed_at: int = 0
    embeddings: int = 0
    vector: np.ndarray | None = None  # unit embedding of the run's latest x-vector
    segment: list[np.ndarray] = field(default_factory=list)  # clean speech since the last change check
    segment_samples: int = 0
    segment_start: int | None = None  # frame of the segment's first clean piece


class ChannelTurns:
    """Hysteresis and minimum durations over one channel's settled activity."""

    def __init__(self, cfg: SpeakerConfig) -> None:
        self.cfg = cfg
        self.pending_start: int | None = None  # above onset, not yet min_on long
        self.off_start: int | None = None  # below offset while on, not yet min_off long
        self.on = False

    def step(self, frame: int, p: float) -> tuple[str, int] | None:
        """Feed one frame; returns ("open", start) or ("close", end) when a run is decided."""
        cfg = self.cfg
        if not self.on:
            if self.pending_start is None:
                if p >= cfg.onset:
                    self.pending_start = frame
            elif p < cfg.offset:
                self.pending_start = None
            if self.pending_start is not None and frame - self.pending_start + 1 >= cfg.min_on_frames:
                self.on, start, self.pending_start = True, self.pending_start, None
                return ("open", start)
            return None
        if p >= cfg.offset:
            self.off_start = None
        elif self.off_start is None:
            self.off_start = frame
        if self.off_start is not None and frame - self.off_start + 1 >= cfg.min_off_frames:
            self.on, end, self.off_start = False, self.off_start, None
            return ("close", end)
        return None

    def finish(self, end_frame: int) -> int | None:
        """End of stream: the end of the open run, if any."""
        if not self.on:
            self.pending_start = None
            return None
        end = self.off_start if self.off_start is not None else end_frame
        self.on, self.off_start = False, None
        return end


AudioFn = Callable[[int, int], "np.ndarray | None"]  # samples [start, end), None if no longer held
Result = tuple[list, dict[str, str]]  # (events, relabels: old label -> new label)
# Work that may need x-vectors: it yields the audio to embed and is sent back its x-vector; it
# returns (events, relabels). The tracker never calls a model: the stream turns each yielded audio
# into an {"xvec"} request and resumes the work with the model side's answer (engine/stream.py).
Work = Generator[np.ndarray, np.ndarray, Result]


class ActivitySpeakerTracker:
    """Channels, runs and identities for one stream; produces speaker events and label changes.

    `embeds`: an x-vector model is present, so runs are named by clustering (else each channel is
    its own `unknown-N`). `add_window` and `finish` return `Work` (see above).
    """

    def __init__(self, num_channels: int, cfg: SpeakerConfig, embeds: bool,
                 clusters: SpeakerClusters, horizon_frames: int) -> None:
        self.cfg = cfg
        self.num_channels = num_channels
        self.embeds = embeds
        self.clusters = clusters
        self.horizon_frames = horizon_frames
        self.aggregator = ActivityAggregator(num_channels, capacity_frames=4 * horizon_frames)
        self.turns = [ChannelTurns(cfg) for _ in range(num_channels)]
        self.open_runs: list[Run | None] = [None] * num_channels
        self.pending_clean: list[list[np.ndarray]] = [[] for _ in range(num_channels)]
        self.runs: dict[int, Run] = {}
        self._next_run = 1
        # run id per channel per settled frame (-1: off), for word attribution; bounded
        self.frame_runs = RollingArray(horizon_frames * 2, (num_channels,), np.int64)
        self.decided = [0] * num_channels  # frames decided per channel
        self.reembed = True  # False while degraded (level >= 2)

    # -- window input -------------------------------------------------------------------------

    def add_window(self, start_frame: int, probs: np.ndarray, settle_to: int,
                   audio: AudioFn) -> Work:
        """Add one window's activity; settle frames < `settle_to`."""
        first, settled, _ = self.aggregator.add(start_frame, probs, settle_to)
        return self._consume(first, settled, audio)

    def finish(self, audio: AudioFn) -> Work:
        """Settle everything and close open runs (end of stream)."""
        first, settled = self.aggregator.settle_all()
        events, relabels = yield from self._consume(first, settled, audio)
        end = self.aggregator.settled
        for c, turns in enumerate(self.turns):
            close_at = turns.finish(end)
            if close_at is not None:
                e2, r2 = yield from self._close(c, close_at)
                events += e2
                relabels.update(r2)
        return events, relabels

    def _consume(self, first: int, settled: np.ndarray, audio: AudioFn) -> Work:
        events: list = []
        relabels: dict[str, str] = {}
        n = len(settled)
        if n == 0:
            return events, relabels
        self.frame_runs.extend_to(first + n, fill=-1)
        samples = audio(first * FRAME_SAMPLES, (first + n) * FRAME_SAMPLES)
        if samples is not None:  # a copy: the stream keeps buffering while this work waits for x-vectors
            samples = samples.copy()
        for i in range(n):
            f = first + i
            p = settled[i]
            for c in range(self.num_channels):
                decision = self.turns[c].step(f, float(p[c]))
                if decision is not None and decision[0] == "open":
                    self._open(c, decision[1])
                elif decision is not None:
                    e2, r2 = yield from self._close(c, decision[1])
                    events += e2
                    relabels.update(r2)
                run = self.open_runs[c]
                if run is not None:
                    self._mark(c, run.run_id, self.decided[c], f + 1)
                elif self.turns[c].pending_start is None:
                    self.decided[c] = f + 1
                    self.pending_clean[c].clear()
            on = p >= self.cfg.onset
            if on.sum() == 1 and samples is not None:  # single-speaker frame: audio for its x-vector
                c = int(np.argmax(on))
                piece = samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
                if self.open_runs[c] is not None:
                    self._add_clean(self.open_runs[c], piece)
                    e2, r2 = yield from self._check_change(c, f)
                    events += e2
                    relabels.update(r2)
                else:
                    self.pending_clean[c].append(piece.copy())
        for run in self.open_runs:
            if run is not None:
                e2, r2 = yield from self._maybe_embed(run)
                events += e2
                relabels.update(r2)
        labels = tuple(self.channel_label(c) for c in range(self.num_channels))
        events.insert(0, SpeakerActivity(first, labels, tuple(tuple(round(float(x), 3) for x in row) for row in settled)))
        self._apply(relabels)
        self._trim()
        return events, relabels

    # -- runs ---------------------------------------------------------------------------------

    def _mark(self, channel: int, run_id: int, start: int, end: int) -> None:
        start = max(start, self.frame_runs.start)
        if end > start:
            self.frame_runs.view(start, end)[:, channel] = run_id
        self.decided[channel] = max(self.decided[channel], end)

    def _open(self, channel: int, start: int) -> None:
        run = Run(self._next_run, channel, start, next_embed_at=self.cfg.embed_min_samples)
        if not self.embeds:  # no x-vector head: a channel is the best identity there is
            run.label = f"unknown-{channel + 1}"
        self._next_run += 1
        self.runs[run.run_id] = run
        self.open_runs[channel] = run
        for piece in self.pending_clean[channel]:
            self._add_clean(run, piece)
        self.pending_clean[channel].clear()
        self.decided[channel] = start

    def _add_clean(self, run: Run, piece: np.ndarray) -> None:
        run.clean.append(piece.copy())
        run.clean_samples += len(piece)
        while run.clean and run.clean_samples - len(run.clean[0]) >= self.cfg.embed_max_samples:
            run.clean_samples -= len(run.clean.pop(0))

    def _check_change(self, channel: int, frame: int) -> Work:
        """Speaker change inside a run: once the run has an x-vector, every `change_check_samples`
        of new clean speech are embedded on their own; a cosine to the run's x-vector below
        `change_threshold` splits the run where that speech began (the channel stays on)."""
        run = self.open_runs[channel]
        threshold = self.cfg.change_threshold
        if run is None or threshold is None or threshold <= -1.0 or not self.embeds or not self.reembed:
            return [], {}  # (every cosine is >= -1: nothing to embed for)
        piece = run.clean[-1]
        if run.segment_start is None:
            run.segment_start = frame
        run.segment.append(piece)
        run.segment_samples += len(piece)
        if run.segment_samples < self.cfg.change_check_samples:
            return [], {}
        segment, start = run.segment, run.segment_start
        run.segment, run.segment_samples, run.segment_start = [], 0, None
        if run.vector is None:
            return [], {}
        audio = np.concatenate(segment)
        if float(run.vector @ unit_vector((yield audio))) >= threshold:
            return [], {}
        events, relabels = yield from self._close(channel, start)
        self._open(channel, start)
        new = self.open_runs[channel]
        for p in segment:
            self._add_clean(new, p)
        self._mark(channel, new.run_id, start, frame + 1)
        e2, r2 = yield from self._maybe_embed(new)
        return events + e2, {**relabels, **r2}

    def _close(self, channel: int, end: int) -> Work:
        run = self.open_runs[channel]
        assert run is not None
        run.end = end
        # the frames [end, now) were below offset: decided off
        if end < self.frame_runs.end:
            seg = self.frame_runs.view(max(end, self.frame_runs.start), self.frame_runs.end)
            seg[:, channel] = np.where(seg[:, channel] == run.run_id, -1, seg[:, channel])
        self.open_runs[channel] = None
        events, relabels = [], {}
        if run.label is None and run.embeddings == 0 and run.clean_samples >= MIN_XVECTOR_SAMPLES:
            events, relabels = yield from self._embed(run)
        lo = max(run.start, self.frame_runs.start)
        span = self.frame_runs.view(lo, max(lo, min(end, self.frame_runs.end)))
        others = np.delete(span, channel, axis=1) if len(span) else span
        overlap = bool(len(span) and np.any(others >= 0))
        events.append(SpeakerTurn(run.run_id, run.label or "unknown", run.start, end, overlap))
        run.clean, run.clean_samples = [], 0
        return events, relabels

    def _maybe_embed(self, run: Run) -> Work:
        if not self.embeds or run.clean_samples < run.next_embed_at:
            return [], {}
        if run.embeddings and not self.reembed:
            return [], {}
        return (yield from self._embed(run))

    def _embed(self, run: Run) -> Work:
        if not self.embeds:
            return [], {}
        audio = np.concatenate(run.clean)
        vector = yield audio
        run.vector = unit_vector(vector)
        cluster, match, merged = self.clusters.assign(vector)
        self.clusters.add_audio(cluster, audio[-min(len(audio), FRAME_SAMPLES * 50) :])
        run.embeddings += 1
        run.next_embed_at = (
            int(run.clean_samples * self.cfg.embed_growth) if run.clean_samples < self.cfg.embed_max_samples else 1 << 62
        )
        relabels = dict(merged)
        if run.label != cluster.label:
            if run.label is not None:
                relabels.setdefault(f"run:{run.run_id}", cluster.label)
            run.label = cluster.label
        return [match], relabels

    def _apply(self, relabels: dict[str, str]) -> None:
        for old, new in relabels.items():
            if old.startswith("run:"):
                continue
            for run in self.runs.values():
                if run.label == old:
                    run.label = new

    def rename(self, old: str, new: str, vector: np.ndarray | None = None) -> dict[str, str]:
        """Rename an identity (e.g. `unknown-2` -> a name after enrollment)."""
        relabels = self.clusters.rename(old, new, vector)
        self._apply(relabels)
        return relabels

    def _trim(self) -> None:
        keep_from = self.aggregator.settled - self.horizon_frames
        self.frame_runs.discard_before(keep_from)
        for rid in [r for r, run in self.runs.items() if run.end is not None and run.end < keep_from]:
            del self.runs[rid]

    # -- queries ------------------------------------------------------------------------------

    def channel_label(self, channel: int) -> str:
        run = self.open_runs[channel]
        return (run.label if run is not None and run.label else None) or "unknown"

    def label_for(self, start: int, end: int) -> str | None:
        """Who spoke frames [start, end): the run overlapping them most (provisional if unsettled)."""
        votes: dict[int, int] = {}
        lo, hi = max(start, self.frame_runs.start), min(end, self.frame_runs.end)
        if hi > lo:
            for rid in self.frame_runs.view(lo, hi).ravel().tolist():
                if rid >= 0:
                    votes[rid] = votes.get(rid, 0) + 1
        if votes:
            best = min(votes, key=lambda r: (-votes[r], r))
            return self.runs[best].label if best in self.runs else None
        probs = self.aggregator.unsettled(max(start, self.aggregator.settled), end)
        if len(probs):
            mean = probs.mean(axis=0)
            c = int(np.argmax(mean))
            if mean[c] >= self.cfg.offset and self.open_runs[c] is not None:
                return self.open_runs[c].label
        return None

    def is_settled(self, end: int) -> bool:
        """True once frames before `end` are settled and every channel has decided them."""
        return min(self.decided) >= end and self.aggregator.settled >= end
