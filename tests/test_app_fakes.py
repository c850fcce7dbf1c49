"""A scripted fake engine for the app tests: real `engine.events` values from audio positions.

Each whole second of audio that is not silent becomes a final caption of two words, spoken by
`alice` on even seconds and `unknown-1` on odd ones, with a speaker turn and a second of activity;
a partial follows every half second; the first caption is later revised to another speaker and
`alice` is matched once. Output depends only on the audio, never on how it was chunked, so the
app's plumbing can be checked exactly. The checks at the bottom pin that contract down.
"""

from __future__ import annotations

import numpy as np

from engine.speech_detect import EnergySpeechDetector

from engine.events import (
    CaptionFinal,
    CaptionPartial,
    CaptionRevision,
    Event,
    SpeakerActivity,
    SpeakerMatch,
    SpeakerTurn,
    Word,
)
from engine.timebase import FRAME_SAMPLES, FRAMES_PER_SECOND, SAMPLE_RATE

HALF = SAMPLE_RATE // 2


def speaker_of(second: int) -> str:
    return "alice" if second % 2 == 0 else "unknown-1"


class FakeStream:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._done = 0  # samples consumed into whole seconds
        self._halves = 0
        self._caption_id = 0
        self.accepted_samples = 0

    def _second(self, index: int, samples: np.ndarray) -> list[Event]:
        start = index * FRAMES_PER_SECOND
        end = start + len(samples) // FRAME_SAMPLES
        if float(np.sqrt(np.mean(np.square(samples)))) < 1e-3:
            return []
        who = speaker_of(index)
        mid = (start + end) // 2
        words = (Word(f"word{index}a", start, mid, who), Word(f"word{index}b", mid, end, who))
        self._caption_id += 1
        events: list[Event] = [
            SpeakerActivity(start, (who,), tuple((0.9,) for _ in range(end - start))),
            SpeakerTurn(index, who, start, end, overlap=False),
            CaptionFinal(self._caption_id, f"word{index}a word{index}b", words, start, end, who),
        ]
        if index == 0:
            events.append(SpeakerMatch(who, "alice", 0.81, 0.5, True, (("alice", 0.81),)))
        if index == 2:
            events.append(CaptionRevision(1, ("speaker",), speaker="bob"))
        return events

    def accept(self, samples: np.ndarray) -> list[Event]:
        self.accepted_samples += len(samples)
        self._buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.float32)])
        events: list[Event] = []
        total = self._done + len(self._buf)
        while total // HALF > self._halves:
            self._halves += 1
            f = self._halves * HALF // FRAME_SAMPLES
            events.append(CaptionPartial("...", f - HALF // FRAME_SAMPLES, f, None))
        while len(self._buf) >= SAMPLE_RATE:
            index = self._done // SAMPLE_RATE
            events += self._second(index, self._buf[:SAMPLE_RATE])
            self._buf = self._buf[SAMPLE_RATE:]
            self._done += SAMPLE_RATE
        return events

    def rename_speaker(self, old: str, new: str, voiceprint: np.ndarray | None = None) -> list[Event]:
        """Relabel: a revision for every caption so far (the fake keeps no per-caption speakers)."""
        if old != "unknown-1":
            raise KeyError(f"no speaker {old!r} in this stream")
        self.renamed = (old, new, voiceprint)
        return [CaptionRevision(cid, ("speaker",), speaker=new) for cid in range(2, self._caption_id + 1, 2)]

    def flush(self) -> list[Event]:
        events: list[Event] = []
        if len(self._buf) >= FRAME_SAMPLES:
            events = self._second(self._done // SAMPLE_RATE, self._buf)
        self._done += len(self._buf)
        self._buf = np.zeros(0, dtype=np.float32)
        return events


class FakeEngine:
    """Hands out `FakeStream`s and remembers them; `embedder` makes voiceprints possible."""

    def __init__(self, embedder: FakeEmbedder | None = None) -> None:
        self.streams: list[FakeStream] = []
        self.embedder = embedder
        self.speakers = None

    def new_stream(self) -> FakeStream:
        stream = FakeStream()
        self.streams.append(stream)
        return stream


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def syllables(seconds: float, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A tone gated 240 ms on, 80 ms off: the energy speech detector counts the bursts as speech."""
    x = tone(seconds, freq, amp)
    gate = (np.arange(len(x)) // FRAME_SAMPLES) % 16 < 12
    return (x * gate).astype(np.float32)


class FakeEmbedder:
    """A `voiceprints.embedding.Embedder` from band energies: different pitches, different 'voices'."""

    fingerprint = "fake-band-energies-v1"
    threshold = 0.9
    speech_detector = EnergySpeechDetector()  # its test audio is tones: speech only to the energy detector
    description = "scripted test embedder"

    def embed(self, samples: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(samples[: SAMPLE_RATE * 4], n=4096))
        bands = np.add.reduceat(spectrum, np.geomspace(8, 2048, 13).astype(int))
        return (bands / (np.linalg.norm(bands) + 1e-9)).astype(np.float32)


def test_fake_is_chunking_invariant() -> None:
    audio = tone(3.3)
    whole = FakeStream()
    a = whole.accept(audio) + whole.flush()
    pieces = FakeStream()
    b = []
    for i in range(0, len(audio), 777):
        b += pieces.accept(audio[i : i + 777])
    b += pieces.flush()
    assert [e for e in a if not isinstance(e, CaptionPartial)] == [
        e for e in b if not isinstance(e, CaptionPartial)
    ]
    assert sum(isinstance(e, CaptionFinal) for e in a) == 4


def test_fake_is_silent_on_silence() -> None:
    s = FakeStream()
    events = s.accept(np.zeros(2 * SAMPLE_RATE, dtype=np.float32)) + s.flush()
    assert not [e for e in events if isinstance(e, CaptionFinal)]
