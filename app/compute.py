"""Where engine compute runs: one worker thread; the engine's scheduler batches every stream.

The worker thread is the only thread that touches engine state: opening streams, submitting
audio, load reports, scheduler ticks, flushes and closes all run there. Each stream served by the
engine's scheduler is a `ScheduledStream`: `accept_async` submits a block (which only cuts
requests) and waits for its own completion, resolved as soon as that stream's requests are
delivered, whatever other streams still have pending. One ticker task runs scheduler ticks on the
worker while any request waits; a tick takes the pending requests of all streams (round-robin up to
`max_batch`), so concurrent streams share forwards. There is no batching timer: before a tick
the ticker only lets the blocks already on their way to the worker land (other streams' submits
in progress), so with one stream it ticks at once, and under load, when windows queue up, every
tick takes the due windows of all streams. An engine without a scheduler (a scripted fake) gets
plain streams that the runner calls on the worker thread.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from engine.events import Event


class ScheduledStream:
    """A stream served by the pool's scheduler; the runner uses `accept_async`/`flush_async`.

    Engine state is reached only on the worker thread; load figures reported from the event loop
    are kept here and handed to the engine with the next block.
    """

    def __init__(self, pool: "ComputePool", stream: Any) -> None:
        self.pool = pool
        self.stream = stream
        self.stream_id = stream.stream_id
        self.outbox: list[Event] = []  # events delivered, not yet returned
        self._asked = 0  # calls made from the loop (submit or finish)
        self._done = 0  # ... of which the worker has run
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._load: dict[str, Any] | None = None
        self.closed = False
        self.submitting = False  # a call is on its way to (or running on) the worker
        self._open_calls = 0  # calls made that have not returned their events yet

    async def accept_async(self, samples: np.ndarray) -> list[Event]:
        return await self._call(self._submit_on_worker, samples)

    async def flush_async(self) -> list[Event]:
        return await self._call(self._finish_on_worker)

    async def _call(self, fn: Any, *args: Any) -> list[Event]:
        """Run `fn` on the worker, then wait until this stream's requests are all delivered."""
        self._open_calls += 1
        try:
            return await self._run_call(fn, *args)
        finally:
            self._open_calls -= 1

    async def _run_call(self, fn: Any, *args: Any) -> list[Event]:
        self._asked += 1
        ticket = (self._asked, asyncio.get_running_loop().create_future())
        self._waiters.append(ticket)
        done = ticket[1]
        self.submitting = True
        try:
            events, done_calls, busy = await self.pool.run(fn, *args)
        except BaseException:
            self._waiters.remove(ticket)
            raise
        finally:
            self.submitting = False
            self.pool._landed()
        self.outbox += events
        self.pool._settle(self, done_calls, busy)
        if busy:
            self.pool._kick()
        await done
        events, self.outbox = self.outbox, []
        return events

    def in_order(self, events: list[Event]) -> list[Event]:
        """Place events the worker made for this stream outside its calls (a rename's revisions),
        on the event loop as soon as they come back from the worker: while a call is open they go
        into the outbox behind the events made before them, and that call returns them (the runner
        publishes them, in the order the engine made them); the events to publish now are returned
        (all of them when no call is open, since then every earlier event has been returned).

        A revision that reached the bus before its caption would be lost: sinks ignore revisions
        of captions they have not seen (app/writers.py, app/tui_panels.py)."""
        if self._open_calls:
            self.outbox += events
            return []
        return list(events)

    # -- on the worker thread: (events made now, calls run, requests still out) ------------------

    def _submit_on_worker(self, samples: np.ndarray) -> tuple[list[Event], int, bool]:
        if self._load is not None:
            self.stream.report_load(**self._load)
        self.pool.scheduler.submit(self.stream_id, samples)
        self._done += 1
        return [], self._done, self.stream.busy

    def _finish_on_worker(self) -> tuple[list[Event], int, bool]:
        events = self.pool.scheduler.finish_input(self.stream_id)
        self._done += 1
        return events, self._done, self.stream.busy

    # -- the plain surface: load figures kept for the worker; the rest is called on the worker
    #    (pool.run), as the session does

    def report_load(self, **figures: Any) -> None:
        """Backlog and real-time factor from the runner: applied on the worker with the next block."""
        self._load = figures

    def reset(self) -> None:
        self.stream.reset()

    def rename_speaker(self, old: str, new: str, voiceprint: np.ndarray | None = None) -> list[Event]:
        return self.stream.rename_speaker(old, new, voiceprint)

    def add_voiceprint(self, name: str, vector: np.ndarray) -> None:
        self.stream.add_voiceprint(name, vector)

    def speaker_audio(self, label: str) -> np.ndarray:
        return self.stream.speaker_audio(label)

    def close(self) -> None:
        """Leave the scheduler (on the worker thread, where the runner calls it)."""
        self.closed = True
        self.pool.scheduler.remove_stream(self.stream_id)
        self.pool._served.pop(self.stream_id, None)


