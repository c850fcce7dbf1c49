"""The live app: one input (microphone, file or demo) through the engine to the TUI, feed and files.

`LiveSession` wires the parts together on one event loop: the source's blocks go to a
`StreamRunner` (compute on the compute thread), the runner publishes on the session's bus, and
sinks read from it: the TUI or the JSON-lines writer, the websocket feed, and a lossless tap that
records captions and turns for the output files. Output files are written atomically when the
input ends, when the user quits and on Ctrl-C. `run_live_app` is the command line's entry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np

from app.bus import EventBus
from app.compute import ComputePool
from app.errors import AppError, NoMicrophone
from app.live import StreamRunner
from app.sources import AudioBlock, check_samples, load_audio, paced_blocks
from app.writers import SessionRecord, check_writable, write_outputs
from engine.timebase import SAMPLE_RATE

JSONL_QUEUE_ITEMS = 100_000  # headless output: large, so only a stalled reader ever loses lines


@dataclass
class InputChoice:
    """What the session listens to: file samples (also the demo), a microphone, or nothing."""

    kind: str  # "file", "demo", "mic" or "none"
    label: str
    samples: np.ndarray | None = None
    mic: Any = None
    speed: float | None = 1.0


@dataclass
class SessionOptions:
    """Sinks of one live session."""

    outputs: dict[str, str] = field(default_factory=dict)
    jsonl: str | None = None
    headless: bool = True
    serve: tuple[str, int] | None = None
    token: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    file_id: str = "live"


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

    def stop(self) -> None:
        """End the input early (quit, Ctrl-C): the stream is flushed and outputs are written."""
        self.interrupted = True
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

            self.server = FeedServer(self.options.config, self.pool, token=self.options.token)
            if self.runner is not None:
                self.server.add_input_session(self.session_id, self.bus)
            host, port = self.options.serve
            try:
                self.port = await self.server.start(host, port)
            except OSError as exc:
                raise AppError(f"--serve {host}:{port}: cannot listen ({exc.strerror or exc})") from None
            print(f"feed: ws://{host}:{self.port}/ (protocol 1)", file=sys.stderr, flush=True)

    async def run_input(self) -> None:
        """Run the input to its end (or until stopped), then end the feed session."""
        if self.runner is None:
            await self.stopping.wait()  # serving client audio only: run until stopped
            return
        try:
            await self.runner.run(self._blocks())
        finally:
            if self.server is not None:
                self.server.end_session(self.session_id)
            else:
                self.bus.publish_payload({"type": "end", "session": self.session_id})
                self.bus.close()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        self.pool.shutdown()


async def _write_jsonl(session: LiveSession, path: str | None) -> None:
    """Copy every published item to stdout or (atomically, at the end) to `path` as JSON lines."""
    sub = session.bus.subscribe(JSONL_QUEUE_ITEMS)
    tmp = None
    if path is None:
        out = sys.stdout
    else:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=os.path.dirname(os.path.abspath(path)))
        out = os.fdopen(fd, "w", encoding="utf-8")
    try:
        while True:
            item = await sub.get()
            if item is None:
                break
            lines = [item.wire]
            while (more := sub.get_nowait()) is not None:
                lines.append(more.wire)
            out.write("\n".join(lines) + "\n")
            out.flush()
    finally:
        if sub.dropped:
            print(f"warning: {sub.dropped} events were not written (output too slow)", file=sys.stderr)
        if tmp is not None:
            out.close()
            os.replace(tmp, path)  # type: ignore[arg-type]


async def run_headless(session: LiveSession) -> None:
    """Run without a TUI: JSON lines out, Ctrl-C stops the input and still writes the files."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, session.stop)
        loop.add_signal_handler(signal.SIGTERM, session.stop)
    except (NotImplementedError, RuntimeError):
        pass  # not the main thread, or a platform without signal handlers
    await session.start()
    writer = asyncio.create_task(_write_jsonl(session, session.options.jsonl))
    try:
        await session.run_input()
        await writer
    finally:
        writer.cancel()
        await session.close()


# --- the command line's entry ---------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def choose_input(args: argparse.Namespace) -> InputChoice:
    """--input, else nothing when only serving, else the microphone, else the bundled demo."""
    speed = None if args.fast else (args.speed or 1.0)
    if args.input:
        path = args.input[0]
        samples = load_audio(path)
        check = check_samples(samples, path)
        if check.silent:
            _warn(f"{path} is silent: no captions will appear")
        elif check.clipped_fraction > 0.001:
            _warn(f"{path} clips ({check.clipped_fraction:.1%} of samples at full scale); results may suffer")
        return InputChoice("file", os.path.basename(path), samples=samples, speed=speed)
    if args.serve is not None:
        return InputChoice("none", "websocket clients")
    try:
        from app.sources import choose_microphone

        mic = choose_microphone(args.mic)
        return InputChoice("mic", mic.name, mic=mic)
    except NoMicrophone as exc:
        if args.mic is not None:
            raise AppError(str(exc)) from None
        print(f"{exc}; playing the bundled demo instead", file=sys.stderr, flush=True)
        return InputChoice("demo", "demo", speed=speed)


def run_live_app(args: argparse.Namespace, engine_factory: Any = None) -> int:
    """The live app: pick input and sinks, load the engine, run TUI or headless; exit status."""
    from app.engine_setup import (
        attach_speakers, choose_models, enroll_demo_speakers, find_demo, load_engine,
    )

    outputs = {k: getattr(args, k) for k in ("transcript", "srt", "vtt", "rttm") if getattr(args, k)}
    for path in [*outputs.values(), *([args.jsonl] if args.jsonl else [])]:
        check_writable(path)
    source = choose_input(args)
    demo = find_demo() if source.kind == "demo" else None
    if demo is not None:
        source.samples = load_audio(demo.conversation)
    models = None
    if engine_factory is not None:
        engine = engine_factory()
    else:
        models = choose_models(args)
        engine = load_engine(args, models)
    demo_folder = None
    if demo is not None:
        speakers, demo_folder = enroll_demo_speakers(engine, demo)
    else:
        from app.cli import speakers_db

        speakers = attach_speakers(engine, speakers_db(args))
    headless = args.headless or not sys.stdout.isatty()
    options = SessionOptions(
        outputs=outputs, jsonl=args.jsonl, headless=headless,
        serve=(args.serve_host, args.serve_port) if args.serve is not None else None,
        token=args.token,
        config={"input": source.kind, "models": models.describe() if models else None,
                "device": args.device, "dtype": args.dtype, "sample_rate": SAMPLE_RATE, "frame_ms": 20},
        file_id=os.path.splitext(source.label)[0].replace(" ", "_") or "live",
    )
    session = LiveSession(engine, source, options, speakers)
    try:
        if headless:
            asyncio.run(run_headless(session))
        else:
            from app.tui import LiveTUI

            LiveTUI(session).run()
    except KeyboardInterrupt:
        session.interrupted = True
    finally:
        if outputs:
            session.write_outputs()
        if demo_folder is not None:
            shutil.rmtree(demo_folder, ignore_errors=True)
    if session.interrupted and source.kind != "none":
        print("interrupted: output files hold what was captioned so far", file=sys.stderr)
        return 130
    return 0

