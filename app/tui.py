"""The terminal UI (textual): live captions, a speaker timeline, matches, level and gauges.

The UI reads the session's bus through its own bounded queue (so a slow terminal never holds up
the engine) and folds events into `CaptionBoard` and `Timeline`, plain objects the widgets render
at a fixed rate. Keys: e enroll (name, record with a progress bar), n name an `unknown-N` track
(enroll from what it already said), v verify, p pause, s save transcript, q quit, ? help.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, Static

from app.errors import AppError
from app.shutdown import StopSignals, exit_status
from engine.events import (
    CaptionFinal,
    CaptionPartial,
    CaptionRevision,
    Event,
    SpeakerActivity,
    SpeakerMatch,
    SpeakerTurn,
    Stats,
    apply_revision,
)
from engine.timebase import FRAMES_PER_SECOND

PALETTE = ("cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "bright_cyan", "orange1")
TIMELINE_S = 30
UNKNOWN = "unknown"  # the engine's label for speech no x-vector has named yet
MAX_CAPTIONS = 300
ENROLL_SECONDS = 8.0
VERIFY_SECONDS = 4.0


class SpeakerColours:
    """A stable colour per speaker label, in order of first appearance."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def __call__(self, speaker: str | None) -> str:
        if speaker is None:
            return "white"
        if speaker not in self._map:
            self._map[speaker] = PALETTE[len(self._map) % len(PALETTE)]
        return self._map[speaker]


class CaptionBoard:
    """Final captions (revisions applied) plus the current partial, for rendering."""

    def __init__(self, colours: SpeakerColours) -> None:
        self.colours = colours
        self.lines: dict[int, CaptionFinal] = {}  # as revised, by `apply_revision`, as the files are
        self.order: deque[int] = deque()
        self.partial: CaptionPartial | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, CaptionPartial):
            self.partial = event if event.text.strip() else None
        elif isinstance(event, CaptionFinal):
            self.lines[event.caption_id] = event
            self.order.append(event.caption_id)
            if self.partial is not None and self.partial.end_frame <= event.end_frame:
                self.partial = None
            while len(self.order) > MAX_CAPTIONS:
                self.lines.pop(self.order.popleft(), None)
        elif isinstance(event, CaptionRevision) and event.caption_id in self.lines:
            self.lines[event.caption_id] = apply_revision(self.lines[event.caption_id], event)

    def render(self) -> Text:
        out = Text()
        prev: str | None | bool = False
        for cid in self.order:
            line = self.lines[cid]
            if not line.text.strip():
                continue
            colour = self.colours(line.speaker)
            if line.speaker != prev:
                if prev is not False:
                    out.append("\n")
                out.append(f"{line.speaker or 'unknown'}: ", style=f"bold {colour}")
                prev = line.speaker
            else:
                out.append(" ")
            out.append(line.text, style=colour)
        if self.partial is not None:
            colour = self.colours(self.partial.speaker)
            if prev is not False and self.partial.speaker != prev:
                out.append("\n")
                out.append(f"{self.partial.speaker or '…'}: ", style=f"dim {colour}")
            elif prev is False:
                out.append(f"{self.partial.speaker or '…'}: ", style=f"dim {colour}")
            out.append(" " + self.partial.text, style=f"dim italic {colour}")
        return out

    def plain(self) -> str:
        return self.render().plain