class ComputePool:
    """The compute thread and (when the engine has one) the shared scheduler and its ticker."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        make = getattr(engine, "scheduler", None)
        self.scheduler = make(clock=time.perf_counter) if callable(make) else None
        self.streams: dict[int, ScheduledStream] = {}  # the event loop's view
        self._served: dict[int, ScheduledStream] = {}  # the worker's view (changed on the worker only)
        self._ticker: asyncio.Task[None] | None = None
        self._wanted = False  # a call since the ticker's last look found nothing pending
        self._arrived: asyncio.Event | None = None
        self.ticks = 0

    @property
    def batched_windows(self) -> int:
        """Requests that went through a forward together with another stream's request."""
        return self.scheduler.stats.shared_windows if self.scheduler is not None else 0

    def _open(self) -> Any:
        if self.scheduler is None:
            return self.engine.new_stream()
        stream = ScheduledStream(self, self.scheduler.add_stream())
        self._served[stream.stream_id] = stream
        return stream

    async def open_stream(self) -> Any:
        """A new engine stream, created on the compute thread."""
        stream = await self.run(self._open)
        if isinstance(stream, ScheduledStream):
            self.streams[stream.stream_id] = stream
        return stream

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the compute thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, stream: ScheduledStream, samples: np.ndarray) -> list[Event]:
        """Cut `samples` into the stream's requests and wait for their events (this stream's only)."""
        return await stream.accept_async(samples)

    # -- completions ---------------------------------------------------------------------------

    def _settle(self, stream: ScheduledStream, done_calls: int, busy: bool) -> None:
        """Resolve the stream's waiters for calls the worker had run when it was last seen idle."""
        if busy:
            return
        keep = []
        for ticket, fut in stream._waiters:
            if ticket <= done_calls:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((ticket, fut))
        stream._waiters = keep

    def _landed(self) -> None:
        """A stream's call came back from the worker (the ticker may be waiting for it)."""
        if self._arrived is not None:
            self._arrived.set()

    def _kick(self) -> None:
        """A stream has requests: make sure the ticker runs."""
        self._wanted = True
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_while_pending())

    def _open_streams(self) -> list[ScheduledStream]:
        live = [s for s in self.streams.values() if not s.closed]
        self.streams = {s.stream_id: s for s in live}
        return live

    async def _gather(self) -> None:
        """Let the calls already on their way to the worker land before a tick, so their windows
        join it. No timer: with one stream, or none on its way, the tick runs at once."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        while any(s.submitting for s in self._open_streams()):
            self._arrived.clear()
            await self._arrived.wait()

    def _tick_on_worker(self) -> tuple[dict[int, list[Event]], dict[int, tuple[int, bool]]] | None:
        """One scheduler tick; None when nothing waits. Each stream's calls run so far and whether
        it still has requests out (seen here, on the worker, right after the tick)."""
        assert self.scheduler is not None
        if not self.scheduler.pending():
            return None
        events = self.scheduler.tick()
        seen = {sid: (s._done, s.stream.busy) for sid, s in self._served.items()}
        return events, seen

    async def _tick_while_pending(self) -> None:
        try:
            await self._tick_rounds()
        except Exception as exc:  # a tick failed (a model error): the waiting calls raise it, none hangs
            for stream in self._open_streams():
                for _, fut in stream._waiters:
                    if not fut.done():
                        fut.set_exception(exc)
                stream._waiters = []

    async def _tick_rounds(self) -> None:
        while True:
            await self._gather()
            self._wanted = False
            result = await self.run(self._tick_on_worker)
            if result is None:
                if self._wanted:
                    continue
                return
            events, seen = result
            self.ticks += 1
            for sid, evs in events.items():
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.outbox.extend(evs)
            for sid, (done_calls, busy) in seen.items():
                stream = self.streams.get(sid)
                if stream is not None:
                    self._settle(stream, done_calls, busy)

    def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
