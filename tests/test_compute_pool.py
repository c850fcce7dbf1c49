"""The compute pool over the real engine with scripted fake models: completions per stream,
batching across streams, no batching wait for one stream, engine state only on the worker thread.

No sleeps and no timers: the pool has no batching wait; every await has a timeout.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.bus import EventBus
from app.compute import ComputePool
from app.live import StreamRunner
from app.session_speakers import SessionSpeakers
from app.sources import AudioBlock
from app.writers import SessionRecord
from engine import Engine, EngineConfig
from engine.config import DegradeConfig
from engine.events import CaptionFinal, CaptionRevision, Stats
from engine.fakes import ScriptedModels, frames_to_audio, script
from engine.stream import Stream

TIMEOUT = 30.0
SHORT = [(0, "a short turn of a few words here"), (1, "and a reply")]  # 3.2 s: two caption windows
LONG = [(1, "a long turn that goes on and on with many words"), (0, "and another one with more words")] * 3


def _engine(max_batch: int = 16) -> Engine:
    return Engine(ScriptedModels(num_speakers=2), EngineConfig(degrade=DegradeConfig(enabled=False), max_batch=max_batch))


def _said(events: list) -> list:
    return [e for e in events if not isinstance(e, Stats)]


def _sync(turns: list) -> list:
    s = _engine().new_stream()
    return _said(s.accept(frames_to_audio(script(turns))))


async def test_one_stream_is_computed_at_once_without_a_batching_wait() -> None:
    pool = ComputePool(_engine())
    try:
        stream = await pool.open_stream()
        events = await asyncio.wait_for(pool.submit(stream, frames_to_audio(script(SHORT))), TIMEOUT)
        assert _said(events) == _sync(SHORT) and events
    finally:
        pool.shutdown()


async def test_a_stream_does_not_wait_for_another_streams_pending_work() -> None:
    """B has many windows waiting, A one block: A's events come back after A's requests, ticks
    before B's are done (a global 'all idle' barrier would hold A until B's last tick)."""
    pool = ComputePool(_engine(max_batch=2))
    try:
        a, b = await pool.open_stream(), await pool.open_stream()
        done_at: dict[str, int] = {}

        async def feed(name: str, stream, turns) -> list:
            events = await pool.submit(stream, frames_to_audio(script(turns)))
            done_at[name] = pool.ticks
            return events

        got_a, got_b = await asyncio.wait_for(asyncio.gather(feed("a", a, SHORT), feed("b", b, LONG)), TIMEOUT)
        assert done_at["a"] < done_at["b"], done_at
        assert _said(got_a) == _sync(SHORT) and _said(got_b) == _sync(LONG)
    finally:
        pool.shutdown()


async def test_concurrent_streams_share_forwards_and_say_the_same() -> None:
    pool = ComputePool(_engine())
    try:
        streams = [await pool.open_stream() for _ in range(3)]
        audio = frames_to_audio(script(LONG))
        got = await asyncio.wait_for(asyncio.gather(*(pool.submit(s, audio) for s in streams)), TIMEOUT)
        stats = pool.scheduler.stats
        assert max(stats.batch_sizes) > 1 and pool.batched_windows > 0
        assert stats.forwards < stats.windows
        assert all(_said(g) == _sync(LONG) for g in got)
    finally:
        pool.shutdown()


async def test_engine_state_is_touched_only_on_the_compute_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A StreamRunner over the pool (load reports, blocks, flush, close): every Stream call that
    reads or changes engine state runs on the compute worker, never on the event loop thread."""
    off_thread: list[str] = []
    for name in ("submit", "deliver", "report_load", "report_timing", "take_requests", "finish_input",
                 "reset", "speaker_audio", "rename_speaker", "add_voiceprint"):
        original = getattr(Stream, name)

        def checked(self, *args, __original=original, __name=name, **kwargs):
            if not threading.current_thread().name.startswith("compute"):
                off_thread.append(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(Stream, name, checked)
    pool = ComputePool(_engine())
    try:
        stream = await pool.open_stream()
        bus = EventBus()
        runner = StreamRunner(stream, bus, pool.executor, fast=True)
        audio = frames_to_audio(script(LONG))

        async def blocks():
            for i in range(0, len(audio), 1600):
                yield AudioBlock(audio[i : i + 1600], i / 16000)

        await asyncio.wait_for(runner.run(blocks()), TIMEOUT)
        assert bus.last_seq > 0
        assert not off_thread, off_thread
    finally:
        pool.shutdown()


class _FailingModels(ScriptedModels):
    def run_windows(self, batch, want):
        raise RuntimeError("the model failed")


async def test_a_failed_tick_reaches_the_waiting_streams_instead_of_hanging() -> None:
    pool = ComputePool(Engine(_FailingModels(num_speakers=2), EngineConfig(degrade=DegradeConfig(enabled=False))))
    try:
        a, b = await pool.open_stream(), await pool.open_stream()
        audio = frames_to_audio(script(SHORT))
        got = await asyncio.wait_for(asyncio.gather(pool.submit(a, audio), pool.submit(b, audio),
                                                    return_exceptions=True), TIMEOUT)
        assert [str(g) for g in got] == ["the model failed"] * 2, got
    finally:
        pool.shutdown()


class _GatedModels(ScriptedModels):
    """Scripted models whose `pause_at`-th forward blocks the worker until `release` is set."""

    def __init__(self, pause_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pause_at, self.forwards = pause_at, 0
        self.paused, self.release = threading.Event(), threading.Event()

    def run_windows(self, batch, want):
        self.forwards += 1
        if self.forwards == self.pause_at:
            self.paused.set()
            self.release.wait(TIMEOUT)
        return super().run_windows(batch, want)


async def test_a_rename_reaches_the_bus_after_the_captions_it_revises() -> None:
    """A rename while the stream's finished captions wait in its outbox (its call is still open):
    its revisions are published behind those captions, so every sink applies them."""
    models = _GatedModels(pause_at=27, num_speakers=2)
    config = EngineConfig(degrade=DegradeConfig(enabled=False), max_batch=1, max_queued_windows=1000)
    pool = ComputePool(Engine(models, config))  # room for the whole conversation in one call
    try:
        stream = await pool.open_stream()
        bus, record, seen = EventBus(), SessionRecord(), []
        bus.tap(lambda item: (record.add(item.event), seen.append(item.event)))
        runner = StreamRunner(stream, bus, pool.executor, fast=True)
        audio = frames_to_audio(script(LONG))

        async def blocks():
            yield AudioBlock(audio, 0.0)  # one call: its captions wait in the outbox until it returns

        running = asyncio.create_task(runner.run(blocks()))
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, models.paused.wait), TIMEOUT)
        # the case under test: captions labelled unknown-1 made, none published yet
        assert any(isinstance(e, CaptionRevision) and e.speaker == "unknown-1" for e in stream.outbox)
        assert not any(isinstance(e, CaptionFinal) for e in seen)
        speakers = SessionSpeakers()
        speakers.pool, speakers.bus, speakers.runner = pool, bus, runner
        renaming = asyncio.create_task(speakers.relabel_track("unknown-1", "erin", None))
        await asyncio.sleep(0)  # the rename is queued on the worker behind the paused forward
        models.release.set()
        revisions = await asyncio.wait_for(renaming, TIMEOUT)
        await asyncio.wait_for(running, TIMEOUT)
        assert revisions and all(r in seen for r in revisions)
        for r in revisions:  # each revision after the caption it revises
            caption = next(i for i, e in enumerate(seen) if isinstance(e, CaptionFinal) and e.caption_id == r.caption_id)
            assert caption < seen.index(r)
        lines = record.speaker_turn_lines()
        assert "erin" in {s for s, _ in lines} and "unknown-1" not in {s for s, _ in lines}, lines
    finally:
        models.release.set()
        pool.shutdown()
