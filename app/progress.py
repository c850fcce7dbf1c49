"""Progress of a file run on stderr: a bar on a terminal, a plain line every tenth otherwise.

A headless run over a long file (`--fast` on an hour of audio) would otherwise say nothing for
minutes. The reporter is a raw-audio listener of the `StreamRunner`: it counts the samples the
engine has taken and prints how far the file is. On a terminal one line is redrawn in place (at
most five times a second); to a pipe or a log it writes a separate line at each 10 % step, so a
service log holds a few lines per run, not thousands.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from engine.timebase import SAMPLE_RATE

BAR_WIDTH = 30
REDRAW_S = 0.2
LINE_STEP = 0.1  # fraction of the file between two plain lines


class FileProgress:
    """Counts samples handed to the engine against the file's length and reports on `out`."""

    def __init__(self, total_samples: int, label: str, out: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.total = max(int(total_samples), 1)
        self.label = label
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._next_step = LINE_STEP
        self._finished = False

    def __call__(self, block: Any) -> None:
        """A `StreamRunner` listener: `block.samples` were just handed to the engine."""
        self.update(len(block.samples))

    def update(self, samples: int) -> None:
        self.done += samples
        fraction = min(self.done / self.total, 1.0)
        if self.tty:
            now = time.monotonic()
            if now - self._drawn_at >= REDRAW_S or fraction >= 1.0:
                self._drawn_at = now
                filled = int(round(fraction * BAR_WIDTH))
                self.out.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                               f"{fraction:4.0%} {self._position()}")
                self.out.flush()
        else:
            while fraction + 1e-9 >= self._next_step and self._next_step <= 1.0 + 1e-9:
                self.out.write(f"progress: {self.label} {self._next_step:.0%} {self._position()}\n")
                self.out.flush()
                self._next_step += LINE_STEP

    def _position(self) -> str:
        wall = time.monotonic() - self._started
        return f"({self.done / SAMPLE_RATE:.1f} of {self.total / SAMPLE_RATE:.1f} s audio, {wall:.1f} s wall)"

    def finish(self) -> None:
        """End the bar's line (a terminal), once."""
        if self.tty and not self._finished and self.done:
            self.out.write("\n")
            self.out.flush()
        self._finished = True
