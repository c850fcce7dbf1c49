"""The textual TUI driven with textual's pilot: keys, dialogs and widget state, plus rendered text.

Sessions run the scripted fake engine over synthetic audio and, for voiceprints, the real
VoiceprintService and SpeakerStore with a scripted band-energy embedder.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from app.session import InputChoice, LiveSession, SessionOptions
from app.tui import CaptionBoard, HelpScreen, LiveTUI, NameTrackScreen, RecordScreen, SpeakerColours, Timeline
from engine.events import CaptionFinal, CaptionPartial, SpeakerActivity, SpeakerMatch, SpeakerTurn, Word
from tests.test_app_fakes import FakeEmbedder, FakeEngine, syllables
from voiceprints.service import VoiceprintService
from voiceprints.store import SpeakerStore

SIZE = (100, 30)


def make_session(tmp_path: Any, seconds: float = 4.5, speed: float | None = None,
                 pitches: tuple[float, ...] = (220.0, 700.0), **opts: Any) -> LiveSession:
    """A session on `seconds` of syllables, second by second in the voices (pitches) `pitches`, in turn."""
    engine = FakeEngine(FakeEmbedder())
    speakers = VoiceprintService(engine.embedder, SpeakerStore(tmp_path / "speakers.db"))
    engine.speakers = speakers
    audio = np.concatenate([syllables(1.0, pitches[k % len(pitches)]) for k in range(int(seconds))]
                           + [syllables(seconds % 1.0)])
    source = InputChoice("file", "talk.wav", samples=audio, speed=speed)
    return LiveSession(engine, source, SessionOptions(headless=False, **opts), speakers)


async def wait_for(pilot: Any, condition: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.02)


async def test_captions_timeline_and_matches_show_the_session(tmp_path) -> None:
    app = LiveTUI(make_session(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.input_ended)
        await wait_for(pilot, lambda: "word4b" in str(app.w_captions.render()))
        captions = str(app.w_captions.render())
        # first caption revised to bob by the fake engine; speakers label each turn
        assert captions.splitlines() == [
            "bob: word0a word0b", "unknown-1: word1a word1b", "alice: word2a word2b",
            "unknown-1: word3a word3b", "alice: word4a word4b",
        ]
        timeline = app.timeline.render(60).plain.splitlines()
        assert timeline[0].startswith("alice") and timeline[1].startswith("unknown-1")
        assert "^" not in timeline[2]  # turns alternate: no overlap
        matches = str(app.w_matches.render())
        assert "✓ alice 0.81/0.50" in matches
        assert "input ended" in str(app.w_gauges.render())


async def test_pause_help_save_and_quit_keys(tmp_path) -> None:
    out = tmp_path / "talk.txt"
    session = make_session(tmp_path, seconds=30, speed=4.0, outputs={"transcript": str(out)})
    app = LiveTUI(session)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: session.runner is not None and session.runner.meter.audio_samples > 0)
        await pilot.press("p")
        pause = session.runner.pause
        assert pause.paused
        await wait_for(pilot, lambda: str(app.w_level.render()) == "PAUSED")
        # the file reader is parked on the pause, and every block it read has been taken in
        await wait_for(pilot, lambda: pause.holding == 1 and session.runner._queue.empty())
        fed = session.runner.meter.audio_samples
        for _ in range(20):  # the app keeps running (refreshes, engine results): nothing more is read
            await pilot.pause()
        assert pause.holding == 1 and session.runner.meter.audio_samples == fed
        await pilot.press("p")
        await wait_for(pilot, lambda: session.runner.meter.audio_samples > fed)  # and reading resumes
        assert not session.runner.pause.paused
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await wait_for(pilot, lambda: len(session.record.captions) >= 1)
        await pilot.press("s")
        assert out.read_text().startswith("word0a word0b")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_value == 0
    assert session.stopping.is_set() and session.runner.finished.is_set()
    assert not session.interrupted


async def test_enroll_dialog_records_with_progress_and_enrolls(tmp_path) -> None:
    # one voice: which seconds of the file the dialog records depends on the machine's speed, and a
    # stretch of two alternating voices is (rightly) refused as mixed whenever their shares differ
    session = make_session(tmp_path, seconds=60, speed=40.0, pitches=(220.0,))
    app = LiveTUI(session)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: session.runner is not None)
        session.runner.pause.toggle()  # hold the file while the dialog opens (a loaded machine is slow)
        await pilot.press("e")
        screen = app.screen
        assert isinstance(screen, RecordScreen) and screen.mode == "enroll"
        screen.query_one("#name").value = "dana"
        await pilot.press("enter")
        assert screen.busy and screen.query_one("#progress").progress == 0
        session.runner.pause.toggle()
        await wait_for(pilot, lambda: screen.outcome is not None or "error" in str(screen.query_one("#status").render()))
        assert screen.outcome is not None, str(screen.query_one("#status").render())
        assert screen.query_one("#progress").progress == 100
        session.runner.pause.toggle()
        assert screen.outcome.name == "dana" and screen.outcome.total_recordings == 1
        assert [p.name for p in session.speakers.list()] == ["dana"]
        await pilot.press("escape", "v")
        screen = app.screen
        assert isinstance(screen, RecordScreen) and screen.mode == "verify"
        screen.query_one("#name").value = "dana"
        await pilot.press("enter")
        session.runner.pause.toggle()
        await wait_for(pilot, lambda: screen.outcome is not None or "error" in str(screen.query_one("#status").render()))
        verdict = screen.outcome
        assert verdict is not None and verdict.name == "dana"
        assert f"score {verdict.score:.3f}" in str(screen.query_one("#status").render())
        await pilot.press("escape", "q")


async def test_name_track_enrolls_from_what_it_said_and_relabels(tmp_path) -> None:
    session = make_session(tmp_path, seconds=12)
    app = LiveTUI(session)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.input_ended)
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, NameTrackScreen)
        assert screen.query_one("#track").value == "unknown-1"
        await pilot.press("enter")  # track prefilled: focus moves to the name
        screen.query_one("#name").value = "erin"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.outcome is not None or "error" in str(screen.query_one("#status").render()))
        assert screen.outcome is not None, str(screen.query_one("#status").render())
        # six odd seconds were unknown-1's solo turns: that is what was enrolled
        assert session.speakers.list()[0].name == "erin"
        assert abs(screen.outcome.total_net_speech_samples - 6 * 16000) <= 6 * 16000 * 0.3
        assert session.runner.stream.renamed[:2] == ("unknown-1", "erin")
        await pilot.press("escape")
        await wait_for(pilot, lambda: "erin: word1a" in str(app.w_captions.render()))
        assert "unknown-1" not in str(app.w_captions.render())
        assert "erin" in app.timeline.render(60).plain


async def test_name_track_refuses_an_unknown_track(tmp_path) -> None:
    session = make_session(tmp_path, seconds=2)
    app = LiveTUI(session)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.input_ended)
        await pilot.press("n")
        screen = app.screen
        screen.query_one("#track").value = "unknown-9"
        screen.query_one("#name").focus()
        screen.query_one("#name").value = "zed"
        await pilot.press("enter")
        assert "no track 'unknown-9'" in str(screen.query_one("#status").render())
        assert session.speakers.list() == []
        await pilot.press("escape", "ctrl+c")  # Ctrl-C quits too, as an interruption
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_value == 130 and session.interrupted


def test_settled_turn_moves_unnamed_activity_to_its_speaker() -> None:
    """Activity drawn as `unknown` before the run had an x-vector goes to the turn's lane."""
    timeline = Timeline(SpeakerColours())
    on_off = tuple((1.0, 0.0) for _ in range(60)) + tuple((0.0, 0.0) for _ in range(30))
    timeline.apply(SpeakerActivity(0, ("unknown", "unknown"), on_off))  # frames 0-59 speech
    timeline.apply(SpeakerActivity(90, ("unknown", "unknown"), tuple((1.0, 0.0) for _ in range(60))))  # 90-149
    timeline.apply(SpeakerTurn(1, "ann", 0, 60))
    assert sorted(timeline.spans) == [("ann", 0, 60, 0), ("unknown", 90, 150, 0)]
    timeline.apply(SpeakerTurn(2, "unknown", 90, 150))  # never named: stays unknown
    timeline.apply(SpeakerTurn(3, "bob", 120, 200))  # part of a span: split at the turn's start
    assert sorted(timeline.spans) == [("ann", 0, 60, 0), ("bob", 120, 150, 0), ("unknown", 90, 120, 0)]
    lanes, _ = timeline.lanes(30)
    assert set(lanes) == {"ann", "bob", "unknown"}


