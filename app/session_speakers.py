"""What the TUI asks of a live session about voices: record from the live input, enroll, verify,
and name an `unknown-N` track from what it already said (relabelling its captions).

A mixin of `app.session.LiveSession`: it uses the session's compute pool (every engine and
voiceprint call runs on the compute thread), its runner, record and bus. Errors the user can
fix come back as `AppError`.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from app.errors import AppError
from app.sources import AudioBlock
from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    from app.bus import EventBus
    from app.compute import ComputePool
    from app.live import StreamRunner
    from app.writers import SessionRecord


class SessionSpeakers:
    """Voice actions of a live session (mixed into `LiveSession`)."""

    pool: ComputePool
    bus: EventBus
    record: SessionRecord
    runner: StreamRunner | None
    speakers: Any  # a VoiceprintService, or None

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
            service = self._service()
            # the store read runs on the compute thread too: never SQLite on the event loop
            voiceprint = await self.pool.run(service.store.voiceprint, name, service.fingerprint)
            await self.pool.run(add, name, voiceprint.vector)

    async def verify(self, name: str, audio: np.ndarray) -> Any:
        """1:1 verification of `audio` against `name`'s voiceprint."""
        return await self._speaker_call(self._service().verify, name, audio)

    async def track_audio(self, track: str) -> np.ndarray:
        """What `track` said alone so far: the engine's own copy (read on the compute thread, the
        only one that touches engine state), else its solo turns from history."""
        assert self.runner is not None
        own = getattr(self.runner.stream, "speaker_audio", None)
        if own is not None:
            try:
                audio = await self.pool.run(own, track)
                if len(audio):
                    return audio
            except KeyError:
                pass
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
        audio = await self.track_audio(track)
        if not len(audio):
            raise AppError(f"{track} has no solo speech to enroll from yet")
        service = self._service()
        from voiceprints.service import MIN_TRACK_ENROLL_SPEECH_S

        # a track holds only what the engine kept of it: a documented lower minimum, flagged low_quality
        result = await self._speaker_call(functools.partial(
            service.enroll, name, [audio], min_enroll_speech_s=MIN_TRACK_ENROLL_SPEECH_S))
        voiceprint = await self.pool.run(service.store.voiceprint, result.name, service.fingerprint)
        return result, await self.relabel_track(track, result.name, voiceprint.vector)

    async def relabel_track(self, track: str, name: str, vector: np.ndarray | None) -> list[Any]:
        """Rename `track` to `name` in the live stream (on the compute thread); returns the
        revisions of its captions, also published on the bus: after the captions they revise, which
        a scheduled stream may still hold (its `in_order` queues them behind those)."""
        stream = self._stream()
        rename = getattr(stream, "rename_speaker", None)
        if rename is None:
            return []
        try:
            events = list(await self.pool.run(rename, track, name, vector))
        except KeyError as exc:
            raise AppError(str(exc).strip("'\"")) from None
        in_order = getattr(stream, "in_order", None)  # a plain stream's calls return all they made
        for event in in_order(events) if in_order is not None else events:
            self.bus.publish(event)
        return events
