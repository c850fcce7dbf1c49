"""The model side's batching: the pending requests of many streams, one forward per group.

A round takes up to `max_batch` requests, round-robin across streams from the one after where the
previous round stopped (fairness), groups them by (length, heads) — group-norm encoders must never
see padding, so only equal-length windows share a batch; x-vector spans of equal length batch too —
runs one forward per group and delivers each result to its stream in the stream's request order.
It uses the streams' public request API only (`take_requests`, `deliver`, `pending_requests`).

`Engine.decode(streams)` runs rounds until no request waits (one stream's `accept`, tests, offline
use); the app's compute worker keeps one `Scheduler` for all live streams and calls `tick()`.

The engine has no clock: pass `clock` (e.g. `time.perf_counter`) to get compute and queueing
telemetry in milliseconds; without it the figures are absent and everything is deterministic.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from engine.compute_requests import WindowRequest
from engine.events import Event
from engine.model_side import ModelSide, WindowOutputs
from engine.stream import Stream

STATS_KEPT = 1024  # timings kept: the latest ticks / windows (a server runs for days)


@dataclass(slots=True)
class SchedulerStats:
    """Counters over the scheduler's life (telemetry, not events); bounded in size: timings and
    batch sizes keep the latest `STATS_KEPT`, per-stream counts only the streams still open."""

    ticks: int = 0
    forwards: int = 0
    windows: int = 0
    shared_windows: int = 0  # windows that went through a forward with another stream's window
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=STATS_KEPT))  # rows per forward
    compute_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_KEPT))  # per tick, with a clock
    queue_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_KEPT))  # per window, submit to delivery
    per_stream_windows: dict[int, int] = field(default_factory=lambda: defaultdict(int))


def run_requests(models: ModelSide, requests: list[WindowRequest]) -> tuple[dict[tuple[int, int], tuple[WindowOutputs, int]], list[list[WindowRequest]]]:
    """One forward per (length, heads) group: {(stream_id, seq): (outputs, row)} and the groups run.
    Skipped windows (degrade) get empty outputs and no forward."""
    groups: dict[tuple, list[WindowRequest]] = defaultdict(list)
    results: dict[tuple[int, int], tuple[WindowOutputs, int]] = {}
    for r in requests:
        if r.computes:
            groups[r.key].append(r)
        else:
            results[(r.stream_id, r.seq)] = (WindowOutputs(), 0)
    for (_, want), group in groups.items():
        out = models.run_windows(np.stack([r.samples for r in group]), want)
        for i, r in enumerate(group):
            results[(r.stream_id, r.seq)] = (out, i)
    return results, list(groups.values())


class Scheduler:
    """Batches the requests of many streams; `Engine.scheduler()` makes one, `Engine.decode` uses one."""

    def __init__(self, models: ModelSide, max_batch: int, clock: Callable[[], float] | None = None,
                 new_stream: Callable[[], Stream] | None = None, streams: Iterable[Stream] = ()) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.models = models
        self.max_batch = max_batch
        self.clock = clock
        self._new_stream = new_stream
        self.streams: dict[int, Stream] = {}
        self._order: list[int] = []
        self._cursor = 0
        self._submitted_at: dict[tuple[int, int], float] = {}
        self.stats = SchedulerStats()
        for s in streams:
            self.attach(s)

    def add_stream(self) -> Stream:
        """A new stream served by this scheduler."""
        if self._new_stream is None:
            raise RuntimeError("this scheduler makes no streams: attach() existing ones")
        return self.attach(self._new_stream())

    def attach(self, stream: Stream) -> Stream:
        """Serve an existing stream."""
        self.streams[stream.stream_id] = stream
        self._order.append(stream.stream_id)
        return stream

    def remove_stream(self, stream_id: int) -> None:
        """Forget a stream (its queued requests go with it)."""
        self.streams.pop(stream_id, None)
        self.stats.per_stream_windows.pop(stream_id, None)
        for key in [k for k in self._submitted_at if k[0] == stream_id]:
            del self._submitted_at[key]
        if stream_id in self._order:
            i = self._order.index(stream_id)
            self._order.remove(stream_id)
            if i < self._cursor:
                self._cursor -= 1
        self._cursor = self._cursor % len(self._order) if self._order else 0

    def submit(self, stream_id: int, samples: np.ndarray) -> None:
        """Buffer audio for a stream; requests it completes wait for `tick`."""
        stream = self.streams[stream_id]
        before = stream.next_seq
        stream.submit(samples)
        self._stamp(stream, before)

    def finish_input(self, stream_id: int) -> list[Event]:
        """A stream's audio ended: its final windows wait for `tick`; `stream.finished` once done."""
        stream = self.streams[stream_id]
        before = stream.next_seq
        events = stream.finish_input()
        self._stamp(stream, before)
        return events

    def _stamp(self, stream: Stream, before: int) -> None:
        if self.clock is not None:
            now = self.clock()
            for seq in range(before, stream.next_seq):
                self._submitted_at[(stream.stream_id, seq)] = now

    def pending(self, stream_ids: Iterable[int] | None = None) -> int:
        """Requests waiting over all streams (or the given ones)."""
        ids = self.streams if stream_ids is None else stream_ids
        return sum(self.streams[i].pending_requests for i in ids if i in self.streams)

    def _take(self) -> list[WindowRequest]:
        """Up to max_batch requests, one per stream per pass, starting after the last served."""
        taken: list[WindowRequest] = []
        n = len(self._order)
        budget, start, progressed = self.max_batch, self._cursor, True
        while budget and progressed and n:
            progressed = False
            for j in range(n):
                if not budget:
                    break
                got = self.streams[self._order[(start + j) % n]].take_requests(1)
                if got:
                    taken += got
                    budget -= 1
                    progressed = True
                    if not budget:
                        self._cursor = (start + j + 1) % n
        return taken

    def tick(self) -> dict[int, list[Event]]:
        """One round of compute: returns the new events of each stream that got any."""
        reqs = self._take()
        self.stats.ticks += 1
        if not reqs:
            return {}
        t0 = self.clock() if self.clock is not None else None
        results, groups = run_requests(self.models, reqs)
        for group in groups:
            self.stats.forwards += 1
            self.stats.batch_sizes.append(len(group))
            if len({r.stream_id for r in group}) > 1:
                self.stats.shared_windows += len(group)
        compute_ms = None if t0 is None else 1000.0 * (self.clock() - t0)  # type: ignore[misc]
        events: dict[int, list[Event]] = defaultdict(list)
        for r in sorted(reqs, key=lambda r: (r.stream_id, r.seq)):
            stream = self.streams.get(r.stream_id)
            if stream is None:
                continue
            out, i = results[(r.stream_id, r.seq)]
            if compute_ms is not None:
                submitted = self._submitted_at.pop((r.stream_id, r.seq), None)
                queue_ms = None if submitted is None else 1000.0 * (t0 - submitted)  # type: ignore[operator]
                stream.report_timing(compute_ms=compute_ms, queue_ms=queue_ms)
                if queue_ms is not None:
                    self.stats.queue_ms.append(queue_ms)
            events[r.stream_id] += stream.deliver(r, out, i)
            self.stats.windows += 1
            self.stats.per_stream_windows[r.stream_id] += 1
        if compute_ms is not None:
            self.stats.compute_ms.append(compute_ms)
            # requests a stream dropped before their turn (degrading) are never delivered: forget them
            done = {r.stream_id: r.seq for r in reqs}
            for key in [k for k in self._submitted_at if k[0] in done and k[1] < done[k[0]]]:
                del self._submitted_at[key]
        return dict(events)

    def run_until_idle(self, max_ticks: int = 1_000_000) -> dict[int, list[Event]]:
        """Tick until no request waits."""
        out: dict[int, list[Event]] = defaultdict(list)
        for _ in range(max_ticks):
            if not self.pending():
                break
            for sid, ev in self.tick().items():
                out[sid] += ev
        return dict(out)

    def flush(self, stream_id: int) -> list[Event]:
        """Finish one stream now: its final windows and last events (other streams' requests wait)."""
        stream = self.streams[stream_id]
        events = self.finish_input(stream_id)
        alone = Scheduler(self.models, self.max_batch, streams=[stream])
        events += alone.run_until_idle().get(stream_id, [])
        return events
