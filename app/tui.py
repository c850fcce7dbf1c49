"""The terminal UI (textual): live captions, a speaker timeline, matches, level and gauges.

The UI reads the session's bus through its own bounded queue (so a slow terminal never holds up
the engine) and folds events into the panels of `app.tui_panels` (captions, timeline, gauges),
plain objects the widgets render at a fixed rate. Keys: e enroll (name, record with a progress
bar), n name an `unknown-N` track (enroll from what it already said), v verify, p pause, s save
transcript, q quit, ? help; the dialogs are in `app.tui_dialogs`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static

from app.errors import AppError
from app.shutdown import StopSignals, exit_status
from app.tui_dialogs import HelpScreen, NameTrackScreen, RecordScreen
from app.tui_panels import TIMELINE_S, CaptionBoard, Gauges, SpeakerColours, Timeline
from engine.events import Event
from engine.timebase import SAMPLE_RATE

__all__ = ["CaptionBoard", "Gauges", "HelpScreen", "LiveTUI", "NameTrackScreen", "RecordScreen",
           "SpeakerColours", "Timeline"]

ENROLL_SECONDS = 8.0
VERIFY_SECONDS = 4.0


class LiveTUI(App[int]):
    """The live terminal UI over a `LiveSession` (app.session)."""

    TITLE = "unispeech-live"
    CSS = """
    #main { width: 3fr; }
    #side { width: 1fr; min-width: 30; }
    #captions-box { height: 1fr; border: round $primary; }
    #timeline { height: auto; min-height: 5; border: round $secondary; }
    #matches, #level, #gauges { height: auto; border: round $secondary; padding: 0 1; }
    ModalScreen { align: center middle; }
    #dialog { width: 84; max-width: 100%; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    .title { text-style: bold; margin-bottom: 1; }
    """
    BINDINGS = [
        Binding("e", "enroll", "Enroll"),
        Binding("n", "name_track", "Name track"),
        Binding("v", "verify", "Verify"),
        Binding("p", "pause", "Pause"),
        Binding("s", "save", "Save"),
        Binding("q", "quit_app", "Quit"),
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True),
        Binding("question_mark,f1", "help", "Help"),
    ]

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.colours = SpeakerColours()
        self.board = CaptionBoard(self.colours)
        self.timeline = Timeline(self.colours)
        self.gauges = Gauges()
        self.ui_dropped = 0
        self.input_ended = False
        self.error: str | None = None  # a user-facing failure, printed by the caller after exit
        self._dirty = True
        self._sub: Any = None
        self._signals: StopSignals | None = None
        self._stopping_code: int | None = None  # set by the first Ctrl-C or signal
        self._enrolled_count = 0  # kept off the render path: the store is read off the event loop

    def compose(self) -> ComposeResult:
        # kept as attributes: app.query_one searches the active screen, which may be a dialog
        self.w_box = VerticalScroll(id="captions-box")
        self.w_captions = Static("", id="captions")
        self.w_timeline = Static("", id="timeline")
        self.w_matches = Static("", id="matches")
        self.w_level = Static("", id="level")
        self.w_gauges = Static("", id="gauges")
        yield Header(show_clock=False)
        with Horizontal():
            with Vertical(id="main"):
                with self.w_box:
                    yield self.w_captions
                yield self.w_timeline
            with Vertical(id="side"):
                yield self.w_matches
                yield self.w_level
                yield self.w_gauges
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = f"input: {self.session.source.label}"
        self.w_box.border_title = "captions"
        self.w_timeline.border_title = f"speakers, last {TIMELINE_S} s"
        self.w_matches.border_title = "enrolled matches"
        self.w_level.border_title = "input level"
        self.w_gauges.border_title = "engine"
        # SIGTERM, or SIGINT from outside the terminal; forcing goes through textual's exit, which
        # gives the terminal back (os._exit would leave it in raw mode)
        self._signals = StopSignals(self._on_stop_signal, force_exit=self.exit)
        self._signals.install()
        try:
            await self.session.start()
        except AppError as exc:
            self.error = str(exc)
            self.exit(2)
            return
        service = self.session.speakers
        if service is not None:
            service.on_change.append(self._count_enrolled)  # runs on the thread that changed the store
            await asyncio.get_running_loop().run_in_executor(None, self._count_enrolled)
        self._sub = self.session.bus.subscribe(2000)
        self.run_worker(self._consume(), exclusive=False, group="bus")
        self.run_worker(self._run_input(), exclusive=False, group="input")
        self.set_interval(0.1, self._refresh_view)

    async def _run_input(self) -> None:
        try:
            await self.session.run_input()
        except AppError as exc:  # e.g. the microphone could not be opened
            self.error = str(exc)
            await self.session.close()
            self.exit(2)
            return
        self.input_ended = True
        if self.session.options.outputs:
            self.session.write_outputs()
        self.sub_title = f"input: {self.session.source.label} (ended)"
        self._dirty = True

    async def _consume(self) -> None:
        while True:
            item = await self._sub.get()
            if item is None:
                return
            self.ui_dropped = self._sub.dropped
            if item.event is not None:
                self.apply_event(item.event)

    def apply_event(self, event: Event) -> None:
        """Fold one engine event into what the UI shows."""
        self.board.apply(event)
        self.timeline.apply(event)
        self.gauges.apply(event)
        self._dirty = True

    def apply_rename(self, old: str, new: str, events: list[Event]) -> None:
        """After naming a track: relabel lanes and matches; apply revisions the bus no longer carries."""
        self.timeline.rename(old, new)
        self.gauges.rename(old, new)
        if self._sub is None or self._sub.closed:
            for e in events:
                self.apply_event(e)
        self._dirty = True

    # --- rendering ----------------------------------------------------------------------------

    def _refresh_view(self) -> None:
        runner = self.session.runner
        self.w_level.update(self._level_text(runner))
        if not self._dirty:
            return
        self._dirty = False
        self.w_captions.update(self.board.render())
        self.w_box.scroll_end(animate=False)
        width = self.w_timeline.content_size.width or 80
        self.w_timeline.update(self.timeline.render(width))
        self.w_matches.update(self._matches_text())
        self.w_gauges.update(self._gauges_text(runner))

    def _level_text(self, runner: Any) -> Text:
        if runner is None:
            return Text("no local input", style="dim")
        if runner.pause.paused:
            return Text("PAUSED", style="bold yellow")
        db = runner.meter.level_db
        bars = int(max(0.0, min(1.0, (db + 60) / 60)) * 20)
        style = "red" if db > -3 else ("yellow" if db > -12 else "green")
        return Text("█" * bars, style=style) + Text("·" * (20 - bars), style="grey30") + Text(f" {db:5.1f} dB")

    def _count_enrolled(self) -> None:
        """How many people the store holds, for the matches panel (a store read: never on the loop)."""
        self._enrolled_count = len(self.session.speakers.list())

    def _matches_text(self) -> Text:
        if not self.gauges.matches:
            return Text(f"no match yet ({self._enrolled_count} enrolled)", style="dim")
        out = Text()
        for track, m in self.gauges.matches.items():
            if m.accepted:
                out.append("✓ ", style="green")
                out.append(m.name or track, style=f"bold {self.colours(m.name or track)}")
            else:  # the best candidate, below the threshold
                out.append("✗ ", style="red")
                out.append(track, style=f"bold {self.colours(track)}")
                if m.name:
                    out.append(f" ~{m.name}?", style="dim")
            out.append(f" {m.score:.2f}/{m.threshold:.2f}\n")
        return out

    def _gauges_text(self, runner: Any) -> Text:
        s = self.gauges.stats
        rtf = s.rtf if s is not None and s.rtf is not None else (runner.meter.rtf if runner else None)
        out = Text()
        out.append(f"RTF      {rtf:.2f}\n" if rtf is not None else "RTF      -\n",
                   style="red" if rtf is not None and rtf > 1 else "")
        if s is not None:
            for key in sorted(s.latency_ms)[:5]:
                label = key.replace("caption_", "").replace("speaker_", "").replace("_p50", " p50")
                out.append(f"{label[:16]:<16} {s.latency_ms[key]:7.0f} ms\n")
            out.append(f"dropped  {s.dropped_samples / SAMPLE_RATE:.1f} s audio\n",
                       style="red" if s.dropped_samples else "")
            if s.degraded:
                out.append("degraded " + ", ".join(s.degraded) + "\n", style="yellow")
        out.append(f"UI drops {self.ui_dropped} events")
        if self.input_ended:
            out.append("\ninput ended", style="bold")
        return out

    # --- actions ------------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_enroll(self) -> None:
        self.push_screen(RecordScreen("enroll", ENROLL_SECONDS))

    def action_verify(self) -> None:
        self.push_screen(RecordScreen("verify", VERIFY_SECONDS))

    def action_name_track(self) -> None:
        self.push_screen(NameTrackScreen(self.session.tracks()))

    def action_pause(self) -> None:
        if self.session.runner is None:
            return
        paused = self.session.runner.pause.toggle()
        self.notify("paused" if paused else "resumed")

    def action_save(self) -> None:
        try:
            paths = self.session.save_transcript()
            self.notify("saved " + ", ".join(paths))
        except OSError as exc:
            self.notify(f"cannot save: {exc}", severity="error")

    async def _finish(self, code: int) -> None:
        self.session.stopping.set()
        if self.session.runner is not None and self.session.runner.pause.paused:
            self.session.runner.pause.toggle()
        if self.session.runner is not None:
            try:  # flush what was heard, so the files end with it
                await asyncio.wait_for(self.session.runner.finished.wait(), 10)
            except asyncio.TimeoutError:
                pass
        await self.session.close()
        self.exit(code)

    def on_unmount(self) -> None:
        if self._signals is not None:
            self._signals.remove()

    async def action_quit_app(self) -> None:
        await self._finish(0)

    def _on_stop_signal(self, signum: int) -> None:
        self.session.stop(signum)
        self._stopping_code = exit_status(signum)
        self.run_worker(self._finish(self._stopping_code), exclusive=False, group="stop")

    def action_interrupt(self) -> None:
        """Ctrl-C (a key here, the terminal is raw): stop and write the files; a second one exits at once."""
        if self._stopping_code is not None:
            self.exit(self._stopping_code)
            return
        self.session.interrupted = True
        self._stopping_code = 130
        self.run_worker(self._finish(130), exclusive=False, group="stop")