def test_claimed_turn_keeps_an_overlapping_voice_apart() -> None:
    """Two unnamed channels overlap; each settled turn takes only its own channel's activity."""
    timeline = Timeline(SpeakerColours())
    probs = tuple((1.0, 0.0) for _ in range(40)) + tuple((1.0, 1.0) for _ in range(20)) \
        + tuple((0.0, 1.0) for _ in range(60))
    timeline.apply(SpeakerActivity(0, ("unknown", "unknown"), probs))  # ch 0: 0-59, ch 1: 40-119
    timeline.apply(SpeakerTurn(1, "ann", 0, 60))
    timeline.apply(SpeakerTurn(2, "bob", 40, 120))
    assert sorted(timeline.spans) == [("ann", 0, 60, 0), ("bob", 40, 120, 1)]
    lanes, overlap = timeline.lanes(1500)  # one column per frame: the 30 s window ends at frame 120
    assert overlap.sum() == 20


def test_rendered_text_snapshot() -> None:
    colours = SpeakerColours()
    board = CaptionBoard(colours)
    timeline = Timeline(colours)
    events = [
        CaptionFinal(1, "hello there", (Word("hello", 0, 20, "ann"), Word("there", 20, 40, "ann")), 0, 40, "ann"),
        CaptionFinal(2, "hi", (Word("hi", 40, 60, "unknown-1"),), 40, 60, "unknown-1"),
        CaptionPartial("how are", 60, 90, "unknown-1"),
        SpeakerActivity(0, ("ann", "unknown-1"), tuple((1.0, 0.0) for _ in range(30)) + tuple((1.0, 1.0) for _ in range(30))
                        + tuple((0.0, 1.0) for _ in range(30))),
        SpeakerMatch("ann", "ann", 0.77, 0.5, True),
    ]
    for e in events:
        board.apply(e)
        timeline.apply(e)
    assert board.plain() == "ann: hello there\nunknown-1: hi how are"
    spans = board.render().spans
    partial_style = str(spans[-1].style)
    assert "dim" in partial_style and "italic" in partial_style and "dim" not in str(spans[1].style)
    # 30 s in 30 columns: 1 s per column; speech covers the last 1.8 s (90 frames)
    assert timeline.render(12 + 2 + 30).plain.splitlines() == [
        "ann          " + "·" * 28 + "██",
        "unknown-1    " + "·" * 28 + "██",
        "overlap      " + " " * 28 + "^^",
        "             -30s" + "now".rjust(26),
    ]


