"""The live app: one input (microphone, file or demo) through the engine to the TUI, feed and files.

`LiveSession` wires the parts together on one event loop: the source's blocks go to a
`StreamRunner` (compute on the compute thread), the runner publishes on the session's bus, and
sinks read from it: the TUI or the JSON-lines writer, the websocket feed, and a lossless tap that
records captions and turns for the output files. Output files are written atomically when the
input ends, when the user quits and on Ctrl-C. The command line's entry is `app.live_app`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from app.bus import EventBus
from app.compute import ComputePool
from app.errors import AppError
from app.live import StreamRunner
from app.progress import FileProgress
from app.shutdown import StopSignals
from app.sources import AudioBlock, paced_blocks
from app.writers import SessionRecord, write_outputs
from engine.timebase import SAMPLE_RATE

JSONL_QUEUE_ITEMS = 100_000  # headless output: large, so only a stalled reader ever loses lines


@dataclass(frozen=True, slots=True)
class InputChoice:
    """What the session listens to: file samples (also the demo), a microphone, or nothing."""

    kind: str  # "file", "demo", "mic" or "none"
    label: str
    samples: np.ndarray | None = None
    mic: Any = None
    speed: float | None = 1.0


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Sinks of one live session."""

    outputs: dict[str, str] = field(default_factory=dict)
    jsonl: str | None = None
    headless: bool = True
    serve: tuple[str, int] | None = None
    token: str | None = None
    max_clients: int = 100  # feed connections beyond this are refused (close 1013)
    replay_grace_s: float = 10.0  # the feed keeps serving replay this long after the input ends
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: https/wss on the feed's port
    config: dict[str, Any] = field(default_factory=dict)
    file_id: str = "live"
    save_dir: str | None = None  # where the TUI's `s` saves a transcript (default_save_dir())


def default_save_dir() -> Path:
    """The TUI's default folder for saved transcripts: `<user data dir>/unispeech-live/transcripts`."""
    from voiceprints.store_schema import default_store_path

    return default_store_path().parent / "transcripts"


