"""One live stream: requests out, results in, events out. It never calls a model.

A `Stream` holds one audio stream's state: the window schedule and request queue (its base class,
`WindowCutter` in engine/windowing.py), the caption decoder, the open captions
(engine/caption_book.py), the speaker tracker and the language model's re-decoder. It turns audio
into compute requests (`submit`, `take_requests`) and the model side's results into events
(`deliver`). The model side (engine/scheduler.py, `Engine.decode`) runs the requests of many
streams in batched forwards, x-vectors included, as sherpa-onnx's recognizer decodes its streams.

Results are taken in request order. An activity tracker that needs an x-vector in the middle of a
window's frames pauses that window's work and asks for it (a blocking {"xvec"} request); results
that arrive meanwhile wait in the stream's inbox, so the events are those of the synchronous order.

`accept(samples)` and `flush()` are the one-stream convenience: they submit and let the engine's
`decode` (given at construction by `Engine.new_stream`) run this stream's requests until none waits.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Generator

import numpy as np

from engine.activity_speakers import ActivitySpeakerTracker
from engine.caption_book import CaptionBook
from engine.captions import CaptionDecoder, PartialText
from engine.compute_requests import CTC, DIAR, SKIP, VAD, XVEC, WindowRequest
from engine.config import EngineConfig, HeadSchedule, frames_in
from engine.events import CaptionPartial, Event, Stats, Word
from engine.model_side import ModelSide, WindowOutputs
from engine.span_speakers import SpanSpeakerTracker
from engine.speaker_clusters import SpeakerClusters
from engine.speech_detect import padded_speech
from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE
from engine.windowing import WindowCutter

# a piece of delivery work: yields audio whose x-vector it needs, is sent the x-vector, returns events
Work = Generator[np.ndarray, np.ndarray, list[Event]]
DecodeFn = Callable[[list["Stream"]], dict[int, list[Event]]]


def _partial_decoder(lm: object | None, config: EngineConfig) -> object | None:
    """The LM re-decoder's beam decoder at the partial-caption beam (sharing its LM), or None."""
    decoder = getattr(lm, "decoder", None)
    if not config.partial_lm_beam or decoder is None or not hasattr(decoder, "with_beam_width"):
        return None
    return decoder.with_beam_width(config.partial_lm_beam)


