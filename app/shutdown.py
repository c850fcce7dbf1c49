"""Stopping on SIGINT and SIGTERM: the first signal ends the input gracefully, a second one forces exit.

Every mode (TUI, headless, `--serve` with or without input) installs the same handlers on its
event loop. The first signal calls the mode's `stop` callback, which ends the input so that the
stream is flushed, the output files are written and websocket clients are closed with 1001
("going away"); the process then exits with the customary status, 128 + the signal number (130
for SIGINT, 143 for SIGTERM). If the graceful path has not finished after `grace_s` seconds, or a
second signal arrives, the process exits at once with that status (files not yet written are
lost then, which is what the user asked for).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Callable

GRACE_S = 10.0  # a graceful stop that takes longer than this is forced
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by signal `signum`: 128 + its number."""
    return 128 + int(signum)


class StopSignals:
    """SIGINT/SIGTERM handlers on one event loop: first signal -> `stop(signum)`, second -> exit now.

    `received` holds the first signal's number (None until one arrives), so the caller can
    return `exit_status(received)` once the graceful stop is done.
    """

    def __init__(self, stop: Callable[[int], None], grace_s: float = GRACE_S,
                 force_exit: Callable[[int], None] = os._exit) -> None:
        self._stop = stop
        self.grace_s = grace_s
        self._force_exit = force_exit
        self.received: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Install on `loop` (the running one by default); False where signals cannot be handled."""
        loop = loop or asyncio.get_running_loop()
        try:
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self._on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            return False  # not the main thread, or a platform without loop signal handlers
        self._loop = loop
        return True

    def remove(self) -> None:
        """Take the handlers off the loop again (the default actions apply afterwards)."""
        if self._loop is not None and not self._loop.is_closed():
            for signum in STOP_SIGNALS:
                self._loop.remove_signal_handler(signum)
        self._loop = None

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"{name} again: exiting now", file=sys.stderr, flush=True)
            self._force_exit(exit_status(self.received))
            return
        self.received = signum
        print(f"{name}: stopping (output files are written; {name} again to exit at once)",
              file=sys.stderr, flush=True)
        if self._loop is not None:
            self._loop.call_later(self.grace_s, self._overdue)
        self._stop(signum)

    def _overdue(self) -> None:
        assert self.received is not None
        print(f"stopping took over {self.grace_s:.0f} s: exiting now", file=sys.stderr, flush=True)
        self._force_exit(exit_status(self.received))
