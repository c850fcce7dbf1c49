"""Online speaker activity, turns and identity from overlapping frame-classification windows.

Three layers, each a small class:
- `ActivityAggregator`: each window's local speaker slots are mapped onto S running channels by
  the permutation that agrees best with what earlier windows said about the overlap; windows are
  then averaged with Hamming weights. Frames no later window will cover are "settled".
- `ChannelTurns`: hysteresis (onset/offset) and minimum on/off durations turn a channel's settled
  activity into runs (one speaker's stretch of speech); overlapping runs of two channels are kept.
- `SpeakerClusters`: a run's single-speaker audio gets an x-vector; incremental cosine
  clustering names it. Enrolled voiceprints seed the clusters, so an enrolled person is named
  from the first embedding of their run; others become `unknown-1`, `unknown-2`, ...
`SpeakerTracker` ties them together and answers "who spoke frames [a, b)?" for captions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.buffers import RollingArray
from engine.config import SpeakerConfig
from engine.events import SpeakerActivity, SpeakerMatch, SpeakerTurn
from engine.timebase import FRAME_SAMPLES


def best_permutation(local: np.ndarray, running: np.ndarray, weights: np.ndarray) -> tuple[int, ...]:
    """The channel for each local slot that best matches `running` on the overlap.

    `local`, `running`: (frames, S) probabilities; `weights`: (frames,) how much each frame counts
    (0 where nothing is known yet). Scores are weighted dot products of p and of 1-p; ties keep the
    earliest permutation in lexicographic order (the identity first), so results are deterministic.
    """
    s = local.shape[1]
    if len(local) == 0 or not np.any(weights > 0):
        return tuple(range(s))
    w = weights[:, None]
    # agreement[i, c]: how well local slot i matches channel c over the overlap
    agreement = (local * w).T @ running + ((1 - local) * w).T @ (1 - running)
    best, best_score = tuple(range(s)), -np.inf
    for perm in itertools.permutations(range(s)):
        score = float(sum(agreement[i, c] for i, c in enumerate(perm)))
        if score > best_score + 1e-9:
            best, best_score = perm, score
    return best


class ActivityAggregator:
    """Hamming-weighted average of permutation-aligned window activities over S channels."""

    def __init__(self, num_channels: int, capacity_frames: int) -> None:
        self.num_channels = num_channels
        self._wp = RollingArray(capacity_frames, (num_channels,), np.float64)
        self._w = RollingArray(capacity_frames, (), np.float64)
        self.settled = 0  # frames before this will not change any more

    def add(self, start_frame: int, probs: np.ndarray, settle_to: int) -> tuple[int, np.ndarray, tuple[int, ...]]:
        """Add one window's (T, S) probs at `start_frame`; settle frames < `settle_to`.

        Returns (first settled frame, settled (n, S) probs, permutation used).
        """
        t = len(probs)
        weights = np.hamming(t) if t > 2 else np.ones(t)
        cut = max(0, self._w.start - start_frame)  # frames already settled take nothing new
        if cut >= t:
            return (*self._settle(settle_to), tuple(range(self.num_channels)))
        probs, weights, start_frame = probs[cut:], weights[cut:], start_frame + cut
        end = start_frame + len(probs)
        self._wp.extend_to(end)
        self._w.extend_to(end)
        wsum, wpsum = self._w.view(start_frame, end), self._wp.view(start_frame, end)
        known = wsum > 0
        running = np.where(known[:, None], wpsum / np.where(known, wsum, 1.0)[:, None], 0.0)
        perm = best_permutation(probs, running, wsum)
        aligned = np.zeros_like(probs, dtype=np.float64)
        aligned[:, list(perm)] = probs
        wpsum += weights[:, None] * aligned
        wsum += weights
        return (*self._settle(settle_to), perm)

    def _settle(self, settle_to: int) -> tuple[int, np.ndarray]:
        first = self.settled
        settle_to = min(max(settle_to, first), self._w.end)
        w = self._w.view(first, settle_to)
        wp = self._wp.view(first, settle_to)
        probs = np.where(w[:, None] > 0, wp / np.where(w > 0, w, 1.0)[:, None], 0.0)
        self.settled = settle_to
        self._w.discard_before(settle_to)
        self._wp.discard_before(settle_to)
        return first, probs

    def unsettled(self, start: int, end: int) -> np.ndarray:
        """Current (not final) averaged probs for frames [start, end) (0 where not yet covered)."""
        start, end = max(start, self._w.start), min(end, self._w.end)
        if end <= start:
            return np.zeros((0, self.num_channels))
        w = self._w.view(start, end)
        return np.where(w[:, None] > 0, self._wp.view(start, end) / np.where(w > 0, w, 1.0)[:, None], 0.0)

    def settle_all(self) -> tuple[int, np.ndarray]:
        """Settle every frame seen so far (end of stream)."""
        return self._settle(self._w.end)


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


@dataclass(slots=True)
class Cluster:
    """A speaker identity: enrolled (fixed voiceprint) or unknown (running centroid)."""

    label: str
    centroid: np.ndarray
    enrolled: bool
    count: int = 1
    audio: list[np.ndarray] = field(default_factory=list)
    audio_samples: int = 0


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("speaker embedding is zero or not finite")
    return v / n


class SpeakerClusters:
    """Incremental cosine clustering of run embeddings, seeded by enrolled voiceprints."""

    def __init__(self, cfg: SpeakerConfig, enrolled: dict[str, np.ndarray] | None = None,
                 enrolled_threshold: float = 0.5, max_clusters: int = 64,
                 thresholds: tuple[float, float] | None = None) -> None:
        """`thresholds`: (new, merge) cosines overriding those of `cfg` (span tracking uses its own)."""
        self.cfg = cfg
        self.enrolled_threshold = enrolled_threshold
        self.new_threshold = cfg.new_cluster_threshold if cfg.new_cluster_threshold is not None else enrolled_threshold
        self.merge_threshold = cfg.merge_threshold if cfg.merge_threshold is not None else min(1.0, enrolled_threshold + 0.05)
        if thresholds is not None:
            self.new_threshold, self.merge_threshold = thresholds
        self.max_clusters = max_clusters
        self.clusters: list[Cluster] = []
        self._next_unknown = 1
        self._cannot: set[frozenset[str]] = set()  # label pairs heard at the same time: never merged
        for name, vec in (enrolled or {}).items():
            self.add_voiceprint(name, vec)

    def add_voiceprint(self, name: str, vector: np.ndarray) -> None:
        """Seed (or replace) an enrolled identity."""
        self.clusters = [c for c in self.clusters if c.label != name]
        self.clusters.append(Cluster(name, _unit(vector), enrolled=True))

    def find(self, label: str) -> Cluster | None:
        return next((c for c in self.clusters if c.label == label), None)

    def fits(self, embedding: np.ndarray) -> bool:
        """Would `assign` put this embedding into an existing cluster (no new voice)?"""
        e = _unit(embedding)
        return any(float(c.centroid @ e) >= (self.enrolled_threshold if c.enrolled else self.new_threshold)
                   for c in self.clusters)

    def cannot_link(self, a: str, b: str) -> None:
        """`a` and `b` spoke at the same time: they are two people and are never merged."""
        if a != b:
            self._cannot.add(frozenset((a, b)))

    def assign(self, embedding: np.ndarray, may_open: bool = True) -> tuple[Cluster | None, SpeakerMatch, dict[str, str]]:
        """Name an embedding; returns its cluster, the match event and labels merged away.

        With `may_open` False (too little evidence for a new person) an embedding that matches no
        cluster joins the closest unknown one, or gets no cluster (None) when there is none.
        """
        e = _unit(embedding)
        enrolled = [(c, float(c.centroid @ e)) for c in self.clusters if c.enrolled]
        unknown = [(c, float(c.centroid @ e)) for c in self.clusters if not c.enrolled]
        enrolled.sort(key=lambda cs: -cs[1])
        unknown.sort(key=lambda cs: -cs[1])
        candidates = tuple((c.label, round(s, 4)) for c, s in enrolled[:3])
        best_score = enrolled[0][1] if enrolled else 0.0
        if enrolled and best_score >= self.enrolled_threshold:
            cluster = enrolled[0][0]
        elif unknown and (unknown[0][1] >= self.new_threshold or len(self.clusters) >= self.max_clusters or not may_open):
            cluster = unknown[0][0]
            if unknown[0][1] >= self.new_threshold or may_open:  # a weak match does not move the centroid
                m = self.cfg.centroid_momentum
                cluster.centroid = _unit(m * cluster.centroid + (1 - m) * e)
                cluster.count += 1
        elif not may_open:
            return None, SpeakerMatch(track="unknown", name=None, score=round(best_score, 4),
                                      threshold=self.enrolled_threshold, accepted=False, candidates=candidates), {}
        else:
            cluster = Cluster(f"unknown-{self._next_unknown}", e, enrolled=False)
            self._next_unknown += 1
            self.clusters.append(cluster)
        match = SpeakerMatch(
            track=cluster.label,
            name=cluster.label if cluster.enrolled else None,
            score=round(best_score, 4),
            threshold=self.enrolled_threshold,
            accepted=cluster.enrolled,
            candidates=candidates,
        )
        return cluster, match, self._merge_from(cluster)

    def _merge_from(self, cluster: Cluster) -> dict[str, str]:
        """Merge unknown clusters that came too close to `cluster`; old label -> new label."""
        if cluster.enrolled:
            return {}
        for other in self.clusters:
            if other is cluster or frozenset((other.label, cluster.label)) in self._cannot:
                continue
            sim = float(other.centroid @ cluster.centroid)
            limit = self.enrolled_threshold if other.enrolled else self.merge_threshold
            if sim >= limit:
                # keep the enrolled one, else the older (lower number) one
                older = self.clusters.index(other) < self.clusters.index(cluster)
                keep, drop = (other, cluster) if other.enrolled or older else (cluster, other)
                if not keep.enrolled:
                    keep.centroid = _unit(keep.count * keep.centroid + drop.count * drop.centroid)
                keep.count += drop.count
                self.add_audio(keep, *drop.audio)
                self.clusters.remove(drop)
                self._relink(drop.label, keep.label)
                return {drop.label: keep.label}
        return {}

    def _relink(self, old: str, new: str) -> None:
        """Cannot-links of a label that is merged or renamed move to its new label."""
        for pair in [p for p in self._cannot if old in p]:
            self._cannot.discard(pair)
            (other,) = pair - {old}
            self.cannot_link(other, new)

    def add_audio(self, cluster: Cluster, *pieces: np.ndarray) -> None:
        """Keep the most recent `cluster_audio_samples` of a cluster's clean speech."""
        for p in pieces:
            cluster.audio.append(p)
            cluster.audio_samples += len(p)
        while cluster.audio and cluster.audio_samples - len(cluster.audio[0]) >= self.cfg.cluster_audio_samples:
            cluster.audio_samples -= len(cluster.audio.pop(0))

    def rename(self, old: str, new: str, vector: np.ndarray | None = None) -> dict[str, str]:
        """Rename a cluster (e.g. after enrolling it); merges into `new` if that exists."""
        c = self.find(old)
        if c is None:
            raise KeyError(f"no speaker {old!r} (known: {[k.label for k in self.clusters]})")
        target = self.find(new)
        if target is not None and target is not c:
            target.count += c.count
            self.add_audio(target, *c.audio)
            self.clusters.remove(c)
            self._relink(old, new)
        else:
            self._relink(old, new)
            c.label = new
            c.enrolled = True
            if vector is not None:
                c.centroid = _unit(vector)
        return {old: new}


