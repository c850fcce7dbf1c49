"""One live stream's state: rolling audio, window schedule, captions, speakers and sequence ids.

`Stream.accept(samples)` buffers audio, cuts windows at fixed sample indices (never wall time),
runs them through the shared `ModelSide` and turns the outputs into events. The scheduler uses the
two halves separately: `submit` only cuts windows into a bounded queue, and `deliver` turns one
window's outputs into events, so many streams can share one batched forward per head. Both paths
take the same windows in the same order, so they give the same events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.activity_speakers import ActivitySpeakerTracker
from engine.buffers import RollingArray
from engine.captions import CaptionDecoder, PartialText
from engine.config import EngineConfig, HeadSchedule, frames_in
from engine.events import (
    CaptionFinal,
    CaptionPartial,
    CaptionRevision,
    Event,
    Stats,
    Word,
)
from engine.model_side import ModelSide, WindowOutputs
from engine.span_speakers import SpanRequest, SpanSpeakerTracker
from engine.speech_detect import padded_speech
from engine.speaker_clusters import SpeakerClusters
from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE

_CTC, _DIAR, _SKIP, _VAD, _XVEC = "ctc", "diar", "skip", "vad", "xvec"


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """One window to run: which heads, where it starts, its samples, and what it commits."""

    stream_id: int
    seq: int
    want: frozenset[str]
    start_sample: int
    samples: np.ndarray  # (N,) float32, a private copy
    final: bool = False  # a flush window (shorter than a full window, commits to the end)
    span: SpanRequest | None = None  # for an x-vector request ({"xvec"}): the speaker span

    @property
    def key(self) -> tuple[int, frozenset[str]]:
        """Windows with equal keys may share a batch (equal length, same heads)."""
        return (len(self.samples), self.want)


@dataclass(slots=True)
class _Caption:
    caption_id: int
    words: tuple[Word, ...]
    speaker: str | None
    start_frame: int = 0
    end_frame: int = 0
    lm_done: bool = False  # the language model has settled this caption's words


def _majority(words: tuple[Word, ...]) -> str | None:
    weight: dict[str | None, int] = {}
    for w in words:
        weight[w.speaker] = weight.get(w.speaker, 0) + (w.end_frame - w.start_frame)
    if not weight:
        return None
    return max(weight, key=lambda s: (weight[s], s is not None))


def _partial_decoder(lm: object | None, config: EngineConfig) -> object | None:
    """The LM re-decoder's beam decoder at the partial-caption beam (sharing its LM), or None."""
    decoder = getattr(lm, "decoder", None)
    if not config.partial_lm_beam or decoder is None or not hasattr(decoder, "with_beam_width"):
        return None
    return decoder.with_beam_width(config.partial_lm_beam)


