"""Drive one engine stream from one audio source: compute off the loop, events onto a bus.

A producer task pulls `AudioBlock`s from the source into a queue; the consumer takes everything
queued (so a stream that fell behind catches up in one bigger call rather than lagging further),
hands it to the engine on the compute thread (`accept_async` of a stream served by app/compute.py's
scheduler, else `stream.accept` in the executor) and publishes the events on the session's bus. The
runner measures what the engine must not (wall time): real-time factor, the delay from a
sample's arrival to the event that covers it, audio dropped by the source. It passes the backlog
to the stream (`report_load`, when the engine has it) and publishes a `Stats` event each second of
audio. It also keeps the last few minutes of audio, so the TUI can enroll a speaker from what
they already said.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

import numpy as np

from app.bus import EventBus
from app.sources import AudioBlock, PauseSwitch
from engine.events import EVENT_TYPES, Event, Stats
from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE

HISTORY_S = 180  # audio kept for enrolling a speaker from the session
STATS_EVERY_SAMPLES = SAMPLE_RATE  # one Stats event per second of audio


class EngineStream(Protocol):
    """What the app needs from an engine stream (engine/ provides it; tests pass fakes)."""

    def accept(self, samples: np.ndarray) -> list[Event]: ...

    def flush(self) -> list[Event]: ...

    def reset(self) -> None: ...


class AudioHistory:
    """The last `max_s` seconds of a stream's 16 kHz audio, addressable by absolute sample index."""

    def __init__(self, max_s: float = HISTORY_S) -> None:
        self.max_samples = int(max_s * SAMPLE_RATE)
        self._blocks: deque[np.ndarray] = deque()
        self._held = 0
        self.end_sample = 0  # absolute index one past the newest sample held

    def append(self, samples: np.ndarray) -> None:
        """Keep `samples`, forgetting the oldest blocks beyond `max_s`."""
        self._blocks.append(samples)
        self._held += len(samples)
        self.end_sample += len(samples)
        while self._held - len(self._blocks[0]) >= self.max_samples:
            self._held -= len(self._blocks.popleft())

    @property
    def start_sample(self) -> int:
        return self.end_sample - self._held

    def held(self) -> np.ndarray:
        """Everything held, from `start_sample` to `end_sample`, as one array."""
        if not self._blocks:
            return np.zeros(0, dtype=np.float32)
        if len(self._blocks) > 1:  # join once, so repeated spans stay cheap
            joined = np.concatenate(list(self._blocks))
            self._blocks = deque([joined])
        return self._blocks[0]

    def span(self, start_sample: int, end_sample: int) -> np.ndarray:
        """Samples in [start, end) clipped to what is still held (may be shorter or empty)."""
        start = max(start_sample, self.start_sample)
        end = min(end_sample, self.end_sample)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        return self.held()[start - self.start_sample : end - self.start_sample]

    def last(self, seconds: float) -> np.ndarray:
        """The newest `seconds` of audio held."""
        return self.span(self.end_sample - int(seconds * SAMPLE_RATE), self.end_sample)


class Meter:
    """Wall-time figures of one stream: compute time, arrival-to-event latency, levels, drops."""

    def __init__(self) -> None:
        self.audio_samples = 0
        self.compute_s = 0.0
        self.calls = 0
        self.dropped_samples = 0
        self.level_db = -120.0
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)  # (end sample, arrival)
        self.latencies_ms: dict[str, deque[float]] = {}

    def arrived(self, block: AudioBlock) -> None:
        n = len(block.samples)
        self.audio_samples += n
        self._arrivals.append((self.audio_samples, block.arrival_s))
        if n:
            rms = float(np.sqrt(np.mean(np.square(block.samples, dtype=np.float64))))
            self.level_db = 20 * np.log10(max(rms, 1e-6))

    def arrival_of(self, sample: int) -> float | None:
        """Wall time at which audio sample index `sample` had arrived."""
        for end, when in self._arrivals:
            if end >= sample:
                return when
        return self._arrivals[-1][1] if self._arrivals else None

    def saw(self, event: Event, now: float) -> None:
        end_frame = getattr(event, "end_frame", None)
        if end_frame is None:
            return
        arrived = self.arrival_of(int(end_frame) * FRAME_SAMPLES)
        if arrived is not None:
            kind = EVENT_TYPES[type(event)]
            self.latencies_ms.setdefault(kind, deque(maxlen=200)).append((now - arrived) * 1000)

    @property
    def rtf(self) -> float | None:
        """Compute seconds per second of audio (below 1 keeps up with real time)."""
        return self.compute_s / (self.audio_samples / SAMPLE_RATE) if self.audio_samples else None

    def stats(self, windows: int = 0) -> Stats:
        latency = {  # arrival of an event's last sample -> event published, per event type
            f"{kind}_p50": float(np.percentile(list(v), 50)) for kind, v in self.latencies_ms.items() if v
        }
        return Stats(
            audio_frames=self.audio_samples // FRAME_SAMPLES,
            windows=windows,
            rtf=self.rtf,
            latency_ms=latency,
            dropped_samples=self.dropped_samples,
        )