EmbedFn = Callable[[np.ndarray], np.ndarray]
AudioFn = Callable[[int, int], "np.ndarray | None"]  # samples [start, end), None if no longer held


class SpeakerTracker:
    """Channels, runs and identities for one stream; produces speaker events and label changes."""

    def __init__(self, num_channels: int, cfg: SpeakerConfig, embed: EmbedFn | None,
                 clusters: SpeakerClusters, horizon_frames: int) -> None:
        self.cfg = cfg
        self.num_channels = num_channels
        self.embed = embed
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
                   audio: AudioFn) -> tuple[list, dict[str, str]]:
        """Add one window's activity; settle frames < `settle_to`. Returns (events, relabels)."""
        first, settled, _ = self.aggregator.add(start_frame, probs, settle_to)
        return self._consume(first, settled, audio)

    def finish(self, audio: AudioFn) -> tuple[list, dict[str, str]]:
        """Settle everything and close open runs (end of stream)."""
        first, settled = self.aggregator.settle_all()
        events, relabels = self._consume(first, settled, audio)
        end = self.aggregator.settled
        for c, turns in enumerate(self.turns):
            close_at = turns.finish(end)
            if close_at is not None:
                e2, r2 = self._close(c, close_at)
                events += e2
                relabels.update(r2)
        return events, relabels

    def _consume(self, first: int, settled: np.ndarray, audio: AudioFn) -> tuple[list, dict[str, str]]:
        events: list = []
        relabels: dict[str, str] = {}
        n = len(settled)
        if n == 0:
            return events, relabels
        self.frame_runs.extend_to(first + n, fill=-1)
        samples = audio(first * FRAME_SAMPLES, (first + n) * FRAME_SAMPLES)
        for i in range(n):
            f = first + i
            p = settled[i]
            for c in range(self.num_channels):
                decision = self.turns[c].step(f, float(p[c]))
                if decision is not None and decision[0] == "open":
                    self._open(c, decision[1])
                elif decision is not None:
                    e2, r2 = self._close(c, decision[1])
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
                    e2, r2 = self._check_change(c, f)
                    events += e2
                    relabels.update(r2)
                else:
                    self.pending_clean[c].append(piece.copy())
        for run in self.open_runs:
            if run is not None:
                e2, r2 = self._maybe_embed(run)
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
        if self.embed is None:  # no x-vector head: a channel is the best identity there is
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

    def _check_change(self, channel: int, frame: int) -> tuple[list, dict[str, str]]:
        """Speaker change inside a run: once the run has an x-vector, every `change_check_samples`
        of new clean speech are embedded on their own; a cosine to the run's x-vector below
        `change_threshold` splits the run where that speech began (the channel stays on)."""
        run = self.open_runs[channel]
        threshold = self.cfg.change_threshold
        if run is None or threshold is None or threshold <= -1.0 or self.embed is None or not self.reembed:
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
        if float(run.vector @ _unit(self.embed(audio))) >= threshold:
            return [], {}
        events, relabels = self._close(channel, start)
        self._open(channel, start)
        new = self.open_runs[channel]
        for p in segment:
            self._add_clean(new, p)
        self._mark(channel, new.run_id, start, frame + 1)
        e2, r2 = self._maybe_embed(new)
        return events + e2, {**relabels, **r2}

    def _close(self, channel: int, end: int) -> tuple[list, dict[str, str]]:
        run = self.open_runs[channel]
        assert run is not None
        run.end = end
        # the frames [end, now) were below offset: decided off
        if end < self.frame_runs.end:
            seg = self.frame_runs.view(max(end, self.frame_runs.start), self.frame_runs.end)
            seg[:, channel] = np.where(seg[:, channel] == run.run_id, -1, seg[:, channel])
        self.open_runs[channel] = None
        events, relabels = [], {}
        if run.label is None and run.embeddings == 0 and run.clean_samples >= 8000:
            events, relabels = self._embed(run)
        lo = max(run.start, self.frame_runs.start)
        span = self.frame_runs.view(lo, max(lo, min(end, self.frame_runs.end)))
        others = np.delete(span, channel, axis=1) if len(span) else span
        overlap = bool(len(span) and np.any(others >= 0))
        events.append(SpeakerTurn(run.run_id, run.label or "unknown", run.start, end, overlap))
        run.clean, run.clean_samples = [], 0
        return events, relabels

    def _maybe_embed(self, run: Run) -> tuple[list, dict[str, str]]:
        if self.embed is None or run.clean_samples < run.next_embed_at:
            return [], {}
        if run.embeddings and not self.reembed:
            return [], {}
        return self._embed(run)

    def _embed(self, run: Run) -> tuple[list, dict[str, str]]:
        if self.embed is None:
            return [], {}
        audio = np.concatenate(run.clean)
        vector = self.embed(audio)
        run.vector = _unit(vector)
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
