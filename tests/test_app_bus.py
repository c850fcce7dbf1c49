"""The event bus, the stream runner and the output writers, driven by the scripted fake engine."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from app.bus import EventBus
from app.live import AudioHistory, StreamRunner
from app.sources import AudioBlock, PauseSwitch, paced_blocks
from app.writers import (
    SessionRecord,
    rttm_text,
    srt_text,
    transcript_text,
    vtt_text,
    write_atomically,
)
from engine.events import CaptionFinal, CaptionPartial, CaptionRevision, SpeakerTurn, Stats, Word, apply_revision
from engine.timebase import SAMPLE_RATE
from tests.test_app_fakes import FakeStream, tone


async def test_slow_subscriber_drops_oldest_and_counts() -> None:
    bus = EventBus(log_items=100)
    slow = bus.subscribe(max_items=3)
    fast = bus.subscribe(max_items=100)
    for i in range(10):
        bus.publish(CaptionPartial(f"p{i}", i, i + 1))
    assert slow.dropped == 7 and fast.dropped == 0
    kept = [slow.get_nowait().seq for _ in range(3)]  # type: ignore[union-attr]
    assert kept == [8, 9, 10]
    assert [(await fast.get()).seq for _ in range(10)] == list(range(1, 11))  # type: ignore[union-attr]


async def test_replay_reports_what_the_log_lost() -> None:
    bus = EventBus(log_items=4)
    for i in range(10):
        bus.publish(CaptionPartial(f"p{i}", i, i + 1))
    items, lost = bus.replay_after(3)
    assert [p.seq for p in items] == [7, 8, 9, 10] and lost == 3
    items, lost = bus.replay_after(8)
    assert [p.seq for p in items] == [9, 10] and lost == 0


async def test_closed_bus_ends_subscribers() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(CaptionPartial("x", 0, 1))
    bus.close()
    assert (await sub.get()).seq == 1  # type: ignore[union-attr]
    assert await asyncio.wait_for(sub.get(), 1) is None


async def test_runner_publishes_the_streams_events_in_order() -> None:
    bus = EventBus()
    got = []
    bus.tap(got.append)
    stream = FakeStream()
    runner = StreamRunner(stream, bus, executor=None, fast=True)
    audio = tone(3.25)
    await runner.run(paced_blocks(audio, speed=None))
    expected = FakeStream()
    want = expected.accept(audio) + expected.flush()
    published = [p.event for p in got if not isinstance(p.event, Stats)]
    finals = [e for e in published if isinstance(e, CaptionFinal)]
    assert finals == [e for e in want if isinstance(e, CaptionFinal)]
    assert [p.seq for p in got] == list(range(1, len(got) + 1))
    assert stream.accepted_samples == len(audio)
    stats = [p.event for p in got if isinstance(p.event, Stats)]
    assert stats and stats[-1].audio_frames == len(audio) // 320 and stats[-1].rtf is not None
    assert runner.history.end_sample == len(audio)


async def test_paced_blocks_keep_absolute_deadlines() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay

    orig = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        arrivals = []
        async for block in paced_blocks(tone(1.0), speed=2.0, clock=lambda: now[0]):
            arrivals.append(block.arrival_s)
            now[0] += 0.03  # the consumer spends 30 ms per block
    finally:
        asyncio.sleep = orig  # type: ignore[assignment]
    # 10 blocks of 100 ms at 2x: the last is due at 0.5 s, consumer time absorbed, not added
    assert arrivals[-1] == pytest.approx(0.5)
    assert all(d == pytest.approx(0.02) for d in sleeps[1:])


async def test_paused_file_resumes_where_it_stopped() -> None:
    pause = PauseSwitch()
    blocks = paced_blocks(tone(0.5), speed=None, pause=pause)
    first = await blocks.__anext__()
    assert pause.toggle() is True
    nxt = asyncio.ensure_future(blocks.__anext__())
    await asyncio.sleep(0)
    assert not nxt.done()
    pause.toggle()
    second = await asyncio.wait_for(nxt, 1)
    assert len(first.samples) == len(second.samples) == 1600


def test_audio_history_is_bounded_and_addressable() -> None:
    h = AudioHistory(max_s=1.0)
    for i in range(30):
        h.append(np.full(1600, i, dtype=np.float32))
    assert h.end_sample == 30 * 1600
    assert h.end_sample - h.start_sample <= SAMPLE_RATE + 1600
    span = h.span(29 * 1600 - 10, 29 * 1600 + 10)
    assert span.tolist() == [28.0] * 10 + [29.0] * 10
    assert len(h.span(0, 1600)) == 0


def _record() -> SessionRecord:
    stream = FakeStream()
    record = SessionRecord()
    for e in stream.accept(tone(3.5)) + stream.flush():
        record.add(e)
    return record


def test_transcript_is_plain_words_per_turn() -> None:
    text = transcript_text(_record())
    # second 0 was revised to bob, then unknown-1, alice, unknown-1
    assert text == "word0a word0b\nword1a word1b\nword2a word2b\nword3a word3b\n"


def test_subtitles_carry_speakers_and_times() -> None:
    record = _record()
    srt = srt_text(record)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\n[bob] word0a word0b\n")
    assert "4\n00:00:03,000 --> 00:00:03,500\n[unknown-1] word3a word3b\n" in srt
    vtt = vtt_text(record)
    assert vtt.startswith("WEBVTT\n")
    assert "00:00:01.000 --> 00:00:02.000\n<v unknown-1>word1a word1b\n" in vtt
    rttm = rttm_text(record, "demo").splitlines()
    assert rttm[0] == "SPEAKER demo 1 0.000 1.000 <NA> <NA> alice <NA> <NA>"
    assert len(rttm) == 4


def test_apply_revision_moves_only_the_named_fields() -> None:
    words = (Word("helo", 0, 10, "ann"), Word("world", 10, 20, "ann"))
    cap = CaptionFinal(7, "helo world", words, 0, 20, "ann")
    assert apply_revision(cap, CaptionRevision(7, ("text",), text="hello world")) == CaptionFinal(
        7, "hello world", words, 0, 20, "ann")
    assert apply_revision(cap, CaptionRevision(7, ("words",), text="ignored", words=None)) == cap
    relabelled = apply_revision(cap, CaptionRevision(7, ("speaker",), speaker="bob"))
    assert relabelled.speaker == "bob" and [w.speaker for w in relabelled.words] == ["bob", "bob"]
    mixed = (Word("hello", 0, 10, "bob"), Word("world", 10, 20, "ann"))  # words of their own keep their labels
    revised = apply_revision(cap, CaptionRevision(7, ("speaker", "words"), words=mixed, speaker="bob"))
    assert revised.words == mixed and revised.speaker == "bob" and revised.text == "helo world"
    with pytest.raises(ValueError, match="caption 8"):
        apply_revision(cap, CaptionRevision(8, ("text",), text="x"))


def test_tui_and_files_hold_the_same_revised_captions() -> None:
    """The TUI's board and the files' record fold the same events to the same captions,
    including a speaker rename that relabels the words (the TUI once dropped that)."""
    from app.tui import CaptionBoard, SpeakerColours

    stream = FakeStream()
    events = stream.accept(tone(3.5)) + stream.flush() + stream.rename_speaker("unknown-1", "erin")
    board, record = CaptionBoard(SpeakerColours()), SessionRecord()
    for e in events:
        board.apply(e)
        record.add(e)
    assert board.lines == record.captions and len(record.captions) == 4
    assert [c.speaker for c in record.ordered_captions()] == ["bob", "erin", "alice", "erin"]
    for cap in record.ordered_captions():
        assert {w.speaker for w in cap.words} == {cap.speaker}


def test_atomic_write_leaves_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "out.txt"
    write_atomically(target, "first\n")

    with pytest.raises(TypeError):
        write_atomically(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_turn_record_keeps_overlaps() -> None:
    record = SessionRecord()
    record.add(SpeakerTurn(1, "a", 0, 100))
    record.add(SpeakerTurn(2, "b", 50, 120, overlap=True))
    lines = rttm_text(record).splitlines()
    assert [ln.split()[7] for ln in lines] == ["a", "b"]
    assert lines[1].split()[3:5] == ["1.000", "1.400"]


async def test_block_arrival_is_measured() -> None:
    bus = EventBus()
    runner = StreamRunner(FakeStream(), bus, executor=None, fast=True)

    async def two_blocks():
        yield AudioBlock(tone(0.6), 100.0)
        yield AudioBlock(tone(0.6), 101.0)

    await runner.run(two_blocks())
    assert runner.meter.arrival_of(100) == 100.0
    assert runner.meter.arrival_of(int(0.7 * SAMPLE_RATE)) == 101.0
