"""The live app: one input (microphone, file or demo) through the engine to the TUI, feed and files.

`LiveSession` wires the parts together on one event loop: the source's blocks go to a
`StreamRunner` (compute on the compute thread), the runner publishes on the session's bus, and
sinks read from it: the TUI or the JSON-lines writer, the websocket feed, and a lossless tap that
records captions and turns for the output files. Output files are written atomically when the
input ends, when the user quits and on Ctrl-C. The command line's entry is `app.live_app`;
the session's values are in `app.session_options`, its voice actions (enroll, verify, name a
track) in `app.session_speakers`, and the run without a TUI in `app.headless`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, AsyncIterator

from app.bus import EventBus
from app.compute import ComputePool
from app.errors import AppError
from app.headless import run_headless
from app.live import StreamRunner
from app.session_options import InputChoice, SessionOptions, default_save_dir
from app.session_speakers import SessionSpeakers
from app.sources import AudioBlock, paced_blocks
from app.writers import SessionRecord, write_outputs

__all__ = ["InputChoice", "LiveSession", "SessionOptions", "default_save_dir", "run_headless"]


class LiveSession(SessionSpeakers):
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
            from app.server import FeedServer, tls_context

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
