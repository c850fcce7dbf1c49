"""Running a live session without the TUI: every event as a JSON line on stdout or into a file.

SIGINT/SIGTERM stop the input; the stream is flushed and the output files are still written.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

from app.progress import FileProgress
from app.shutdown import StopSignals

if TYPE_CHECKING:
    from app.session import LiveSession

JSONL_QUEUE_ITEMS = 100_000  # headless output: large, so only a stalled reader ever loses lines


async def write_jsonl(session: LiveSession, path: str | None) -> None:
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
    writer = asyncio.create_task(write_jsonl(session, session.options.jsonl))
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
