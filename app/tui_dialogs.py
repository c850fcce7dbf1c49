"""The terminal UI's dialogs: the keys, enroll or verify from the live input, name a track.

Each dialog calls the session's actions (record_input, enroll, verify, name_track) through the
app it is shown in and reports the outcome in its status line; errors the user can fix arrive
as `AppError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from app.errors import AppError
from engine.timebase import SAMPLE_RATE

if TYPE_CHECKING:
    from app.tui import LiveTUI


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
                              f"{result.total_net_speech_samples / SAMPLE_RATE:.1f} s of speech")
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
            status.update(f"{track} is now {result.name} ({result.total_net_speech_samples / SAMPLE_RATE:.1f} s of speech)"
                          + quality)
        except AppError as exc:
            status.update(Text(f"error: {exc}", style="red"))