class _ThreadNotingStore(SpeakerStore):
    """The real store, noting which thread reads voiceprints or people."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reader_threads: list[int] = []

    def people(self) -> Any:
        self.reader_threads.append(threading.get_ident())
        return super().people()

    def voiceprint(self, *args: Any, **kwargs: Any) -> Any:
        self.reader_threads.append(threading.get_ident())
        return super().voiceprint(*args, **kwargs)


async def test_the_speaker_store_is_not_read_on_the_event_loop(tmp_path) -> None:
    engine = FakeEngine(FakeEmbedder())
    store = _ThreadNotingStore(tmp_path / "speakers.db")
    speakers = VoiceprintService(engine.embedder, store)
    engine.speakers = speakers
    source = InputChoice("file", "talk.wav", samples=np.concatenate([syllables(1.0, 220.0)] * 3))
    session = LiveSession(engine, source, SessionOptions(headless=False), speakers)
    app = LiveTUI(session)
    async with app.run_test(size=SIZE) as pilot:
        loop_thread = threading.get_ident()
        await wait_for(pilot, lambda: session.runner is not None)
        await session.enroll("dana", [np.concatenate([syllables(1.0, 220.0)] * 8)])
        await wait_for(pilot, lambda: app._enrolled_count == 1)  # the panel's count follows the store
        for _ in range(3):
            app._matches_text()  # the render path reads no store
        await pilot.press("q")
    assert store.reader_threads, "the store was never read: the test would prove nothing"
    assert loop_thread not in store.reader_threads
