"""Where engine compute runs: one worker thread, and the engine's scheduler batching every stream.

All engine calls (opening streams, submitting audio, scheduler ticks, flushes) run on a single
worker thread, so engine state is never touched from two threads and the event loop never waits
on a forward pass. With an engine that has a scheduler, each stream is a `ScheduledStream`: its
`accept` submits the block, then ticks the scheduler until no window of any stream waits, so
windows of all live streams that are due go through one batched forward per head. Events that
belong to other streams wait in their outbox and go out with that stream's next call (at most
one block later). An engine without a scheduler (a scripted fake) gets plain streams.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from engine.events import Event


class ScheduledStream:
    """A stream served by a shared scheduler; same accept/flush/reset surface as an engine stream."""

    def __init__(self, pool: "ComputePool", stream: Any) -> None:
        self.pool = pool
        self.stream = stream
        self.stream_id = stream.stream_id

    def _drain(self) -> list[Event]:
        sched = self.pool.scheduler
        while sched.pending():
            for sid, events in sched.tick().items():
                self.pool.outbox.setdefault(sid, []).extend(events)
        return self.pool.outbox.pop(self.stream_id, [])

    def accept(self, samples: np.ndarray) -> list[Event]:
        self.pool.scheduler.submit(self.stream_id, samples)
        return self._drain()

    def flush(self) -> list[Event]:
        events = self._drain()
        return events + self.pool.scheduler.flush(self.stream_id)

    def reset(self) -> None:
        self.stream.reset()

    def report_load(self, **figures: Any) -> None:
        self.stream.report_load(**figures)

    def rename_speaker(self, old: str, new: str, voiceprint: np.ndarray | None = None) -> list[Event]:
        return self.stream.rename_speaker(old, new, voiceprint)

    def close(self) -> None:
        self.pool.scheduler.remove_stream(self.stream_id)
        self.pool.outbox.pop(self.stream_id, None)


class ComputePool:
    """The compute thread and (when the engine has one) the shared scheduler."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        make = getattr(engine, "scheduler", None)
        self.scheduler = make(clock=time.perf_counter) if callable(make) else None
        self.outbox: dict[int, list[Event]] = {}

    def _open(self) -> Any:
        if self.scheduler is None:
            return self.engine.new_stream()
        return ScheduledStream(self, self.scheduler.add_stream())

    async def open_stream(self) -> Any:
        """A new engine stream, created on the compute thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._open)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the compute thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
