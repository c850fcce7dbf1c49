"""Audio sources: the microphone path with a scripted PortAudio stand-in, file loading and mixing."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import app.sources as sources
from app.errors import AppError, NoMicrophone
from app.sources import MicrophoneSource, choose_microphone, load_audio, to_mono_16k


class FakeInputStream:
    """Calls the callback from its own thread, like PortAudio: 48 kHz blocks, one overflow."""

    def __init__(self, device: int, channels: int, samplerate: int, dtype: str, blocksize: int,
                 callback: Any) -> None:
        self.callback, self.blocksize, self.rate = callback, blocksize, samplerate
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stopped = threading.Event()

    def _run(self) -> None:
        t = np.arange(self.rate) / self.rate  # one second of a 440 Hz tone
        audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
        for i, start in enumerate(range(0, len(audio), self.blocksize)):
            if self.stopped.is_set():
                return
            status = SimpleNamespace(input_overflow=(i == 3))
            self.callback(audio[start : start + self.blocksize], self.blocksize, None, status)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.thread.join(timeout=5)


def fake_sounddevice(devices: list[dict]) -> Any:
    return SimpleNamespace(
        query_devices=lambda: devices,
        default=SimpleNamespace(device=(1, 0)),
        InputStream=FakeInputStream,
    )


DEVICES = [
    {"name": "HDMI out", "max_input_channels": 0, "default_samplerate": 48000.0},
    {"name": "USB Headset Mic", "max_input_channels": 1, "default_samplerate": 48000.0},
    {"name": "Built-in Microphone", "max_input_channels": 2, "default_samplerate": 44100.0},
]


async def test_microphone_blocks_are_resampled_and_overflows_counted(monkeypatch) -> None:
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake_sounddevice(DEVICES))
    mic = choose_microphone(None)
    assert (mic.index, mic.name) == (1, "USB Headset Mic")
    got = []
    async with MicrophoneSource(mic) as source:
        async for block in source:
            got.append(block.samples)
            if sum(len(b) for b in got) >= 15000:
                break
    audio = np.concatenate(got)
    assert source.overflows == 1 and source.dropped_samples == source.block_frames
    # 48 kHz -> 16 kHz: a 440 Hz tone stays a 440 Hz tone
    spectrum = np.abs(np.fft.rfft(audio[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 2


def test_microphone_choice_by_index_or_name(monkeypatch) -> None:
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake_sounddevice(DEVICES))
    assert choose_microphone("2").name == "Built-in Microphone"
    assert choose_microphone("built-in").index == 2
    with pytest.raises(AppError, match="no input device with that index"):
        choose_microphone("0")  # an output-only device
    with pytest.raises(AppError, match="2 input devices match"):
        choose_microphone("i")
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake_sounddevice(DEVICES[:1]))
    with pytest.raises(NoMicrophone):
        choose_microphone(None)


def test_files_of_any_rate_and_channels_become_16k_mono(tmp_path) -> None:
    t = np.arange(22050) / 22050
    left = 0.5 * np.sin(2 * np.pi * 300 * t)
    sf.write(tmp_path / "s.flac", np.stack([left, left], axis=1), 22050)
    audio = load_audio(tmp_path / "s.flac")
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    assert abs(np.argmax(np.abs(np.fft.rfft(audio))) - 300) <= 1
    with pytest.raises(AppError, match="1-D or"):
        to_mono_16k(np.zeros((2, 2, 2)), 16000)