class Stream:
    """Per-stream engine state; create with `Engine.new_stream()`."""

    def __init__(self, models: ModelSide, config: EngineConfig, stream_id: int = 0,
                 voiceprints: dict[str, np.ndarray] | None = None, voiceprint_threshold: float = 0.5,
                 lm: object | None = None) -> None:
        self.models = models
        self.config = config
        self.stream_id = stream_id
        self._voiceprints = dict(voiceprints or {})
        self._voiceprint_threshold = voiceprint_threshold
        self.has_ctc = _CTC in models.heads
        self.has_vad = _VAD in models.heads
        # who speaks when from speech spans' x-vectors (engine/span_speakers.py) ...
        self.spans = (self.has_vad and "sv" in models.heads and config.speakers.tracking == "spans"
                      and (self.has_ctc or _DIAR in models.heads))
        # ... or from the activity head's channels (engine/activity_speakers.py); the head, when present,
        # still runs with span tracking: its overlap evidence keeps two voices apart
        self.has_diar = _DIAR in models.heads and models.num_speakers > 0
        self.shared = bool(models.shared) and self.has_ctc and self.has_diar
        if self.spans and self.has_ctc and not self.shared:
            self.has_diar = False  # an activity head on its own pass would only add overlap evidence: not run
        self.ctc_schedule = config.ctc
        self.diar_schedule = config.ctc if self.shared else config.diar
        if self.has_diar and self.diar_schedule.window_samples < 2 * self.diar_schedule.hop_samples + 2 * FRAME_SAMPLES:
            raise ValueError(
                f"speaker windows ({self.diar_schedule.window_samples} samples) must be longer than two hops "
                f"({self.diar_schedule.hop_samples}) so a skipped window (degrade) leaves no gap"
            )
        longest = max(self.ctc_schedule.window_samples, self.diar_schedule.window_samples)
        self._capacity = 2 * longest + config.max_queued_windows * min(
            self.ctc_schedule.hop_samples, self.diar_schedule.hop_samples
        )
        self.lm = lm
        self._partial_decoder = _partial_decoder(lm, config)
        self.reset()

    # -- lifecycle ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: the next sample is sample 0 of a new stream."""
        cfg = self.config
        self.audio = RollingArray(self._capacity)
        self.queue: deque[WindowRequest] = deque()
        self._seq = 0
        self._next_ctc = 0  # index of the next caption window
        self._next_diar = 0
        self._decoder = CaptionDecoder(self.models.vocab, cfg.word_gap_frames, self._partial_decoder,
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
                self.models.num_speakers,
                cfg.speakers,
                self.models.embed if "sv" in self.models.heads else None,
                SpeakerClusters(cfg.speakers, self._voiceprints, self._voiceprint_threshold),
                horizon_frames=horizon,
            )
            if self.has_diar
            else None
        )
        self._speech_next = 0  # frames before this have speech probabilities (given to the tracker)
        self._captions: deque[_Caption] = deque()
        self._next_caption = 1
        self._last_partial: tuple[str, str | None] | None = None
        self._flushed = False
        self.windows = 0
        self.ctc_windows = 0
        self.dropped_samples = 0
        self.level = 0
        self._backlog = 0
        self._load: dict[str, float] = {}
        self._rtf: float | None = None
        self._lm_words: list[Word] = []  # LM-committed words not yet given to a caption
        self._held_events: list[Event] = []  # made while dropping windows, sent with the next one
        if self.lm is not None and hasattr(self.lm, "reset"):
            self.lm.reset()

    def report_load(self, backlog_samples: int = 0, rtf: float | None = None,
                    compute_ms: float | None = None, queue_ms: float | None = None) -> None:
        """Figures measured outside (audio waiting to be accepted, real-time factor, timings).

        The backlog drives the degrade policy (see `DegradeConfig`); the rest goes into Stats.
        """
        if backlog_samples < 0:
            raise ValueError(f"backlog_samples must be >= 0, got {backlog_samples}")
        self._backlog = int(backlog_samples)
        self._rtf = rtf
        if compute_ms is not None:
            self._load["compute"] = float(compute_ms)
        if queue_ms is not None:
            self._load["queueing"] = float(queue_ms)
        self._update_level()

    @property
    def degraded(self) -> tuple[str, ...]:
        """Names of the degradations now in force."""
        names = ("no-partials", "speaker-hop-x2", "no-reembedding", "drop-caption-audio")
        active = []
        if self.level >= 1:
            active += [names[0], names[1]]
        if self.level >= 2:
            active.append(names[2])
        if self.level >= 3:
            active.append(names[3])
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
        if self.tracker is not None:
            self.tracker.reembed = level < 2

    def queued_samples(self) -> int:
        """Audio cut into caption windows that are not computed yet."""
        if not self.has_ctc:
            return sum(self.diar_schedule.hop_samples for r in self.queue if _XVEC not in r.want)
        return sum(self.ctc_schedule.hop_samples for r in self.queue if _CTC in r.want)

    # -- the synchronous path -----------------------------------------------------------------

    def accept(self, samples: np.ndarray) -> list[Event]:
        """Take a block of 16 kHz mono float32 samples; returns the events it completes."""
        samples = self._check(samples)
        events: list[Event] = []
        pos = 0
        while pos < len(samples):
            piece = samples[pos : pos + max(1, self._next_fire() - self.audio.end)]
            pos += len(piece)
            self.submit(piece)
            events += self._run_queue()
        return events

    def flush(self) -> list[Event]:
        """Finalise everything: run the last (shorter) windows, close captions and runs."""
        if self._flushed:
            return []
        events = self._run_queue()
        self._flushed = True
        self._cut_final()
        events += self._run_queue()
        events += self._finish()
        return events

    def _run_queue(self) -> list[Event]:
        events: list[Event] = []
        while self.queue:
            req = self.queue.popleft()
            if _SKIP in req.want:
                events += self.deliver(req, WindowOutputs(), index=0)
                continue
            out = self.models.run_windows(req.samples[None, :], req.want)
            events += self.deliver(req, out, index=0)
        return events

    # -- cutting windows ----------------------------------------------------------------------

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
                want = {_CTC, _DIAR} if self.shared else {_CTC}
                if self.has_vad:
                    want.add(_VAD)
                if self.level >= 3 and k % 2 == 1:
                    want = {_SKIP}  # degrade: this window's frames are dropped as silence, uncomputed
                self._enqueue(frozenset(want), k * self.ctc_schedule.hop_samples, self.ctc_schedule.window_samples)
            else:
                k, self._next_diar = self._next_diar, self._next_diar + 1
                want = {_DIAR, _VAD} if self.has_vad and not self.has_ctc else {_DIAR}
                if self.level >= 1 and k % 2 == 1 and _VAD not in want:
                    continue  # degrade: every other speaker window is skipped
                self._enqueue(frozenset(want), k * self.diar_schedule.hop_samples, self.diar_schedule.window_samples)

    def _enqueue(self, want: frozenset[str], start: int, length: int, final: bool = False) -> None:
        if _SKIP in want:
            samples = np.zeros(0, dtype=np.float32)
        else:
            samples = self.audio.view(start, start + length).copy()
        self.queue.append(WindowRequest(self.stream_id, self._seq, want, start, samples, final))
        self._seq += 1
        self._drop_excess()

    def _drop_excess(self) -> None:
        """Bounded queue: beyond the limit the oldest speaker windows go, then caption audio."""
        limit = self.config.max_queued_windows
        d = self.config.degrade
        while d.enabled and self.level >= 3 and self.has_ctc and self.queued_samples() > d.level_samples[2]:
            victim = next(r for r in self.queue if {_CTC, _SKIP} & r.want)  # the oldest, so commits stay in order
            self._drop_caption_window(victim)
            self.queue.remove(victim)
        while len(self.queue) > limit:
            victim = next((r for r in self.queue if r.want == frozenset({_DIAR})), None)
            if victim is None:
                victim = self.queue[0]
                self._drop_caption_window(victim)
            if victim.span is not None and isinstance(self.tracker, SpanSpeakerTracker):
                self._held_events += self.tracker.skip(victim.span)
            self.queue.remove(victim)

    def _drop_caption_window(self, req: WindowRequest) -> None:
        """Skip a caption window's frames as silence so later commits stay contiguous."""
        if self._decoder is None or not ({_CTC, _SKIP} & req.want):
            return
        lo, hi = self._commit_range(req)
        lo = max(lo, self._decoder.next_frame)
        if hi <= lo:
            return
        self._decoder.commit(lo, self._blank_log_probs(hi - lo))
        self.dropped_samples += (hi - lo) * FRAME_SAMPLES
        if self.lm is not None:  # revisions it causes go out with the next delivered window
            self._held_events += self._lm_updates(self.lm.accept(self._blank_log_probs(hi - lo)))

    def _blank_log_probs(self, n: int) -> np.ndarray:
        lp = np.full((n, len(self.models.vocab.tokens)), -30.0, dtype=np.float32)
        lp[:, self.models.vocab.blank_id] = 0.0
        return lp

    def _cut_final(self) -> None:
        """The flush windows: the last window's worth of audio, committing everything left."""
        total = self.audio.end
        need_ctc = self.has_ctc and self._decoder is not None and self._decoder.next_frame < frames_in(total)
        need_diar = self.has_diar and not self.shared and self.tracker is not None
        if self.spans and not self.has_ctc:
            need_diar = self._speech_next < frames_in(total)
        vad = {_VAD} if self.has_vad else set()
        for schedule, want, needed in (
            (self.ctc_schedule, frozenset({_CTC, _DIAR} | vad) if self.shared else frozenset({_CTC} | vad), need_ctc),
            (self.diar_schedule, frozenset({_DIAR} | (vad if not self.has_ctc else set())), need_diar),
        ):
            if not needed:
                continue
            start = max(0, self.audio.start, (total - schedule.window_samples + FRAME_SAMPLES - 1) // FRAME_SAMPLES * FRAME_SAMPLES)
            if _CTC in want and self._decoder is not None:
                start = min(start, self._decoder.next_frame * FRAME_SAMPLES)
            if frames_in(total - start) > 0:
                self._enqueue(want, start, total - start, final=True)

    def _forget(self) -> None:
        """Drop audio no future window or speaker x-vector needs."""
        keep = self.audio.end
        if self.has_ctc:
            keep = min(keep, self._next_ctc * self.ctc_schedule.hop_samples)
        if self.has_diar:
            keep = min(keep, self._next_diar * self.diar_schedule.hop_samples if not self.shared else keep)
            if isinstance(self.tracker, ActivitySpeakerTracker):
                keep = min(keep, self.tracker.aggregator.settled * FRAME_SAMPLES)
        if isinstance(self.tracker, SpanSpeakerTracker):  # audio of spans still to embed
            keep = min(keep, self.tracker.keep_from_frame * FRAME_SAMPLES)
        # never hold more than the buffer can take: x-vector audio is the first thing to go
        keep = max(keep, self.audio.end - self.audio.capacity + self._max_piece())
        self.audio.discard_before(keep)

    def _max_piece(self) -> int:
        return max(self.ctc_schedule.hop_samples, self.diar_schedule.hop_samples)

    def _audio_span(self, start: int, end: int) -> np.ndarray | None:
        if start < self.audio.start or end > self.audio.end:
            return None
        return self.audio.view(start, end)

    # -- delivering outputs -------------------------------------------------------------------

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

    def deliver(self, req: WindowRequest, out: WindowOutputs, index: int) -> list[Event]:
        """Turn row `index` of a forward's outputs for `req` into events."""
        events: list[Event] = []
        if _SKIP in req.want:
            self._drop_caption_window(req)
            self._update_level()
            events, self._held_events = self._held_events, []
            return events
        if _XVEC in req.want:
            events = self._deliver_span(req, out, index)
            if events and self._captions:
                events += self._revise()
            return self._with_held(events)
        self.windows += 1
        first_frame = req.start_sample // FRAME_SAMPLES
        speech = out.speech_probs[index] if out.speech_probs is not None else None
        if isinstance(self.tracker, SpanSpeakerTracker) and speech is not None:
            if out.activity_probs is not None:
                sched = self.ctc_schedule if _CTC in req.want else self.diar_schedule
                probs = out.activity_probs[index]
                settle_to = first_frame + (len(probs) if req.final else sched.hop_frames)
                self.tracker.add_activity(first_frame, probs, settle_to)
            events += self._deliver_speech(req, speech, first_frame)
        elif _DIAR in req.want and isinstance(self.tracker, ActivitySpeakerTracker) and out.activity_probs is not None:
            events += self._deliver_diar(req, out.activity_probs[index], first_frame)
        if _CTC in req.want and self._decoder is not None and out.ctc_log_probs is not None:
            log_probs = out.ctc_log_probs[index]
            if speech is not None and self.config.speech.gate_captions:
                log_probs = self._gate(log_probs, speech)
            events += self._deliver_ctc(req, log_probs, first_frame)
        elif events and self._captions:
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
        lo, hi = self._commit_range(req, self.ctc_schedule if _CTC in req.want else self.diar_schedule,
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
            self.queue.append(WindowRequest(self.stream_id, self._seq, frozenset({_XVEC}), start, audio.copy(), span=span))
            self._seq += 1
        return events

    def _deliver_span(self, req: WindowRequest, out: WindowOutputs, index: int) -> list[Event]:
        assert isinstance(self.tracker, SpanSpeakerTracker) and req.span is not None
        if out.embeddings is None:
            return self.tracker.skip(req.span)
        return self.tracker.add_embedding(req.span, out.embeddings[index], req.samples)

    def _deliver_diar(self, req: WindowRequest, probs: np.ndarray, first_frame: int) -> list[Event]:
        assert self.tracker is not None
        s = self.diar_schedule
        settle_to = first_frame + frames_in(len(req.samples)) if req.final else first_frame + s.hop_frames
        events, _ = self.tracker.add_window(first_frame, probs, settle_to, self._audio_span)
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
        if self._captions and self.tracker is not None:
            events += self._revise()
        if self.config.partials and self.level == 0 and not req.final:
            use_lm = self._backlog + self.queued_samples() < self.config.partial_lm_max_lag_samples
            events += self._partial(self._decoder.partial(hi, log_probs[hi - first_frame :], use_lm))
        if self.config.stats_every_windows and self.ctc_windows % self.config.stats_every_windows == 0:
            events.append(self._stats())
        return events

    def _speaker(self, start: int, end: int) -> str | None:
        return self.tracker.label_for(start, end) if self.tracker is not None else None

    def _finals(self, words: list[Word]) -> list[Event]:
        """Group committed words into captions, one per run of words with the same speaker."""
        events: list[Event] = []
        labelled = [Word(w.text, w.start_frame, w.end_frame, self._speaker(w.start_frame, w.end_frame)) for w in words]
        group: list[Word] = []
        for w in labelled + [None]:  # type: ignore[list-item]
            if group and (
                w is None
                or w.speaker != group[-1].speaker
                or w.start_frame - group[-1].end_frame >= self.config.caption_gap_frames
            ):
                cap = _Caption(self._next_caption, tuple(group), group[0].speaker,
                               group[0].start_frame, group[-1].end_frame, lm_done=self.lm is None)
                self._next_caption += 1
                self._captions.append(cap)
                events.append(CaptionFinal(
                    cap.caption_id, " ".join(x.text for x in group), cap.words,
                    group[0].start_frame, group[-1].end_frame, cap.speaker,
                ))
                group = []
            if w is not None:
                group.append(w)
        self._trim_captions()
        return events

    def _partial(self, p: PartialText) -> list[Event]:
        speaker = self._speaker(p.start_frame, p.end_frame) if p.text else None
        key = (p.text, speaker)
        if key == self._last_partial or (self._last_partial is None and not p.text):
            return []
        self._last_partial = key
        return [CaptionPartial(p.text, p.start_frame, p.end_frame, speaker)]

    def _revise(self) -> list[Event]:
        """Speaker labels may have settled or changed: revise captions whose speakers differ."""
        events: list[Event] = []
        for cap in self._captions:
            words = tuple(
                Word(w.text, w.start_frame, w.end_frame, self._speaker(w.start_frame, w.end_frame) or w.speaker)
                for w in cap.words
            )  # a known label is never revised back to unknown (None)
            if words == cap.words:
                continue
            speaker = _majority(words)
            changed = ("words",) if speaker == cap.speaker else ("speaker", "words")
            cap.words, cap.speaker = words, speaker
            events.append(CaptionRevision(cap.caption_id, changed, words=words, speaker=speaker))
        return events

    def _trim_captions(self) -> None:
        if self.tracker is None:  # without speakers only the language model revises captions
            while self._captions and self._captions[0].lm_done:
                self._captions.popleft()
            return
        horizon = self.config.revise_horizon_frames
        settled = self.tracker.settled if isinstance(self.tracker, SpanSpeakerTracker) else self.tracker.aggregator.settled
        while self._captions and self._captions[0].words[-1].end_frame < settled - horizon:
            self._captions.popleft()

    def _finish(self) -> list[Event]:
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
            ev, _ = self.tracker.finish(self._audio_span)
            events += ev
            if self._captions:
                events += self._revise()
        events.append(self._stats())
        events, self._held_events = self._held_events + events, []
        return events

    def _stats(self) -> Stats:
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

    # -- language model ------------------------------------------------------------------------

    def _lm_updates(self, updates: list, final: bool = False) -> list[Event]:
        """LM-committed words replace the greedy words of the captions they fall in.

        A caption is settled once the re-decoder's anchor passed its end (no later decode can touch
        its frames); it gets the committed words whose middle lies before its end and after the
        previous caption's end. Where the text differs, a CaptionRevision carries text and words.
        """
        for u in updates:
            self._lm_words += list(u.committed)
        anchor = float("inf") if final else self.lm.anchor_frame  # type: ignore[union-attr]
        events: list[Event] = []
        pending = [c for c in self._captions if not c.lm_done]
        for i, cap in enumerate(pending):
            if cap.end_frame > anchor:
                break
            last = final and i == len(pending) - 1
            mine = [w for w in self._lm_words if last or (w.start_frame + w.end_frame) / 2 < cap.end_frame]
            self._lm_words = [w for w in self._lm_words if w not in mine]
            cap.lm_done = True
            new_text = " ".join(w.text for w in mine)
            if not mine or new_text == " ".join(w.text for w in cap.words):
                continue
            words = tuple(Word(w.text, w.start_frame, w.end_frame, self._speaker(w.start_frame, w.end_frame)) for w in mine)
            speaker = _majority(words) or cap.speaker
            changed = ("text", "words") if speaker == cap.speaker else ("text", "words", "speaker")
            cap.words, cap.speaker = words, speaker
            events.append(CaptionRevision(cap.caption_id, changed, text=new_text, words=words, speaker=speaker))
        return events

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
