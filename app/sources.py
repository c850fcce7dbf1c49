"""Audio sources for the live app: files (soundfile) and microphones (sounddevice), as 16 kHz mono.

Every source ends up as float32 mono blocks at the engine's 16 kHz. Files may have any rate and
channel count libsndfile reads; they are mixed down and resampled with soxr, then paced in real
time (or `speed` times faster, or as fast as the consumer takes them) against absolute deadlines,
so compute time spent by the consumer does not stretch the pacing. Microphones are opened through
sounddevice, imported only here and only when a microphone is used: the PortAudio callback hands a
copy of each block to the event loop with `call_soon_threadsafe` and never blocks; overflows are
counted, and the device's native rate is resampled to 16 kHz with a streaming soxr resampler.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np

from app.errors import AppError, NoMicrophone
from engine import audio as engine_audio
from engine.timebase import SAMPLE_RATE

BLOCK_SAMPLES = SAMPLE_RATE // 10  # 100 ms blocks: small enough for live captions, cheap per block


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """A block of 16 kHz mono float32 samples and the wall time (time.monotonic) it arrived."""

    samples: np.ndarray
    arrival_s: float


@dataclass(frozen=True, slots=True)
class InputCheck:
    """What `check_samples` found worth telling the user about a file that is still usable."""

    clipped_fraction: float
    silent: bool


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mix (frames, channels) or (frames,) audio down to mono and resample it to 16 kHz float32
    (`engine.audio.to_mono_16k`); a bad rate or shape is an `AppError`."""
    try:
        return engine_audio.to_mono_16k(samples, rate)
    except ValueError as exc:
        raise AppError(str(exc)) from None


def check_samples(samples: np.ndarray, what: str) -> InputCheck:
    """Refuse NaN or infinite samples (naming where); report clipping and silence for a warning."""
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise AppError(
            f"{what}: contains NaN or infinite samples (first at {bad / SAMPLE_RATE:.3f} s); "
            "the file is damaged or was written with a broken encoder"
        )
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    clipped = float(np.mean(np.abs(samples) >= 0.999)) if samples.size else 0.0
    return InputCheck(clipped_fraction=clipped, silent=peak < 1e-4)


def load_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an audio file into 16 kHz mono float32; every failure is one clear `AppError`."""
    import soundfile as sf

    name = os.fspath(path)
    if not os.path.exists(name):
        raise AppError(f"{name}: no such file")
    if os.path.isdir(name):
        raise AppError(f"{name}: is a folder, not an audio file")
    if os.path.getsize(name) == 0:
        raise AppError(f"{name}: the file is empty")
    try:
        data, rate = sf.read(name, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AppError(
            f"{name}: cannot read it as audio ({reason}); "
            f"use a format libsndfile reads, e.g. WAV, FLAC or OGG"
        ) from None
    if data.shape[0] == 0:
        raise AppError(f"{name}: the file holds no samples")
    samples = to_mono_16k(data, int(rate))
    check_samples(samples, name)
    return samples


class PauseSwitch:
    """Pause and resume a source; a paused file stops reading, a paused microphone drops audio."""

    def __init__(self) -> None:
        self._running = asyncio.Event()
        self._running.set()
        self.holding = 0  # sources now parked in `wait_running` (tests wait on this, not on time)

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def toggle(self) -> bool:
        """Flip the state; returns True when now paused."""
        if self._running.is_set():
            self._running.clear()
        else:
            self._running.set()
        return self.paused

    async def wait_running(self) -> None:
        self.holding += 1
        try:
            await self._running.wait()
        finally:
            self.holding -= 1


async def paced_blocks(
    samples: np.ndarray,
    speed: float | None,
    block_samples: int = BLOCK_SAMPLES,
    clock: Callable[[], float] = time.monotonic,
    pause: PauseSwitch | None = None,
) -> AsyncIterator[AudioBlock]:
    """Yield `samples` in blocks, each released at its real-time deadline divided by `speed`.

    Deadlines are absolute (start + samples released / rate / speed), so time the consumer spends
    between blocks is absorbed rather than added; time spent paused moves the start forward.
    `speed=None` releases blocks as fast as the consumer takes them.
    """
    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise AppError(f"--speed must be a positive number, got {speed}")
    start = clock()
    for offset in range(0, len(samples), block_samples):
        block = samples[offset : offset + block_samples]
        if pause is not None and pause.paused:
            paused_at = clock()
            await pause.wait_running()
            start += clock() - paused_at
        if speed is not None:
            deadline = start + (offset + len(block)) / SAMPLE_RATE / speed
            delay = deadline - clock()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)  # let the consumer and other tasks run between blocks
        yield AudioBlock(samples=block, arrival_s=clock())


# --- microphones ---------------------------------------------------------------------------


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio library into `NoMicrophone`."""
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:
        raise NoMicrophone(f"no microphone: PortAudio is not available ({exc})") from None
    return sd


