"""Where engine compute runs: one worker thread, and the engine's scheduler batching every stream.

All engine calls (opening streams, submitting audio, scheduler ticks, flushes) run on a single
worker thread, so engine state is never touched from two threads and the event loop never waits
on a forward pass. With an engine that has a scheduler, each stream is a `ScheduledStream`:
`accept_async` submits the block (which only cuts windows), then waits for the pool's ticker.
The ticker waits `batch_wait_s` for other streams' windows to arrive (as WhisperLive batches
requests of all sessions within a short window), then ticks the scheduler until no window waits,
so due windows of all live streams go through one batched forward per head, and hands each
stream its events. An engine without a scheduler (a scripted fake) gets plain streams that the
runner calls on the worker thread.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from engine.events import Event

BATCH_WAIT_S = 0.02  # how long the ticker waits for other streams' windows before a forward


class ScheduledStream:
    """A stream served by the pool's scheduler; the runner uses `accept_async`/`flush_async`."""

    def __init__(self, pool: "ComputePool", stream: Any) -> None:
        self.pool = pool
        self.stream = stream
        self.stream_id = stream.stream_id

    async def accept_async(self, samples: np.ndarray) -> list[Event]:
        return await self.pool.submit(self, samples)

    async def flush_async(self) -> list[Event]:
        await self.pool.idle()
        events = self.pool.outbox.pop(self.stream_id, [])
        return events + list(await self.pool.run(self.pool.scheduler.flush, self.stream_id))

    # the plain surface, for callers that run on the compute thread themselves
    def reset(self) -> None:
        self.stream.reset()

    def report_load(self, **figures: Any) -> None:
        self.stream.report_load(**figures)

    def rename_speaker(self, old: str, new: str, voiceprint: np.ndarray | None = None) -> list[Event]:
        return self.stream.rename_speaker(old, new, voiceprint)

    def add_voiceprint(self, name: str, vector: np.ndarray) -> None:
        self.stream.add_voiceprint(name, vector)

    def speaker_audio(self, label: str) -> np.ndarray:
        return self.stream.speaker_audio(label)

    def close(self) -> None:
        self.pool.scheduler.remove_stream(self.stream_id)
        self.pool.outbox.pop(self.stream_id, None)


class ComputePool:
    """The compute thread and (when the engine has one) the shared scheduler and its ticker."""

    def __init__(self, engine: Any, batch_wait_s: float = BATCH_WAIT_S) -> None:
        self.engine = engine
        self.batch_wait_s = batch_wait_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        make = getattr(engine, "scheduler", None)
        self.scheduler = make(clock=time.perf_counter) if callable(make) else None
        self.outbox: dict[int, list[Event]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def batched_windows(self) -> int:
        """Windows that went through a forward together with another stream's window."""
        return self.scheduler.stats.shared_windows if self.scheduler is not None else 0

    def _open(self) -> Any:
        if self.scheduler is None:
            return self.engine.new_stream()
        return ScheduledStream(self, self.scheduler.add_stream())

    async def open_stream(self) -> Any:
        """A new engine stream, created on the compute thread."""
        return await self.run(self._open)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the compute thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, stream: ScheduledStream, samples: np.ndarray) -> list[Event]:
        """Cut `samples` into the stream's windows, wait for the ticks that run them; its events."""
        assert self.scheduler is not None
        await self.run(self.scheduler.submit, stream.stream_id, samples)
        if self.scheduler.pending():
            await self.idle()
        return self.outbox.pop(stream.stream_id, [])

    async def idle(self) -> None:
        """Wait until the ticker has run every waiting window."""
        if self._ticker is None or self._ticker.done():
            if not self.scheduler or not self.scheduler.pending():
                return
            self._ticker = asyncio.create_task(self._tick_until_idle())
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def _tick_until_idle(self) -> None:
        try:
            await asyncio.sleep(self.batch_wait_s)  # let other streams' due windows join this batch
            while self.scheduler is not None and self.scheduler.pending():
                events = await self.run(self.scheduler.tick)
                self.ticks += 1
                for sid, evs in events.items():
                    self.outbox.setdefault(sid, []).extend(evs)
        finally:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
