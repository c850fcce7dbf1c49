"""Cutting a stream's audio into compute requests: the window schedule, a bounded queue, degrading.

`WindowCutter` is the request half of a `Stream` (engine/stream.py): it buffers samples, cuts a
window at fixed sample indices (never wall time) whenever one is complete, and keeps the requests
in a bounded queue that the model side takes from (`take_requests`). When the stream falls behind
(`report_load` backlog plus queued audio, see `DegradeConfig`) it degrades: no partials, every
other speaker window, no re-embedding, and at level 3 caption windows dropped as silence. What a
dropped window means for captions and speakers is the stream's business (its `_on_dropped` hook).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np

from engine.buffers import RollingArray
from engine.compute_requests import CTC, DIAR, SKIP, VAD, XVEC, SpanRequest, WindowRequest
from engine.config import EngineConfig, HeadSchedule
from engine.timebase import FRAME_SAMPLES

DEGRADATIONS = ("no-partials", "speaker-hop-x2", "no-reembedding", "drop-caption-audio")


class WindowCutter:
    """Audio buffer, window schedule and request queue of one stream (see module docstring)."""

    def __init__(self, config: EngineConfig, stream_id: int, has_ctc: bool, has_diar: bool, has_vad: bool,
                 shared: bool) -> None:
        self.config = config
        self.stream_id = stream_id
        self.has_ctc, self.has_diar, self.has_vad, self.shared = has_ctc, has_diar, has_vad, shared
        self.ctc_schedule = config.ctc
        self.diar_schedule = config.ctc if shared else config.diar
        if has_diar and self.diar_schedule.window_samples < 2 * self.diar_schedule.hop_samples + 2 * FRAME_SAMPLES:
            raise ValueError(
                f"speaker windows ({self.diar_schedule.window_samples} samples) must be longer than two hops "
                f"({self.diar_schedule.hop_samples}) so a skipped window (degrade) leaves no gap"
            )
        longest = max(self.ctc_schedule.window_samples, self.diar_schedule.window_samples)
        self._capacity = 2 * longest + config.max_queued_windows * min(
            self.ctc_schedule.hop_samples, self.diar_schedule.hop_samples
        )

    def _reset_windows(self) -> None:
        self.audio = RollingArray(self._capacity)
        self.queue: deque[WindowRequest] = deque()
        self._seq = 0
        self._next_ctc = 0  # index of the next caption window
        self._next_diar = 0
        self.level = 0
        self._backlog = 0
        self._load: dict[str, float] = {}
        self._rtf: float | None = None
        self._flushed = False  # no more input (set by the stream's finish_input, which cuts the last windows)
        self._in_flight: set[int] = set()  # seqs taken by the model side, not yet delivered

    # -- the request API the model side uses ---------------------------------------------------

    @property
    def next_seq(self) -> int:
        """Sequence number the next request will get (requests are numbered per stream)."""
        return self._seq

    @property
    def pending_requests(self) -> int:
        """Requests waiting in the queue (not yet taken by the model side)."""
        return len(self.queue)

    def take_requests(self, limit: int | None = None) -> list[WindowRequest]:
        """Hand out up to `limit` (default all) requests, oldest first; deliver each one's result
        with `Stream.deliver`, in this order."""
        n = len(self.queue) if limit is None else min(limit, len(self.queue))
        taken = [self.queue.popleft() for _ in range(n)]
        self._in_flight.update(r.seq for r in taken)
        return taken

    # -- load and degrading --------------------------------------------------------------------

    def report_load(self, backlog_samples: int = 0, rtf: float | None = None,
                    compute_ms: float | None = None, queue_ms: float | None = None) -> None:
        """Figures measured outside (audio waiting to be accepted, real-time factor, timings).

        The backlog drives the degrade policy (see `DegradeConfig`); the rest goes into Stats.
        """
        if backlog_samples < 0:
            raise ValueError(f"backlog_samples must be >= 0, got {backlog_samples}")
        self._backlog = int(backlog_samples)
        self._rtf = rtf
        self.report_timing(compute_ms, queue_ms)

    def report_timing(self, compute_ms: float | None = None, queue_ms: float | None = None) -> None:
        """Compute and queueing times of the last request (telemetry for Stats; backlog unchanged)."""
        if compute_ms is not None:
            self._load["compute"] = float(compute_ms)
        if queue_ms is not None:
            self._load["queueing"] = float(queue_ms)
        self._update_level()

    @property
    def degraded(self) -> tuple[str, ...]:
        """Names of the degradations now in force."""
        active: list[str] = []
        if self.level >= 1:
            active += DEGRADATIONS[:2]
        if self.level >= 2:
            active.append(DEGRADATIONS[2])
        if self.level >= 3:
            active.append(DEGRADATIONS[3])
        return tuple(active)

    def _update_level(self) -> None:
        d = self.config.degrade
        if not d.enabled:
            self.level = 0
            return
        lag = self._backlog + self.queued_samples()
        level = self.level
        while level < 3 and lag >= d.level_samples[level]:
            level += 1
        while level > 0 and lag < d.level_samples[level - 1] * d.recover_fraction:
            level -= 1
        self.level = level
        self._level_changed()

    def _level_changed(self) -> None:
        """Hook: the degrade level may have changed."""

    def queued_samples(self) -> int:
        """Audio cut into caption windows that are not computed yet."""
        if not self.has_ctc:
            return sum(self.diar_schedule.hop_samples for r in self.queue if XVEC not in r.want)
        return sum(self.ctc_schedule.hop_samples for r in self.queue if CTC in r.want)

    # -- cutting windows -----------------------------------------------------------------------

    def _check(self, samples: np.ndarray) -> np.ndarray:
        a = np.asarray(samples)
        if a.ndim != 1:
            raise ValueError(f"samples must be 1-D mono, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"samples must be float (16 kHz, [-1, 1]), got {a.dtype}")
        if self._flushed:
            raise RuntimeError("stream was flushed; call reset() to start a new one")
        return a.astype(np.float32, copy=False)

    def _window_end(self, k: int, schedule: HeadSchedule) -> int:
        return k * schedule.hop_samples + schedule.window_samples

    def _next_fire(self) -> int:
        """Sample index at which the next window is complete."""
        ends = []
        if self.has_ctc:
            ends.append(self._window_end(self._next_ctc, self.ctc_schedule))
        if self.has_diar and not self.shared:
            ends.append(self._window_end(self._next_diar, self.diar_schedule))
        return min(ends) if ends else self.audio.end + self.audio.capacity

    def submit(self, samples: np.ndarray) -> None:
        """Buffer samples and queue every window they complete (no compute)."""
        samples = self._check(samples)
        pos = 0
        while pos < len(samples):
            self._forget()
            room = self.audio.capacity - len(self.audio)
            if room <= 0:
                raise OverflowError("stream audio buffer full: windows are not being delivered")
            piece = samples[pos : pos + min(room, max(1, self._next_fire() - self.audio.end))]
            pos += len(piece)
            self.audio.append(piece)
            self._cut_windows()
        self._update_level()

    def _cut_windows(self) -> None:
        end = self.audio.end
        while True:
            due = []
            if self.has_ctc and self._window_end(self._next_ctc, self.ctc_schedule) <= end:
                due.append((self._window_end(self._next_ctc, self.ctc_schedule), 0))
            if self.has_diar and not self.shared and self._window_end(self._next_diar, self.diar_schedule) <= end:
                due.append((self._window_end(self._next_diar, self.diar_schedule), 1))
            if not due:
                return
            _, which = min(due)
            if which == 0:
                k, self._next_ctc = self._next_ctc, self._next_ctc + 1
                want = {CTC, DIAR} if self.shared else {CTC}
                if self.has_vad:
                    want.add(VAD)
                if self.level >= 3 and k % 2 == 1:
                    want = {SKIP}  # degrade: this window's frames are dropped as silence, uncomputed
                self._enqueue(frozenset(want), k * self.ctc_schedule.hop_samples, self.ctc_schedule.window_samples)
            else:
                k, self._next_diar = self._next_diar, self._next_diar + 1
                want = {DIAR, VAD} if self.has_vad and not self.has_ctc else {DIAR}
                if self.level >= 1 and k % 2 == 1 and VAD not in want:
                    continue  # degrade: every other speaker window is skipped
                self._enqueue(frozenset(want), k * self.diar_schedule.hop_samples, self.diar_schedule.window_samples)

    def _enqueue(self, want: frozenset[str], start: int, length: int, final: bool = False) -> None:
        samples = np.zeros(0, dtype=np.float32) if SKIP in want else self.audio.view(start, start + length).copy()
        self.queue.append(WindowRequest(self.stream_id, self._seq, want, start, samples, final))
        self._seq += 1
        self._drop_excess()

    def _request_xvector(self, start: int, audio: np.ndarray, span: SpanRequest | None = None) -> None:
        """Queue an x-vector of `audio` (a copy is kept); `span` for the span tracker."""
        self.queue.append(WindowRequest(self.stream_id, self._seq, frozenset({XVEC}), start, audio.copy(), span=span))
        self._seq += 1

    def _drop_excess(self) -> None:
        """Bounded queue: beyond the limit the oldest speaker windows go, then caption audio.
        An activity tracker's x-vector is never dropped (its stream waits for it). While requests
        are out (taken, not delivered), a dropped caption window stays in the queue as a skip
        (`_drop`), and only the requests that compute count against the limit."""
        limit = self.config.max_queued_windows
        d = self.config.degrade
        while d.enabled and self.level >= 3 and self.has_ctc and self.queued_samples() > d.level_samples[2]:
            caption = {CTC} if self._in_flight else {CTC, SKIP}  # out: skips already wait in order
            self._drop(next(r for r in self.queue if caption & r.want))  # the oldest: commits stay in order
        while (sum(r.computes for r in self.queue) if self._in_flight else len(self.queue)) > limit:
            victim = next((r for r in self.queue if r.want == frozenset({DIAR})), None)
            if victim is None:
                victim = next((r for r in self.queue if not r.blocks_stream
                               and (r.computes or not self._in_flight)), None)
                if victim is None:
                    return
            self._drop(victim)

    def _drop(self, victim: WindowRequest) -> None:
        """`victim` leaves the queue uncomputed. A caption window dropped while requests are out
        becomes an in-order skip in its place: its frames are committed as silence in its turn,
        after those of the windows out (committing them now would run ahead of those)."""
        i = next(k for k, r in enumerate(self.queue) if r is victim)
        if self._in_flight and CTC in victim.want:
            empty = np.zeros(0, dtype=np.float32)  # a flush window keeps its samples: its length is its range
            self.queue[i] = replace(victim, want=frozenset({SKIP}), samples=victim.samples if victim.final else empty)
            return
        self._on_dropped(victim)
        del self.queue[i]

    def _on_dropped(self, req: WindowRequest) -> None:
        """Hook: `req` leaves the queue uncomputed (degrade)."""

    def _forget(self) -> None:
        """Drop audio no future window or speaker x-vector needs."""
        keep = min(self.audio.end, self._keep_from_sample())
        # never hold more than the buffer can take: x-vector audio is the first thing to go
        keep = max(keep, self.audio.end - self.audio.capacity + self._max_piece())
        self.audio.discard_before(keep)

    def _keep_from_sample(self) -> int:
        """Audio from this sample on is still needed by windows to cut."""
        keep = self.audio.end
        if self.has_ctc:
            keep = min(keep, self._next_ctc * self.ctc_schedule.hop_samples)
        if self.has_diar and not self.shared:
            keep = min(keep, self._next_diar * self.diar_schedule.hop_samples)
        return keep

    def _max_piece(self) -> int:
        return max(self.ctc_schedule.hop_samples, self.diar_schedule.hop_samples)

    def _audio_span(self, start: int, end: int) -> np.ndarray | None:
        """Samples [start, end) while still held, else None."""
        if start < self.audio.start or end > self.audio.end:
            return None
        return self.audio.view(start, end)