class Stream(WindowCutter):
    """Per-stream engine state; create with `Engine.new_stream()` (see module docstring)."""

    def __init__(self, models: ModelSide, config: EngineConfig, stream_id: int = 0,
                 voiceprints: dict[str, np.ndarray] | None = None, voiceprint_threshold: float = 0.5,
                 lm: object | None = None, decode: DecodeFn | None = None) -> None:
        """`models` is read for its description only (heads, vocabulary, speaker slots), never run;
        `decode` runs a list of streams' requests (`Engine.decode`) for `accept`/`flush`."""
        self.vocab = models.vocab
        self.num_speakers = models.num_speakers
        self._voiceprints = dict(voiceprints or {})
        self._voiceprint_threshold = voiceprint_threshold
        self._decode = decode
        heads = models.heads
        has_ctc, has_vad = CTC in heads, VAD in heads
        self.has_sv = "sv" in heads
        # who speaks when from speech spans' x-vectors (engine/span_speakers.py) ...
        self.spans = (has_vad and self.has_sv and config.speakers.tracking == "spans"
                      and (has_ctc or DIAR in heads))
        # ... or from the activity head's channels (engine/activity_speakers.py); the head, when present,
        # still runs with span tracking: its overlap evidence keeps two voices apart
        has_diar = DIAR in heads and models.num_speakers > 0
        shared = bool(models.shared) and has_ctc and has_diar
        if self.spans and has_ctc and not shared:
            has_diar = False  # an activity head on its own pass would only add overlap evidence: not run
        super().__init__(config, stream_id, has_ctc, has_diar, has_vad, shared)
        self.lm = lm
        self._partial_decoder = _partial_decoder(lm, config)
        self.reset()

    # -- lifecycle ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: the next sample is sample 0 of a new stream."""
        cfg = self.config
        self._reset_windows()
        self._decoder = CaptionDecoder(self.vocab, cfg.word_gap_frames, self._partial_decoder,
                                       cfg.partial_lm_max_frames) if self.has_ctc else None
        horizon = max(cfg.revise_horizon_frames, self.diar_schedule.window_frames + 1)
        sc = cfg.speakers
        self.tracker: ActivitySpeakerTracker | SpanSpeakerTracker | None = (
            SpanSpeakerTracker(
                sc, cfg.speech,
                SpeakerClusters(sc, self._voiceprints, self._voiceprint_threshold,
                                thresholds=(sc.span_threshold, sc.span_merge_threshold)),
                horizon_frames=horizon,
            )
            if self.spans
            else ActivitySpeakerTracker(
                self.num_speakers, cfg.speakers, self.has_sv,
                SpeakerClusters(cfg.speakers, self._voiceprints, self._voiceprint_threshold),
                horizon_frames=horizon,
            )
            if self.has_diar
            else None
        )
        self._speech_next = 0  # frames before this have speech probabilities (given to the tracker)
        self.captions = CaptionBook(cfg.caption_gap_frames, with_lm=self.lm is not None)
        self._last_partial: tuple[str, str | None] | None = None
        self._finishing = False  # input ended (the cutter's `_flushed`), every result in: closing captions, runs
        self.finished = False  # ... and the last events were made
        self.windows = 0
        self.ctc_windows = 0
        self.dropped_samples = 0
        self._held_events: list[Event] = []  # made while dropping windows, sent with the next one
        self._inbox: deque[Callable[[], Work]] = deque()  # delivered results waiting for a paused one
        self._work: Work | None = None  # the delivery now paused for an x-vector
        if self.lm is not None and hasattr(self.lm, "reset"):
            self.lm.reset()

    # -- the one-stream convenience ----------------------------------------------------------

    def accept(self, samples: np.ndarray) -> list[Event]:
        """Take a block of 16 kHz mono float32 samples; returns the events it completes."""
        samples = self._check(samples)
        decode = self._decoder_fn()
        events: list[Event] = []
        pos = 0
        while pos < len(samples):
            piece = samples[pos : pos + max(1, self._next_fire() - self.audio.end)]
            pos += len(piece)
            self.submit(piece)
            events += decode([self]).get(self.stream_id, [])
        return events

    def flush(self) -> list[Event]:
        """Finalise everything: run the last (shorter) windows, close captions and runs."""
        if self._flushed:
            return []
        decode = self._decoder_fn()
        events = decode([self]).get(self.stream_id, [])
        events += self.finish_input()
        events += decode([self]).get(self.stream_id, [])
        return events

    def _decoder_fn(self) -> DecodeFn:
        if self._decode is None:
            raise RuntimeError("this stream has no decoder: make it with Engine.new_stream(), or run its "
                               "requests with a Scheduler (submit / finish_input)")
        return self._decode

    @property
    def busy(self) -> bool:
        """Results still to come: requests queued or out, a delivery waiting, or flushed and not
        yet finished. A caller that submitted audio has all its events once this is False."""
        return bool(self.queue or self._in_flight or self._inbox or self._work is not None
                    or (self._flushed and not self.finished))

    def finish_input(self) -> list[Event]:
        """No more audio: queue the final (shorter) windows; once every request is delivered the
        stream closes its captions and speaker runs (`finished`). Returns events made now."""
        if self._flushed:
            return []
        self._flushed = True
        self._cut_final()
        return self._maybe_finish()

    # -- requests ------------------------------------------------------------------------------

    def _on_dropped(self, req: WindowRequest) -> None:
        if self._work is not None or self._inbox:
            # earlier windows' results wait behind a delivery paused for an x-vector: their frames
            # are not committed yet, so this window's frames go as silence after them, in order
            self._inbox.append(lambda: self._dropped_in_order(req))
        else:
            self._drop_caption_window(req)
        if req.span is not None and isinstance(self.tracker, SpanSpeakerTracker):
            self._held_events += self.tracker.skip(req.span)

    def _level_changed(self) -> None:
        if self.tracker is not None:
            self.tracker.reembed = self.level < 2

    def _keep_from_sample(self) -> int:
        keep = super()._keep_from_sample()
        if isinstance(self.tracker, ActivitySpeakerTracker):
            keep = min(keep, self.tracker.aggregator.settled * FRAME_SAMPLES)
        if isinstance(self.tracker, SpanSpeakerTracker):  # audio of spans still to embed
            keep = min(keep, self.tracker.keep_from_frame * FRAME_SAMPLES)
        return keep

    def _drop_caption_window(self, req: WindowRequest) -> None:
        """Skip a caption window's frames as silence so later commits stay contiguous."""
        if self._decoder is None or not ({CTC, SKIP} & req.want):
            return
        lo, hi = self._commit_range(req)
        lo = max(lo, self._decoder.next_frame)
        if hi <= lo:
            return
        self._decoder.commit(lo, self._blank_log_probs(hi - lo))
        self.dropped_samples += (hi - lo) * FRAME_SAMPLES
        if self.lm is not None:  # revisions it causes go out with the next delivered window
            self._held_events += self._lm_updates(self.lm.accept(self._blank_log_probs(hi - lo)))

    def _dropped_in_order(self, req: WindowRequest) -> Work:
        """A dropped window's turn in the inbox: its caption frames committed as silence."""
        self._drop_caption_window(req)
        return self._with_held([])
        yield  # a generator, as every inbox entry is (never reached)

    def _blank_log_probs(self, n: int) -> np.ndarray:
        assert self.vocab is not None
        lp = np.full((n, len(self.vocab.tokens)), -30.0, dtype=np.float32)
        lp[:, self.vocab.blank_id] = 0.0
        return lp

    def _cut_final(self) -> None:
        """The flush windows: the last window's worth of audio, committing everything left."""
        total = self.audio.end
        need_ctc = self.has_ctc and self._decoder is not None and self._decoder.next_frame < frames_in(total)
        need_diar = self.has_diar and not self.shared and self.tracker is not None
        if self.spans and not self.has_ctc:
            need_diar = self._speech_next < frames_in(total)
        vad = {VAD} if self.has_vad else set()
        for schedule, want, needed in (
            (self.ctc_schedule, frozenset({CTC, DIAR} | vad) if self.shared else frozenset({CTC} | vad), need_ctc),
            (self.diar_schedule, frozenset({DIAR} | (vad if not self.has_ctc else set())), need_diar),
        ):
            if not needed:
                continue
            start = max(0, self.audio.start, (total - schedule.window_samples + FRAME_SAMPLES - 1) // FRAME_SAMPLES * FRAME_SAMPLES)
            if CTC in want and self._decoder is not None:
                start = min(start, self._decoder.next_frame * FRAME_SAMPLES)
            if frames_in(total - start) > 0:
                self._enqueue(want, start, total - start, final=True)

    # -- delivering results --------------------------------------------------------------------

    def deliver(self, req: WindowRequest, out: WindowOutputs, index: int) -> list[Event]:
        """Turn row `index` of a forward's outputs for `req` (taken with `take_requests`) into events."""
        self._in_flight.discard(req.seq)
        if req.blocks_stream:  # the x-vector a paused delivery waits for
            assert self._work is not None, "an x-vector result with no delivery waiting for it"
            vector = out.embeddings[index] if out.embeddings is not None else None
            if vector is None:
                raise ValueError("the model side returned no x-vector for an {'xvec'} request")
            events = self._step(vector)
        else:
            self._inbox.append(lambda: self._process(req, out, index))
            events = []
        events += self._pump()
        return events + self._maybe_finish()

    def _pump(self) -> list[Event]:
        """Run waiting deliveries in order until one pauses for an x-vector or none is left."""
        events: list[Event] = []
        while self._work is None and self._inbox:
            self._work = self._inbox.popleft()()
            events += self._step(None)
        return events

    def _step(self, value: np.ndarray | None) -> list[Event]:
        """Resume the paused delivery with `value`; it finishes (its events) or asks for an x-vector."""
        assert self._work is not None
        try:
            audio = self._work.send(value)  # type: ignore[arg-type]
        except StopIteration as done:
            self._work = None
            return list(done.value)
        self._request_xvector(0, audio)
        return []

    def _maybe_finish(self) -> list[Event]:
        """After the last result of a flushed stream: close captions and runs (this work, too,
        may pause for x-vectors; `finished` turns True when it is done)."""
        if (not self._flushed or self._finishing or self.queue or self._in_flight or self._inbox
                or self._work is not None):
            return []
        self._finishing = True
        self._work = self._finish()
        return self._step(None)

    def _commit_range(self, req: WindowRequest, schedule: HeadSchedule | None = None,
                      done: int | None = None) -> tuple[int, int]:
        """Frames window `req` takes once: its hop after the left context (a flush window: from
        `done`, the first frame not yet taken, to its end). Caption frames by default."""
        s = schedule or self.ctc_schedule
        first_frame = req.start_sample // FRAME_SAMPLES
        if req.final:
            start = self._decoder.next_frame if done is None else done  # type: ignore[union-attr]
            return start, first_frame + frames_in(len(req.samples))
        k = req.start_sample // s.hop_samples
        lo = 0 if k == 0 else first_frame + s.left_frames
        return lo, first_frame + s.left_frames + s.hop_frames

    def _process(self, req: WindowRequest, out: WindowOutputs, index: int) -> Work:
        """One request's result -> events (may pause for the activity tracker's x-vectors)."""
        events: list[Event] = []
        if SKIP in req.want:
            self._drop_caption_window(req)
            self._update_level()
            events, self._held_events = self._held_events, []
            return events
        if XVEC in req.want:
            events = self._deliver_span(req, out, index)
            if events and self.captions:
                events += self._revise()
            return self._with_held(events)
        self.windows += 1
        first_frame = req.start_sample // FRAME_SAMPLES
        speech = out.speech_probs[index] if out.speech_probs is not None else None
        if isinstance(self.tracker, SpanSpeakerTracker) and speech is not None:
            if out.activity_probs is not None:
                sched = self.ctc_schedule if CTC in req.want else self.diar_schedule
                probs = out.activity_probs[index]
                settle_to = first_frame + (len(probs) if req.final else sched.hop_frames)
                self.tracker.add_activity(first_frame, probs, settle_to)
            events += self._deliver_speech(req, speech, first_frame)
        elif DIAR in req.want and isinstance(self.tracker, ActivitySpeakerTracker) and out.activity_probs is not None:
            events += yield from self._deliver_diar(req, out.activity_probs[index], first_frame)
        if CTC in req.want and self._decoder is not None and out.ctc_log_probs is not None:
            log_probs = out.ctc_log_probs[index]
            if speech is not None and self.config.speech.gate_captions:
                log_probs = self._gate(log_probs, speech)
            events += self._deliver_ctc(req, log_probs, first_frame)
        elif events and self.captions:
            events += self._revise()
        self._update_level()
        return self._with_held(events)

    def _with_held(self, events: list[Event]) -> list[Event]:
        if self._held_events:
            events, self._held_events = self._held_events + events, []
        return events

    def _gate(self, log_probs: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """CTC output with every frame the speech detector calls non-speech set to blank."""
        cfg = self.config.speech
        silent = ~padded_speech(speech[: len(log_probs)], cfg.threshold, cfg.pad_frames)
        if not silent.any():
            return log_probs
        gated = log_probs.copy()
        gated[silent] = self._blank_log_probs(1)[0]
        return gated

    def _deliver_speech(self, req: WindowRequest, speech: np.ndarray, first_frame: int) -> list[Event]:
        """Speech probabilities of the frames this window settles -> the span tracker, and the
        x-vector requests that makes into the queue."""
        assert isinstance(self.tracker, SpanSpeakerTracker)
        lo, hi = self._commit_range(req, self.ctc_schedule if CTC in req.want else self.diar_schedule,
                                    self._speech_next)
        lo = max(lo, self._speech_next, first_frame)
        hi = min(hi, first_frame + len(speech))
        if hi <= lo:
            return []
        events = self.tracker.add_speech(lo, speech[lo - first_frame : hi - first_frame])
        self._speech_next = hi
        for span in self.tracker.take_requests():
            start, end = span.start_frame * FRAME_SAMPLES, span.end_frame * FRAME_SAMPLES
            audio = self._audio_span(start, end)
            if audio is None:  # no longer held (only after drops)
                events += self.tracker.skip(span)
                continue
            self._request_xvector(start, audio, span)
        return events

    def _deliver_span(self, req: WindowRequest, out: WindowOutputs, index: int) -> list[Event]:
        assert isinstance(self.tracker, SpanSpeakerTracker) and req.span is not None
        if out.embeddings is None:
            return self.tracker.skip(req.span)
        return self.tracker.add_embedding(req.span, out.embeddings[index], req.samples)

    def _deliver_diar(self, req: WindowRequest, probs: np.ndarray, first_frame: int) -> Work:
        assert isinstance(self.tracker, ActivitySpeakerTracker)
        s = self.diar_schedule
        settle_to = first_frame + frames_in(len(req.samples)) if req.final else first_frame + s.hop_frames
        events, _ = yield from self.tracker.add_window(first_frame, probs, settle_to, self._audio_span)
        return events

    def _deliver_ctc(self, req: WindowRequest, log_probs: np.ndarray, first_frame: int) -> list[Event]:
        assert self._decoder is not None
        self.ctc_windows += 1
        lo, hi = self._commit_range(req)
        if lo < self._decoder.next_frame:  # a window dropped earlier committed these as silence
            lo = self._decoder.next_frame
        if lo < first_frame:  # audio lost before this window (only after drops): silence
            self._decoder.commit(lo, self._blank_log_probs(first_frame - lo))
            self.dropped_samples += (first_frame - lo) * FRAME_SAMPLES
            if self.lm is not None:
                self._held_events += self._lm_updates(self.lm.accept(self._blank_log_probs(first_frame - lo)))
            lo = first_frame
        committed = log_probs[lo - first_frame : hi - first_frame]
        words = self._decoder.commit(lo, committed) if hi > lo else []
        events: list[Event] = self._finals(words)
        if self.lm is not None and hi > lo:
            events += self._lm_updates(self.lm.accept(committed))
        if self.captions and self.tracker is not None:
            events += self._revise()
        if self.config.partials and self.level == 0 and not req.final:
            use_lm = self._backlog + self.queued_samples() < self.config.partial_lm_max_lag_samples
            events += self._partial(self._decoder.partial(hi, log_probs[hi - first_frame :], use_lm))
        if self.config.stats_every_windows and self.ctc_windows % self.config.stats_every_windows == 0:
            events.append(self.stats())
        return events

    # -- captions ------------------------------------------------------------------------------

    def _speaker(self, start: int, end: int) -> str | None:
        return self.tracker.label_for(start, end) if self.tracker is not None else None

    def _finals(self, words: list[Word]) -> list[Event]:
        events = self.captions.finals(words, self._speaker)
        if self.tracker is None:
            self.captions.trim(None, self.config.revise_horizon_frames)
        else:
            settled = self.tracker.settled if isinstance(self.tracker, SpanSpeakerTracker) else self.tracker.aggregator.settled
            self.captions.trim(settled, self.config.revise_horizon_frames)
        return events

    def _revise(self) -> list[Event]:
        return self.captions.revise(self._speaker)

    def _lm_updates(self, updates: list, final: bool = False) -> list[Event]:
        """LM-committed words replace the greedy words of the captions they fall in (CaptionBook)."""
        anchor = float("inf") if final else self.lm.anchor_frame  # type: ignore[union-attr]
        return self.captions.lm_updates([w for u in updates for w in u.committed], anchor, final, self._speaker)

    def _partial(self, p: PartialText) -> list[Event]:
        speaker = self._speaker(p.start_frame, p.end_frame) if p.text else None
        key = (p.text, speaker)
        if key == self._last_partial or (self._last_partial is None and not p.text):
            return []
        self._last_partial = key
        return [CaptionPartial(p.text, p.start_frame, p.end_frame, speaker)]

    def _finish(self) -> Work:
        events: list[Event] = []
        if self._decoder is not None:
            events += self._finals(self._decoder.flush())
            if self.lm is not None:
                events += self._lm_updates(self.lm.flush(), final=True)
            if self._last_partial is not None and self._last_partial[0]:
                events.append(CaptionPartial("", self._decoder.next_frame, self._decoder.next_frame, None))
            self._last_partial = None
        if isinstance(self.tracker, SpanSpeakerTracker):
            events += self.tracker.finish()
        elif self.tracker is not None:
            ev, _ = yield from self.tracker.finish(self._audio_span)
            events += ev
            if self.captions:
                events += self._revise()
        events.append(self.stats())
        events, self._held_events = self._held_events + events, []
        self.finished = True
        return events

    def stats(self) -> Stats:
        """A Stats event for this stream now."""
        latency = {"algorithmic": 1000.0 * self.ctc_schedule.algorithmic_latency_samples / SAMPLE_RATE}
        latency.update(self._load)
        return Stats(
            audio_frames=self.audio.end // FRAME_SAMPLES,
            windows=self.windows,
            rtf=self._rtf,
            latency_ms=latency,
            dropped_samples=self.dropped_samples,
            degraded=self.degraded,
        )

    # -- speakers from outside ----------------------------------------------------------------

    def speakers(self) -> list[str]:
        """Identities known to this stream (enrolled names and `unknown-N`)."""
        return [c.label for c in self.tracker.clusters.clusters] if self.tracker is not None else []

    def speaker_audio(self, label: str) -> np.ndarray:
        """Recent single-speaker audio of `label` (for enrolling an `unknown-N` later)."""
        c = self.tracker.clusters.find(label) if self.tracker is not None else None
        if c is None:
            raise KeyError(f"no speaker {label!r} in this stream (known: {self.speakers()})")
        return np.concatenate(c.audio) if c.audio else np.zeros(0, dtype=np.float32)

    def rename_speaker(self, old: str, new: str, voiceprint: np.ndarray | None = None) -> list[Event]:
        """Name a speaker (after enrolling it): returns revisions of the captions it spoke."""
        if self.tracker is None:
            raise KeyError("this stream has no speaker tracking")
        self.tracker.rename(old, new, voiceprint)
        return self._revise()

    def add_voiceprint(self, name: str, vector: np.ndarray) -> None:
        """Seed a newly enrolled identity into this stream's clustering."""
        self._voiceprints[name] = np.asarray(vector)
        if self.tracker is not None:
            self.tracker.clusters.add_voiceprint(name, vector)