class LiveSession:
    """One running session: input -> engine stream -> bus -> sinks."""

    def __init__(self, engine: Any, source: InputChoice, options: SessionOptions,
                 speakers: Any = None) -> None:
        self.engine = engine
        self.source = source
        self.options = options
        self.speakers = speakers  # a VoiceprintService, or None
        self.pool = ComputePool(engine)
        self.bus = EventBus()
        self.record = SessionRecord()
        self.bus.tap(lambda item: self.record.add(item.event))
        self.session_id = os.urandom(6).hex()
        self.runner: StreamRunner | None = None
        self.server: Any = None
        self.port: int | None = None
        self.stopping = asyncio.Event()
        self.interrupted = False
        self.signal: int | None = None  # the signal that stopped the session, if one did
        self.outputs_written = False
        self.mic_source: Any = None

    # --- sources ----------------------------------------------------------------------------

    async def _blocks(self) -> AsyncIterator[AudioBlock]:
        assert self.runner is not None
        if self.source.kind in ("file", "demo"):
            assert self.source.samples is not None
            blocks = paced_blocks(self.source.samples, self.source.speed, pause=self.runner.pause)
            async for block in blocks:
                if self.stopping.is_set():
                    return
                yield block
        elif self.source.kind == "mic":
            from app.sources import MicrophoneSource

            async with MicrophoneSource(self.source.mic) as mic:
                self.mic_source = mic
                async for block in mic:
                    if self.stopping.is_set():
                        return
                    yield block

    def _mic_dropped(self) -> int:
        return self.mic_source.dropped_samples if self.mic_source is not None else 0

    # --- lifecycle --------------------------------------------------------------------------

    def stop(self, signum: int | None = None) -> None:
        """End the input early (quit, Ctrl-C, SIGTERM): the stream is flushed and outputs are written."""
        self.interrupted = True
        if signum is not None and self.signal is None:
            self.signal = signum
        self.stopping.set()

    def write_outputs(self) -> None:
        """Write the requested output files from what has been recorded so far (atomically)."""
        write_outputs(self.record, self.options.outputs, self.options.file_id)
        self.outputs_written = True

    async def start(self) -> None:
        """Open the stream and (if asked) the websocket feed."""
        if self.source.kind != "none":
            stream = await self.pool.open_stream()
            self.runner = StreamRunner(stream, self.bus, self.pool.executor,
                                       fast=self.source.speed is None, dropped=self._mic_dropped)
        if self.options.serve is not None:
            from app.server import FeedServer

            from app.server import tls_context

            self.server = FeedServer(self.options.config, self.pool, token=self.options.token,
                                     max_clients=self.options.max_clients)
            if self.runner is not None:
                self.server.add_input_session(self.session_id, self.bus)
            host, port = self.options.serve
            ssl = tls_context(*self.options.tls) if self.options.tls else None
            try:
                self.port = await self.server.start(host, port, ssl=ssl)
            except OSError as exc:
                raise AppError(f"--serve {host}:{port}: cannot listen ({exc.strerror or exc})") from None
            web, ws = ("https", "wss") if ssl else ("http", "ws")
            shown = f"[{host}]" if ":" in host else host
            print(f"feed: {ws}://{shown}:{self.port}/ (protocol 1); page: {web}://{shown}:{self.port}/",
                  file=sys.stderr, flush=True)

    async def linger(self) -> None:
        """After the input's end, keep the feed up `replay_grace_s` so cut-off clients can resume."""
        if self.server is None or self.runner is None or self.interrupted or self.options.replay_grace_s <= 0:
            return
        print(f"feed: input ended; serving replay for {self.options.replay_grace_s:g} s", file=sys.stderr, flush=True)
        await self.server.linger(self.options.replay_grace_s, self.stopping)

    async def run_input(self) -> None:
        """Run the input to its end (or until stopped), then end the feed session."""
        if self.runner is None:
            await self.stopping.wait()  # serving client audio only: run until stopped
            self.bus.close()  # nothing more comes: the JSON-lines writer may end
            return
        try:
            await self.runner.run(self._blocks())
        finally:
            if self.server is not None:
                self.server.end_session(self.session_id)
            else:
                self.bus.publish_payload({"type": "end", "session": self.session_id})
                self.bus.close()

    # --- actions the TUI offers -------------------------------------------------------------

    def _stream(self) -> Any:
        if self.runner is None:
            raise AppError("no input stream in this session")
        return self.runner.stream

    async def record_input(self, seconds: float, progress: Any = None) -> np.ndarray:
        """The next `seconds` of live input (16 kHz); `progress(fraction)` is called as it fills."""
        if self.runner is None or self.runner.finished.is_set():
            raise AppError("the input has ended: nothing left to record")
        need = int(seconds * SAMPLE_RATE)
        got: list[np.ndarray] = []
        done = asyncio.get_running_loop().create_future()

        def listen(block: AudioBlock) -> None:
            got.append(block.samples)
            have = sum(len(b) for b in got)
            if progress is not None:
                progress(min(1.0, have / need))
            if have >= need and not done.done():
                done.set_result(None)

        self.runner.listeners.append(listen)
        try:
            ended = asyncio.ensure_future(self.runner.finished.wait())
            await asyncio.wait([done, ended], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
        finally:
            self.runner.listeners.remove(listen)
        audio = np.concatenate(got)[:need] if got else np.zeros(0, np.float32)
        if len(audio) < need:
            raise AppError(f"the input ended after {len(audio) / SAMPLE_RATE:.1f} s of the {seconds:.1f} s asked")
        return audio

    def _service(self) -> Any:
        if self.speakers is None:
            raise AppError("no speaker model loaded (--sv-model), so no voiceprints")
        return self.speakers

    async def _speaker_call(self, fn: Any, *args: Any) -> Any:
        from voiceprints.errors import VoiceprintError

        try:
            return await self.pool.run(fn, *args)
        except (VoiceprintError, ValueError, KeyError) as exc:
            raise AppError(" ".join(str(exc).split()) or type(exc).__name__) from None

    async def enroll(self, name: str, recordings: list[np.ndarray]) -> Any:
        """Enroll `name` (adding to an existing voiceprint) and seed the live stream with it."""
        service = self._service()
        result = await self._speaker_call(service.enroll, name, recordings)
        await self._seed(result.name)
        return result

    async def _seed(self, name: str) -> None:
        stream = self.runner.stream if self.runner is not None else None
        add = getattr(stream, "add_voiceprint", None) or getattr(getattr(stream, "stream", None), "add_voiceprint", None)
        if add is not None:
            vector = self._service().store.voiceprint(name, self._service().fingerprint).vector
            await self.pool.run(add, name, vector)

    async def verify(self, name: str, audio: np.ndarray) -> Any:
        """1:1 verification of `audio` against `name`'s voiceprint."""
        return await self._speaker_call(self._service().verify, name, audio)

    def track_audio(self, track: str) -> np.ndarray:
        """What `track` said alone so far: the engine's own copy, else its solo turns from history."""
        assert self.runner is not None
        own = getattr(self.runner.stream, "speaker_audio", None)
        if own is not None:
            try:
                audio = own(track)
                if len(audio):
                    return audio
            except KeyError:
                pass
        from engine.timebase import FRAME_SAMPLES

        pieces = [self.runner.history.span(t.start_frame * FRAME_SAMPLES, t.end_frame * FRAME_SAMPLES)
                  for t in self.record.turns if t.speaker == track and not t.overlap]
        pieces = [p for p in pieces if len(p)]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def tracks(self) -> list[str]:
        """Speaker tracks seen so far, in order of first appearance."""
        seen: dict[str, None] = {}
        for t in self.record.turns:
            seen.setdefault(t.speaker, None)
        return list(seen)

    async def name_track(self, track: str, name: str) -> tuple[Any, list[Any]]:
        """Enroll `name` from what `track` already said, then relabel the track's captions.

        Returns the enrollment result and the revisions (also published on the bus)."""
        audio = self.track_audio(track)
        if not len(audio):
            raise AppError(f"{track} has no solo speech to enroll from yet")
        service = self._service()
        from voiceprints.service import MIN_TRACK_ENROLL_SPEECH_S

        # a track holds only what the engine kept of it: a documented lower minimum, flagged low_quality
        result = await self._speaker_call(functools.partial(
            service.enroll, name, [audio], min_enroll_speech_s=MIN_TRACK_ENROLL_SPEECH_S))
        vector = service.store.voiceprint(result.name, service.fingerprint).vector
        rename = getattr(self._stream(), "rename_speaker", None)
        events: list[Any] = []
        if rename is not None:
            try:
                events = list(await self.pool.run(rename, track, result.name, vector))
            except KeyError as exc:
                raise AppError(str(exc).strip("'\"")) from None
            for event in events:
                self.bus.publish(event)
        return result, events

    def save_transcript(self) -> list[str]:
        """Write the requested outputs now, or a transcript into the save folder; returns paths.

        The save folder is `--save-dir`, by default `default_save_dir()` (created when needed),
        never the working folder, which is often a checkout.
        """
        if self.options.outputs:
            self.write_outputs()
            return list(self.options.outputs.values())
        import time

        from app.writers import transcript_text, write_atomically

        folder = self.options.save_dir or str(default_save_dir())
        os.makedirs(folder, exist_ok=True)
        path = os.path.abspath(os.path.join(folder, time.strftime("transcript-%Y%m%d-%H%M%S.txt")))
        write_atomically(path, transcript_text(self.record))
        return [path]

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        self.pool.shutdown()


async def _write_jsonl(session: LiveSession, path: str | None) -> None:
    """Copy every published item to stdout or `path` as JSON lines, each flushed as it happens.

    The file is written in place (not atomically), so `tail -f` can follow a live run; a run
    that stops early leaves every line written so far, and the last line is complete.
    """
    sub = session.bus.subscribe(JSONL_QUEUE_ITEMS)
    out = sys.stdout if path is None else open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    try:
        while True:
            item = await sub.get()
            if item is None:
                break
            lines = [item.wire]
            while (more := sub.get_nowait()) is not None:
                lines.append(more.wire)
            try:
                out.write("\n".join(lines) + "\n")
                out.flush()
            except BrokenPipeError:  # the reader went away (`| head`): stop writing, run on
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush is quiet
                return
    finally:
        if sub.dropped:
            print(f"warning: {sub.dropped} events were not written (output too slow)", file=sys.stderr)
        if path is not None:
            out.close()


async def run_headless(session: LiveSession) -> None:
    """Run without a TUI: JSON lines out; SIGINT/SIGTERM stop the input and still write the files."""
    signals = StopSignals(session.stop)
    signals.install()
    progress = None
    await session.start()
    if session.runner is not None and session.source.kind == "file" and session.source.samples is not None:
        progress = FileProgress(len(session.source.samples), session.source.label)
        session.runner.listeners.append(progress)
    writer = asyncio.create_task(_write_jsonl(session, session.options.jsonl))
    try:
        await session.run_input()
        await writer
        await session.linger()
    finally:
        writer.cancel()
        if progress is not None:
            progress.finish()
        await session.close()  # websocket clients are closed with 1001 (going away)
        signals.remove()