class StreamRunner:
    """Feeds one source into one engine stream and publishes the events on `bus`.

    `executor` is the compute thread, where a plain stream's calls run (a scheduled stream brings
    its own coroutines, `accept_async`/`flush_async`, and is closed there). `fast=True` makes the
    source wait for compute (files as fast as compute allows), otherwise the source is never held
    back and a backlog is reported to the engine instead.
    """

    def __init__(
        self,
        stream: EngineStream,
        bus: EventBus,
        executor: Executor | None,
        fast: bool = False,
        history_s: float = HISTORY_S,
        dropped: Callable[[], int] | None = None,
    ) -> None:
        self.stream = stream
        self.bus = bus
        self.executor = executor
        self.meter = Meter()
        self.history = AudioHistory(history_s)
        self._queue: asyncio.Queue[AudioBlock | None] = asyncio.Queue(maxsize=4 if fast else 0)
        self._dropped = dropped
        self._last_stats_at = 0
        self._queued_samples = 0  # audio queued but not yet handed to the engine
        self._engine_stats = False  # once the engine reports Stats, the app adds to those instead
        self.pause = PauseSwitch()
        self.finished = asyncio.Event()
        self.listeners: list[Callable[[AudioBlock], None]] = []  # raw audio taps (TUI recorder)
        # a stream served by a batching scheduler brings its own coroutines (app.compute); a plain
        # stream is called on the compute thread, the only thread that touches engine state
        self._scheduled = getattr(stream, "accept_async", None) is not None
        self._accept = stream.accept_async if self._scheduled else self._accept_plain
        self._flush = getattr(stream, "flush_async", None) or stream.flush

    async def _compute(self, fn: Callable[..., Any], *args: Any) -> list[Event]:
        """Run an engine call: its own coroutine (a scheduled stream) or on the compute thread."""
        started = time.perf_counter()
        if asyncio.iscoroutinefunction(fn):
            events = await fn(*args)
        else:
            events = await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        self.meter.compute_s += time.perf_counter() - started
        self.meter.calls += 1
        return list(events)

    def _publish(self, events: Sequence[Event]) -> None:
        now = time.monotonic()
        for event in events:
            self.meter.saw(event, now)
            if isinstance(event, Stats):  # the engine's own figures, completed with the app's
                self._engine_stats = True
                event = self._merge_stats(event)
            self.bus.publish(event)

    def _merge_stats(self, engine_stats: Stats) -> Stats:
        mine = self.meter.stats(engine_stats.windows)
        latency = {**engine_stats.latency_ms, **mine.latency_ms}
        return Stats(
            audio_frames=engine_stats.audio_frames, windows=engine_stats.windows,
            rtf=engine_stats.rtf if engine_stats.rtf is not None else mine.rtf,
            latency_ms=latency,
            dropped_samples=engine_stats.dropped_samples + mine.dropped_samples,
            degraded=engine_stats.degraded,
        )

    async def _produce(self, blocks: AsyncIterator[AudioBlock]) -> None:
        cancelled = False
        try:
            async for block in blocks:
                if self.pause.paused:
                    continue  # a paused live source is dropped (files wait in paced_blocks)
                self._queued_samples += len(block.samples)
                await self._queue.put(block)
        except asyncio.CancelledError:
            cancelled = True  # the runner is going away and reads no end marker: waiting on a
            raise  # full queue for room to put one would never end (and hang loop shutdown)
        finally:
            if not cancelled:
                await self._queue.put(None)

    def _report_load(self, load: dict[str, Any]) -> None:
        """Hand the backlog and real-time factor to the stream (a scheduled stream keeps them for
        the compute thread; a plain one is called there, from `_accept_plain`)."""
        report = getattr(self.stream, "report_load", None)
        if report is None:
            return
        try:
            report(**load)
        except TypeError:
            pass  # an engine whose report_load takes other figures: it decides without ours

    def _accept_plain(self, samples: np.ndarray, load: dict[str, Any] | None = None) -> list[Event]:
        """A plain stream's block, on the compute thread: the load report, then the samples."""
        if load is not None:
            self._report_load(load)
        return self.stream.accept(samples)

    async def run(self, blocks: AsyncIterator[AudioBlock]) -> None:
        """Consume `blocks` until they end, then flush the stream; events go to the bus."""
        producer = asyncio.create_task(self._produce(blocks))
        try:
            ended = False
            while not ended:
                first = await self._queue.get()
                batch = [first]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                if batch[-1] is None:
                    ended = True
                audio = [b for b in batch if b is not None]
                if not audio:
                    continue
                load = {"backlog_samples": self._queued_samples, "rtf": self.meter.rtf}  # this batch and what queued behind it
                for block in audio:
                    self._queued_samples -= len(block.samples)
                    self.meter.arrived(block)
                    self.history.append(block.samples)
                    for listener in self.listeners:
                        listener(block)
                if self._dropped is not None:
                    self.meter.dropped_samples = self._dropped()
                samples = audio[0].samples if len(audio) == 1 else np.concatenate([b.samples for b in audio])
                if self._scheduled:
                    self._report_load(load)
                    self._publish(await self._compute(self._accept, samples))
                else:
                    self._publish(await self._compute(self._accept, samples, load))
                self._maybe_stats()
            self._publish(await self._compute(self._flush))
            if not self._engine_stats:
                self.bus.publish(self.meter.stats())
            close = getattr(self.stream, "close", None)
            if close is not None:  # a scheduled stream leaves its scheduler
                await asyncio.get_running_loop().run_in_executor(self.executor, close)
        finally:
            producer.cancel()
            self.finished.set()

    def _maybe_stats(self) -> None:
        if self._engine_stats:
            return
        if self.meter.audio_samples - self._last_stats_at >= STATS_EVERY_SAMPLES:
            self._last_stats_at = self.meter.audio_samples
            self.bus.publish(self.meter.stats())