class Timeline:
    """Who spoke when over the last `TIMELINE_S` seconds: one lane per speaker, overlaps marked."""

    def __init__(self, colours: SpeakerColours) -> None:
        self.colours = colours
        self.spans: deque[tuple[str, int, int, int]] = deque(maxlen=4000)  # (speaker, start, end, channel)
        self.now_frame = 0
        self.renames: dict[str, str] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, SpeakerActivity):
            for k, speaker in enumerate(event.speakers):
                run_start = None
                for i, row in enumerate(event.probs + ((0.0,) * len(event.speakers),)):
                    active = row[k] >= 0.5
                    if active and run_start is None:
                        run_start = i
                    elif not active and run_start is not None:
                        self.spans.append((speaker, event.start_frame + run_start, event.start_frame + i, k))
                        run_start = None
            self.now_frame = max(self.now_frame, event.start_frame + len(event.probs))
        elif isinstance(event, SpeakerTurn):
            self.now_frame = max(self.now_frame, event.end_frame)
            if event.speaker != UNKNOWN:
                self._claim(event.speaker, event.start_frame, event.end_frame)
        elif isinstance(event, (CaptionFinal, CaptionPartial)):
            self.now_frame = max(self.now_frame, event.end_frame)
        elif isinstance(event, Stats):
            self.now_frame = max(self.now_frame, event.audio_frames)

    def rename(self, old: str, new: str) -> None:
        self.spans = deque((((new if s == old else s), a, b, c) for s, a, b, c in self.spans), maxlen=4000)

    def _claim(self, speaker: str, start: int, end: int) -> None:
        """Move `unknown` activity inside a settled turn to its speaker's lane: a run is drawn as
        `unknown` until its first x-vector (2 s of speech), and short turns only get one at the end.
        Turns carry no channel: the channel whose `unknown` activity covers the turn most is its
        own, so another voice overlapping it stays apart."""
        cover: dict[int, int] = {}
        for s, a, b, c in self.spans:
            if s == UNKNOWN and a < end and b > start:
                cover[c] = cover.get(c, 0) + min(b, end) - max(a, start)
        if not cover:
            return
        channel = max(cover, key=lambda c: (cover[c], -c))
        spans: deque[tuple[str, int, int, int]] = deque(maxlen=4000)
        for s, a, b, c in self.spans:
            if s != UNKNOWN or c != channel or b <= start or a >= end:
                spans.append((s, a, b, c))
                continue
            if a < start:
                spans.append((s, a, start, c))
            spans.append((speaker, max(a, start), min(b, end), c))
            if b > end:
                spans.append((s, end, b, c))
        self.spans = spans

    def lanes(self, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(speaker -> active per column, overlap per column) over the last TIMELINE_S seconds.

        Activity is painted per 20 ms frame first, so a column shows overlap only where two
        speakers were active in the same frame, not where one's turn ends and another's begins.
        """
        width = max(10, width)
        n = TIMELINE_S * FRAMES_PER_SECOND
        start = self.now_frame - n
        frames: dict[str, np.ndarray] = {}
        for speaker, a, b, _ in self.spans:
            lane = frames.setdefault(speaker, np.zeros(n, dtype=bool))
            a, b = max(a - start, 0), min(b - start, n)
            if b > a:
                lane[a:b] = True
        if not frames:
            return {}, np.zeros(width, dtype=bool)
        edges = np.linspace(0, n, width + 1).astype(int)
        overlap_frames = np.sum(list(frames.values()), axis=0) > 1
        cols = lambda x: np.maximum.reduceat(x, edges[:-1])  # noqa: E731 - any() per column
        return ({s: cols(f) for s, f in frames.items() if f.any()}, cols(overlap_frames))

    def render(self, width: int = 60) -> Text:
        label_w = 12
        ncols = max(10, width - label_w - 2)
        lanes, overlap = self.lanes(ncols)
        if not lanes:
            return Text(f"no speech in the last {TIMELINE_S} s", style="dim")
        out = Text()
        for speaker, lane in lanes.items():
            colour = self.colours(speaker)
            out.append(f"{speaker[:label_w]:<{label_w}} ", style=f"bold {colour}")
            for active, both in zip(lane, overlap):
                out.append("█" if active and both else ("▆" if active else "·"),
                           style=colour if active else "grey30")
            out.append("\n")
        out.append(f"{'overlap':<{label_w}} ", style="dim")
        out.append("".join("^" if o else " " for o in overlap), style="red")
        out.append(f"\n{'':<{label_w}} -{TIMELINE_S}s{'now':>{ncols - 4}}", style="dim")
        return out


class Gauges:
    """The latest figures to show: matches, stats, dropped events."""

    def __init__(self) -> None:
        self.matches: dict[str, SpeakerMatch] = {}
        self.stats: Stats | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, SpeakerMatch):
            self.matches[event.track] = event
        elif isinstance(event, Stats):
            self.stats = event

    def rename(self, old: str, new: str) -> None:
        if old in self.matches:
            self.matches[new] = self.matches.pop(old)


# --- dialogs ---------------------------------------------------------------------------------


class HelpScreen(ModalScreen[None]):
    """The keys."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    TEXT = (
        "e  enroll a speaker: type a name, then record from the live input\n"
        "n  name an unknown-N track: enroll it from what it already said\n"
        "v  verify: record a few seconds and score them against a name\n"
        "p  pause or resume the input\n"
        "s  save the transcript (the output files, or a file in --save-dir)\n"
        "q  quit (output files are written)\n"
        "?  this help\n\n"
        "Captions: dim italic = partial (may change), solid = final. Timeline: the last 30 s,\n"
        "one lane per speaker; █ and ^ mark overlapping speech."
    )

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("unispeech-live: keys", classes="title")
            yield Static(self.TEXT, id="help-text")
            yield Button("Close", id="close")

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class RecordScreen(ModalScreen[None]):
    """Enroll or verify: a name, then a recording from the live input with a progress bar."""

    BINDINGS = [Binding("escape", "dismiss", "cancel")]

    def __init__(self, mode: str, seconds: float) -> None:
        super().__init__()
        self.mode = mode  # "enroll" or "verify"
        self.seconds = seconds
        self.busy = False
        self.outcome: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"{self.mode.capitalize()} a speaker ({self.seconds:.0f} s of the live input)",
                        classes="title")
            yield Input(placeholder="name", id="name")
            yield ProgressBar(total=100, show_eta=False, id="progress")
            yield Static("type a name and press Enter to start recording", id="status")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Input.Submitted, "#name")
    def _start(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name or self.busy:
            self.query_one("#status", Static).update("a name is needed")
            return
        self.busy = True
        self.run_worker(self._record(name), exclusive=True)

    async def _record(self, name: str) -> None:
        app: LiveTUI = self.app  # type: ignore[assignment]
        status = self.query_one("#status", Static)
        bar = self.query_one("#progress", ProgressBar)
        status.update(f"recording {name} ... speak now")
        try:
            audio = await app.session.record_input(self.seconds, lambda f: bar.update(progress=100 * f))
            status.update("computing ...")
            if self.mode == "enroll":
                result = await app.session.enroll(name, [audio])
                self.outcome = result
                status.update(f"enrolled {result.name}: {result.total_recordings} recording(s), "
                              f"{result.total_net_speech_samples / 16000:.1f} s of speech")
            else:
                v = await app.session.verify(name, audio)
                self.outcome = v
                verdict = "ACCEPTED" if v.accepted else "rejected"
                status.update(f"{v.name}: score {v.score:.3f} vs threshold {v.threshold:.3f} -> {verdict}")
        except AppError as exc:
            status.update(Text(f"error: {exc}", style="red"))
        finally:
            self.busy = False


class NameTrackScreen(ModalScreen[None]):
    """Name an unknown-N track: enroll the person from what the track already said."""

    BINDINGS = [Binding("escape", "dismiss", "cancel")]

    def __init__(self, tracks: list[str]) -> None:
        super().__init__()
        self.tracks = tracks
        self.outcome: Any = None

    def compose(self) -> ComposeResult:
        unknown = [t for t in self.tracks if t.startswith("unknown")]
        with Vertical(id="dialog"):
            yield Label("Name a speaker track", classes="title")
            yield Static("tracks: " + (", ".join(self.tracks) or "none yet"), id="tracks")
            yield Input(value=unknown[0] if unknown else "", placeholder="track (e.g. unknown-1)", id="track")
            yield Input(placeholder="person's name", id="name")
            yield Static("Enter on the name enrolls from the track's speech", id="status")

    def on_mount(self) -> None:
        self.query_one("#track" if not self.query_one("#track", Input).value else "#name", Input).focus()

    @on(Input.Submitted, "#track")
    def _next(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Input.Submitted, "#name")
    def _go(self) -> None:
        track = self.query_one("#track", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        status = self.query_one("#status", Static)
        if track not in self.tracks:
            status.update(Text(f"no track {track!r}; tracks: {', '.join(self.tracks) or 'none'}", style="red"))
            return
        if not name:
            status.update(Text("a name is needed", style="red"))
            return
        self.run_worker(self._enroll(track, name), exclusive=True)

    async def _enroll(self, track: str, name: str) -> None:
        app: LiveTUI = self.app  # type: ignore[assignment]
        status = self.query_one("#status", Static)
        status.update(f"enrolling {name} from {track} ...")
        try:
            result, events = await app.session.name_track(track, name)
            self.outcome = result
            app.apply_rename(track, result.name, events)
            quality = (" - low quality: under 5 s of speech, press e to add a recording"
                       if getattr(result, "low_quality", False) else "")
            status.update(f"{track} is now {result.name} ({result.total_net_speech_samples / 16000:.1f} s of speech)"
                          + quality)
        except AppError as exc:
            status.update(Text(f"error: {exc}", style="red"))


# --- the app ---------------------------------------------------------------------------------


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

    def _matches_text(self) -> Text:
        if not self.gauges.matches:
            enrolled = self.session.speakers
            n = len(enrolled.list()) if enrolled is not None else 0
            return Text(f"no match yet ({n} enrolled)", style="dim")
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
            out.append(f"dropped  {s.dropped_samples / 16000:.1f} s audio\n",
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
