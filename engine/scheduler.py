"""Many streams, one batched forward per head group per tick.

Streams `submit` audio (which only cuts windows into each stream's bounded queue); `tick()` takes
up to `max_batch` windows, round-robin across streams from the one after where the previous tick
stopped (fairness), groups them by (length, heads) — group-norm encoders must never see padding,
so only equal-length windows share a batch — runs one forward per group and delivers the outputs
to each stream in its own window order. A stream's windows are always taken as a prefix of its
queue, so every stream sees exactly the windows, in the order, that `Stream.accept` would give it.

The engine has no clock: pass `clock` (e.g. `time.perf_counter`) to get compute and queueing
telemetry in milliseconds; without it the figures are absent and everything is deterministic.
Degrading is decided per stream from its queued audio (see `DegradeConfig`).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from engine.events import Event, Stats
from engine.model_side import WindowOutputs
from engine.stream import Stream, WindowRequest

if TYPE_CHECKING:
    from engine.engine import Engine


STATS_KEPT = 1024  # timings kept: the latest ticks / windows (a server runs for days)


@dataclass(slots=True)
class SchedulerStats:
    """Counters over the scheduler's life (telemetry, not events); bounded in size: timings keep
    the latest `STATS_KEPT`, per-stream counts only the streams still open."""

    ticks: int = 0
    forwards: int = 0
    windows: int = 0
    shared_windows: int = 0  # windows that went through a forward with another stream's window
    compute_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_KEPT))  # per tick, with a clock
    queue_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_KEPT))  # per window, submit to delivery
    per_stream_windows: dict[int, int] = field(default_factory=lambda: defaultdict(int))


class Scheduler:
    """Batches the windows of many streams; create with `Engine.scheduler()`."""

    def __init__(self, engine: "Engine", max_batch: int | None = None, clock: Callable[[], float] | None = None) -> None:
        self.engine = engine
        self.models = engine.models
        self.max_batch = max_batch or engine.config.max_batch
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.clock = clock
        self.streams: dict[int, Stream] = {}
        self._order: list[int] = []
        self._cursor = 0
        self._submitted_at: dict[tuple[int, int], float] = {}
        self.stats = SchedulerStats()

    def add_stream(self) -> Stream:
        """A new stream served by this scheduler."""
        stream = self.engine.new_stream()
        self.streams[stream.stream_id] = stream
        self._order.append(stream.stream_id)
        return stream

    def remove_stream(self, stream_id: int) -> None:
        """Forget a stream (its queued windows go with it)."""
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
        """Buffer audio for a stream; windows it completes wait for `tick`."""
        stream = self.streams[stream_id]
        before = stream._seq
        stream.submit(samples)
        if self.clock is not None:
            now = self.clock()
            for seq in range(before, stream._seq):
                self._submitted_at[(stream_id, seq)] = now

    def pending(self) -> int:
        """Windows waiting over all streams."""
        return sum(len(s.queue) for s in self.streams.values())

    def _take(self) -> list[WindowRequest]:
        """Up to max_batch windows, one per stream per round, starting after the last served."""
        taken: list[WindowRequest] = []
        if not self._order:
            return taken
        n = len(self._order)
        budget = self.max_batch
        depth: dict[int, int] = defaultdict(int)
        progressed = True
        start = self._cursor
        while budget and progressed:
            progressed = False
            for j in range(n):
                sid = self._order[(start + j) % n]
                q = self.streams[sid].queue
                if depth[sid] < len(q) and budget:
                    taken.append(q[depth[sid]])
                    depth[sid] += 1
                    budget -= 1
                    progressed = True
                    if not budget:
                        self._cursor = (start + j + 1) % n
        for sid, d in depth.items():
            for _ in range(d):
                self.streams[sid].queue.popleft()
        return taken

    def tick(self) -> dict[int, list[Event]]:
        """One round of compute: returns the new events of each stream that got any."""
        reqs = self._take()
        self.stats.ticks += 1
        if not reqs:
            return {}
        t0 = self.clock() if self.clock is not None else None
        groups: dict[tuple, list[WindowRequest]] = defaultdict(list)
        results: dict[tuple[int, int], tuple] = {}
        for r in reqs:
            if "skip" in r.want:  # a caption window dropped by the degrade policy: nothing to run
                results[(r.stream_id, r.seq)] = (WindowOutputs(), 0)
            else:
                groups[r.key].append(r)
        for (_, want), group in groups.items():
            out = self.models.run_windows(np.stack([r.samples for r in group]), want)
            self.stats.forwards += 1
            if len({r.stream_id for r in group}) > 1:
                self.stats.shared_windows += len(group)
            for i, r in enumerate(group):
                results[(r.stream_id, r.seq)] = (out, i)
        compute_ms = None if t0 is None else 1000.0 * (self.clock() - t0)  # type: ignore[misc]
        events: dict[int, list[Event]] = defaultdict(list)
        for r in sorted(reqs, key=lambda r: (r.stream_id, r.seq)):
            stream = self.streams.get(r.stream_id)
            if stream is None:
                continue
            out, i = results[(r.stream_id, r.seq)]
            if compute_ms is not None:
                submitted = self._submitted_at.pop((r.stream_id, r.seq), None)
                queue_ms = None if submitted is None else 1000.0 * (t0 - submitted) if t0 is not None else None
                stream.report_load(stream._backlog, stream._rtf, compute_ms=compute_ms, queue_ms=queue_ms)
                if queue_ms is not None:
                    self.stats.queue_ms.append(queue_ms)
            events[r.stream_id] += stream.deliver(r, out, i)
            self.stats.windows += 1
            self.stats.per_stream_windows[r.stream_id] += 1
        if compute_ms is not None:
            self.stats.compute_ms.append(compute_ms)
            # windows a stream dropped before their turn (degrading) are never delivered: forget them
            done = {r.stream_id: r.seq for r in reqs}
            for key in [k for k in self._submitted_at if k[0] in done and k[1] < done[k[0]]]:
                del self._submitted_at[key]
        return dict(events)

    def run_until_idle(self, max_ticks: int = 1_000_000) -> dict[int, list[Event]]:
        """Tick until no window waits (tests and offline use)."""
        out: dict[int, list[Event]] = defaultdict(list)
        for _ in range(max_ticks):
            if not self.pending():
                break
            for sid, ev in self.tick().items():
                out[sid] += ev
        return dict(out)

    def flush(self, stream_id: int) -> list[Event]:
        """Finish one stream: its queued windows, the flush windows, the last events."""
        stream = self.streams[stream_id]
        return stream.flush()

    def stream_stats(self, stream_id: int) -> Stats:
        """A Stats event for one stream now."""
        return self.streams[stream_id]._stats()