@dataclass(frozen=True, slots=True)
class Microphone:
    """An input device as PortAudio lists it."""

    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool


def list_microphones() -> list[Microphone]:
    """The input devices PortAudio sees (raises `NoMicrophone` without PortAudio)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0] if sd.default.device else -1
    except Exception as exc:  # PortAudio raises its own error types on broken hosts
        raise NoMicrophone(f"no microphone: cannot query audio devices ({exc})") from None
    return [
        Microphone(i, d["name"], int(d["max_input_channels"]), float(d["default_samplerate"]),
                   i == default_in)
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def choose_microphone(choice: str | None) -> Microphone:
    """The device named by `choice` (an index or part of a name), or the default input device."""
    mics = list_microphones()
    if not mics:
        raise NoMicrophone("no microphone: PortAudio lists no input device")
    if choice is None:
        return next((m for m in mics if m.is_default), mics[0])
    if choice.isdigit():
        for m in mics:
            if m.index == int(choice):
                return m
        raise AppError(f"--mic {choice}: no input device with that index (see --list-mics)")
    hits = [m for m in mics if choice.lower() in m.name.lower()]
    if len(hits) != 1:
        what = "no input device" if not hits else f"{len(hits)} input devices"
        raise AppError(f"--mic {choice!r}: {what} match that name (see --list-mics)")
    return hits[0]


class MicrophoneSource:
    """A live microphone as an async iterator of 16 kHz `AudioBlock`s; overflows are counted.

    The PortAudio callback runs on PortAudio's thread: it only copies the block and schedules it
    onto the event loop, never blocking. Resampling to 16 kHz happens on the loop side with a
    streaming soxr resampler, so block joins add no clicks.
    """

    def __init__(self, mic: Microphone, block_s: float = BLOCK_SAMPLES / SAMPLE_RATE) -> None:
        self.mic = mic
        self.rate = int(mic.default_rate)
        self.block_frames = max(1, int(self.rate * block_s))
        self.overflows = 0
        self.dropped_samples = 0
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._stream: Any = None
        self._resampler: Any = None

    def _callback(self, loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
        def on_block(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
            if status and status.input_overflow:
                self.overflows += 1
                self.dropped_samples += frames
            loop.call_soon_threadsafe(self._queue.put_nowait, indata[:, 0].copy())

        return on_block

    async def __aenter__(self) -> "MicrophoneSource":
        sd = _sounddevice()
        if self.rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
        try:
            self._stream = sd.InputStream(
                device=self.mic.index, channels=1, samplerate=self.rate, dtype="float32",
                blocksize=self.block_frames, callback=self._callback(asyncio.get_running_loop()),
            )
            self._stream.start()
        except Exception as exc:
            raise NoMicrophone(f"no microphone: cannot open {self.mic.name!r} ({exc})") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
        self._queue.put_nowait(None)

    def __aiter__(self) -> "MicrophoneSource":
        return self

    async def __anext__(self) -> AudioBlock:
        block = await self._queue.get()
        if block is None:
            raise StopAsyncIteration
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block)
        return AudioBlock(samples=np.nan_to_num(block), arrival_s=time.monotonic())
