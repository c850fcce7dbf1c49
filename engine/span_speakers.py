"""Who speaks when from speech detection and x-vectors of short overlapping spans (online).

The chain the online diarization systems that work on real audio use (diart: segmentation, then
embeddings, then incremental clustering), shaped for this engine:
1. speech frames come from the voice-activity detector (`add_speech`, per committed range);
2. every `span_hop_frames` a span of the last `span_frames` frames whose speech share reaches
   `span_min_speech` becomes an x-vector request (`take_requests`); the model side computes
   the embeddings in batches and hands them back (`add_embedding`);
3. each embedding is named by incremental cosine clustering (`SpeakerClusters`, seeded by enrolled
   voiceprints): a known voice joins its cluster, an unknown one opens `unknown-N` only when two
   spans in a row agree on it (`new_speaker_spans`) and hold enough speech
   (`new_speaker_min_speech`), so a cough or a noisy span makes no new person; a change of
   cluster between spans is the speaker-change decision;
4. a speech frame takes the label of the nearest-centred named span, and between two spans with
   different labels the activity head (`add_activity`) places the change; runs of one label are turns.
Speakers heard at the same time (a frame where the activity head says two voices overlap and the
neighbouring spans carry two labels) get a cannot-link: their clusters are never merged.

The tracker holds no audio beyond the spans it waits for and no model: it returns requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.activity_alignment import ActivityAggregator
from engine.buffers import RollingArray
from engine.compute_requests import SpanRequest
from engine.config import SpeakerConfig, SpeechConfig
from engine.events import Event, SpeakerActivity, SpeakerMatch, SpeakerTurn
from engine.speaker_clusters import SpeakerClusters, unit_vector
from engine.speech_detect import padded_speech
from engine.timebase import FRAME_SAMPLES


@dataclass(slots=True)
class _Turn:
    run_id: int
    label: str | None
    start: int
    last: int  # last speech frame + 1
    overlap: bool = False


class SpanSpeakerTracker:
    """Speech frames + span x-vectors -> labels per frame, turns and matches, for one stream."""

    def __init__(self, cfg: SpeakerConfig, speech: SpeechConfig, clusters: SpeakerClusters,
                 horizon_frames: int) -> None:
        self.cfg = cfg
        self.speech_cfg = speech
        self.clusters = clusters
        self.horizon_frames = horizon_frames
        self.speech = RollingArray(4 * horizon_frames, (), np.float32)  # speech prob per frame
        self.aggregator: ActivityAggregator | None = None  # the activity head's channels, aligned across windows
        self.activity: RollingArray | None = None  # its settled frames
        self._boundaries: dict[tuple[int, int], int] = {}
        self.frame_runs = RollingArray(2 * horizon_frames, (), np.int64)  # run id per decided frame
        self.runs: dict[int, _Turn] = {}
        self._next_run = 1
        self._open: _Turn | None = None
        self._next_span = 0  # index of the next span to consider
        self._requests: list[SpanRequest] = []  # handed out, result not back yet
        self._fresh: list[SpanRequest] = []  # cut, not yet handed out
        self._candidate: tuple[SpanRequest, np.ndarray, np.ndarray | None] | None = None  # a new voice?
        self._labels: dict[int, str | None] = {}  # span index -> label (None: too little speech)
        self._resolved = 0  # spans [0, _resolved) all have a result
        self.settled = 0  # frames before this are decided (labels and turns)
        self.reembed = True  # False while degraded: every other span only
        self._last_label: str | None = None

    # -- geometry ------------------------------------------------------------------------------

    def _span_end(self, k: int) -> int:
        return self.cfg.span_frames + k * self.cfg.span_hop_frames

    def _centre(self, k: int) -> float:
        return self._span_end(k) - self.cfg.span_frames / 2

    @property
    def keep_from_frame(self) -> int:
        """Audio before this frame is no longer needed by any pending span."""
        pending = [r.start_frame for r in self._requests]
        start = self._span_end(self._resolved) - self.cfg.span_frames
        return max(0, min([start, self.settled] + pending))

    # -- input ---------------------------------------------------------------------------------

    def add_activity(self, start_frame: int, probs: np.ndarray, settle_to: int) -> None:
        """One window's (T, S) activity-head probabilities (S >= 2), aligned across windows.

        Used where it helps: where two named spans disagree, the head places the change of voice
        between them; two channels on at once mark overlap (and a cannot-link).
        """
        if probs.ndim != 2 or probs.shape[1] < 2:
            return
        if self.aggregator is None:
            self.aggregator = ActivityAggregator(probs.shape[1], capacity_frames=4 * self.horizon_frames)
            self.activity = RollingArray(4 * self.horizon_frames, (probs.shape[1],), np.float32)
        first, settled, _ = self.aggregator.add(start_frame, probs, settle_to)
        assert self.activity is not None
        self.activity.extend_to(first + len(settled))
        self.activity.view(first, first + len(settled))[:] = settled

    def _activity_view(self, start: int, end: int) -> np.ndarray | None:
        """(end - start, S) activity, settled where it is, the running average beyond; None if unknown."""
        if self.aggregator is None or self.activity is None or start < self.activity.start:
            return None
        mid = min(end, self.activity.end)
        parts = [self.activity.view(start, mid)] if mid > start else []
        if end > mid:
            rest = self.aggregator.unsettled(max(start, mid), end)
            if len(rest) < end - max(start, mid):
                return None
            parts.append(rest.astype(np.float32))
        return np.concatenate(parts) if parts else None

    def add_speech(self, first_frame: int, probs: np.ndarray) -> list[Event]:
        """Speech probabilities for frames [first_frame, first_frame + len(probs)), in order."""
        if first_frame != self.speech.end:
            if first_frame < self.speech.end:
                probs = probs[self.speech.end - first_frame :]
                first_frame = self.speech.end
            else:  # frames lost before (dropped windows): silence
                self.speech.extend_to(first_frame, fill=0.0)
        n = len(probs)
        self.speech.extend_to(first_frame + n, fill=0.0)
        self.speech.view(first_frame, first_frame + n)[:] = probs
        return self._cut_spans()

    def _is_speech(self, start: int, end: int) -> np.ndarray:
        """Speech mask of frames [start, end), each speech frame widened by `SpeechConfig.pad_frames`."""
        pad = self.speech_cfg.pad_frames
        lo, hi = max(self.speech.start, start - pad), min(self.speech.end, end + pad)
        out = np.zeros(max(0, end - start), dtype=bool)
        if hi <= lo:
            return out
        mask = padded_speech(self.speech.view(lo, hi), self.speech_cfg.threshold, pad)
        a, b = max(start, lo), min(end, hi)
        out[a - start : b - start] = mask[a - lo : b - lo]
        return out

    def _speech_share(self, start: int, end: int) -> float:
        lo = max(start, self.speech.start)
        if end <= lo:
            return 0.0
        return float(np.mean(self.speech.view(lo, end) >= self.speech_cfg.threshold))

    def _cut_spans(self) -> list[Event]:
        events: list[Event] = []
        while self._span_end(self._next_span) <= self.speech.end:
            k = self._next_span
            self._next_span += 1
            end = self._span_end(k)
            share = self._speech_share(end - self.cfg.span_frames, end)
            if share < self.cfg.span_min_speech or (not self.reembed and k % 2 == 1):
                self._labels[k] = None
                if self._candidate is not None and self._candidate[0].index == k - 1:
                    events += self._release_candidate()
            else:
                req = SpanRequest(k, end - self.cfg.span_frames, end)
                self._requests.append(req)
                self._fresh.append(req)
        events += self._advance()
        return events

    def take_requests(self) -> list[SpanRequest]:
        """The x-vector requests cut since the last call (each is handed out once)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def skip(self, req: SpanRequest) -> list[Event]:
        """A span that will get no x-vector (its request was dropped under load): unnamed."""
        self._requests = [r for r in self._requests if r.index != req.index]
        self._fresh = [r for r in self._fresh if r.index != req.index]
        self._labels[req.index] = None
        events = self._release_candidate() if self._candidate and self._candidate[0].index == req.index - 1 else []
        return events + self._advance()

    def add_embedding(self, req: SpanRequest, vector: np.ndarray, audio: np.ndarray | None = None) -> list[Event]:
        """The x-vector of a span: name it, then decide every frame that can be decided.

        A span that fits no known voice opens a new one only when the next span agrees with it
        (`new_speaker_spans` 2): one odd span (a cough, two voices at once) is no new person.
        """
        events: list[Event] = []
        self._requests = [r for r in self._requests if r.index != req.index]
        may_open = self._speech_share(req.start_frame, req.end_frame) >= self.cfg.new_speaker_min_speech
        fits = self.clusters.fits(vector)
        if self._candidate is not None:
            held, held_vector, held_audio = self._candidate
            self._candidate = None
            if (may_open and not fits and req.index == held.index + 1
                    and float(unit_vector(held_vector) @ unit_vector(vector)) >= self.clusters.new_threshold):
                events += self._name(held, unit_vector(held_vector) + unit_vector(vector), held_audio, may_open=True)
                events += self._name(req, vector, audio, may_open=True)
                return events + self._advance()
            events += self._name(held, held_vector, held_audio, may_open=False)
        if may_open and not fits and self.cfg.new_speaker_spans > 1 and req.index + 1 not in self._labels:
            self._candidate = (req, vector, audio)  # wait for the next span
            return events + self._advance()
        events += self._name(req, vector, audio, may_open)
        return events + self._advance()

    def _release_candidate(self) -> list[Event]:
        """A held span whose next span will not come (no speech, dropped, end): no new voice."""
        if self._candidate is None:
            return []
        held, held_vector, held_audio = self._candidate
        self._candidate = None
        return self._name(held, held_vector, held_audio, may_open=False)

    def _name(self, req: SpanRequest, vector: np.ndarray, audio: np.ndarray | None, may_open: bool) -> list[Event]:
        events: list[Event] = []
        cluster, match, merged = self.clusters.assign(vector, may_open=may_open)
        label = cluster.label if cluster is not None else None
        self._labels[req.index] = label
        if cluster is not None and audio is not None:
            hop = self.cfg.span_hop_frames * FRAME_SAMPLES
            tail = audio[-hop:]
            keep = self._is_speech(req.end_frame - self.cfg.span_hop_frames, req.end_frame)
            self.clusters.add_audio(cluster, tail[np.repeat(keep, FRAME_SAMPLES)[: len(tail)]])
        if match is not None and label is not None and label != self._last_label:
            events.append(match)
        if label is not None:
            self._last_label = label
        self._apply(merged)
        return events

    # -- deciding frames -----------------------------------------------------------------------

    def _advance(self) -> list[Event]:
        while self._resolved in self._labels:
            self._resolved += 1
        # frames nearer to a resolved span's centre than to the first unresolved one are decided
        limit = int(np.floor(self._centre(self._resolved) - self.cfg.span_hop_frames / 2)) if self._resolved else 0
        limit = min(limit, self.speech.end - self.speech_cfg.pad_frames)
        return self._decide(limit)

    def _decide(self, limit: int) -> list[Event]:
        start = self.settled
        if limit <= start:
            return []
        speech = self._is_speech(start, limit)
        labels = [self._label_at(f) if speech[i] else None for i, f in enumerate(range(start, limit))]
        act = self._activity_view(start, limit)
        overlap = np.zeros(limit - start, bool) if act is None else np.sort(act, axis=1)[:, -2] >= self.cfg.onset
        events: list[Event] = []
        self.frame_runs.extend_to(limit, fill=-1)
        for i, f in enumerate(range(start, limit)):
            both = bool(speech[i] and i < len(overlap) and overlap[i]) and self._overlapping_voices(f)
            events += self._step(f, speech[i], labels[i], both)
        self.settled = limit
        events.insert(0, self._activity(start, [(lab or "unknown") if speech[i] else None for i, lab in enumerate(labels)]))
        self._trim()
        return [e for e in events if e is not None]

    def _activity(self, start: int, labels: list[str | None]) -> SpeakerActivity:
        """The decided frames as activity: 1.0 for the label a speech frame was given, else 0.0."""
        names = sorted({lab for lab in labels if lab is not None}) or ["unknown"]
        rows = tuple(tuple(1.0 if lab == s else 0.0 for s in names) for lab in labels)
        return SpeakerActivity(start, tuple(names), rows)

    def _overlapping_voices(self, frame: int) -> bool:
        """At an overlap the activity head saw: the named spans just before and after the frame
        carry two labels, which are then never merged (cannot-link). True if they do."""
        before = after = None
        for k in range(self._resolved - 1, -1, -1):
            if self._centre(k) <= frame and self._labels.get(k) is not None:
                before = self._labels[k]
                break
            if k not in self._labels:
                break
        first = max(0, int((frame - self.cfg.span_frames / 2) // self.cfg.span_hop_frames))
        for k in range(first, self._resolved):
            if self._centre(k) > frame and self._labels.get(k) is not None:
                after = self._labels[k]
                break
        if before is None or after is None or before == after:
            return False
        self.clusters.cannot_link(before, after)
        return True

    def _label_at(self, frame: int) -> str | None:
        """Label of a speech frame from the named spans around it (resolved ones only).

        Between two named spans the nearer centre wins, unless their labels differ and the activity
        head shows where its dominant channel changes between them: then that point divides them.
        """
        left = right = None
        k0 = int((frame + self.cfg.span_frames / 2 - self.cfg.span_frames) // self.cfg.span_hop_frames)
        reach = 2 * self.cfg.span_frames // self.cfg.span_hop_frames + 1
        for k in range(min(self._resolved - 1, k0 + reach), max(-1, k0 - reach - 1), -1):
            if self._labels.get(k) is not None and self._centre(k) <= frame:
                left = k
                break
        for k in range(max(0, k0 - reach), min(self._resolved, k0 + reach + 1)):
            if self._labels.get(k) is not None and self._centre(k) > frame:
                right = k
                break
        near = [k for k in (left, right) if k is not None and abs(self._centre(k) - frame) <= 2 * self.cfg.span_frames]
        if not near:
            return None
        if len(near) == 1 or self._labels[left] == self._labels[right]:  # type: ignore[index]
            return self._labels[min(near, key=lambda k: abs(self._centre(k) - frame))]
        assert left is not None and right is not None
        return self._labels[left] if frame < self._boundary(left, right) else self._labels[right]

    def _boundary(self, left: int, right: int) -> int:
        """First frame of the right span's voice between the centres of spans `left` and `right`."""
        key = (left, right)
        if key not in self._boundaries:
            a, b = int(np.ceil(self._centre(left))), int(np.ceil(self._centre(right)))
            cut = (a + b + 1) // 2  # the nearer centre
            act = self._activity_view(a, b) if b - a >= 4 else None
            if act is not None:
                edge = max(1, min(5, (b - a) // 4))
                ch_a, ch_b = int(np.argmax(act[:edge].mean(0))), int(np.argmax(act[-edge:].mean(0)))
                if ch_a != ch_b:  # the head saw the voices on two channels: cut where it switches
                    d = act[:, ch_a] - act[:, ch_b]
                    score = 2 * np.concatenate(([0.0], np.cumsum(d))) - d.sum()  # left mass of A minus B
                    cut = a + int(np.argmax(score))
            self._boundaries[key] = cut
        return self._boundaries[key]

    def _step(self, f: int, speech: bool, label: str | None, overlap: bool) -> list[Event]:
        events: list[Event] = []
        run = self._open
        if run is not None and (not speech and f - run.last >= self.cfg.min_off_frames or speech and label != run.label):
            events += self._close()
            run = None
        if speech:
            if run is None:
                run = self._open = _Turn(self._next_run, label, f, f + 1)
                self.runs[run.run_id] = run
                self._next_run += 1
            run.last = f + 1
            run.overlap = run.overlap or overlap
            self.frame_runs.view(f, f + 1)[0] = run.run_id
        return events

    def _close(self) -> list[Event]:
        run, self._open = self._open, None
        if run is None:
            return []
        if run.last - run.start < self.cfg.min_on_frames:  # a burst: drop it
            seg = self.frame_runs.view(max(run.start, self.frame_runs.start), run.last)
            seg[seg == run.run_id] = -1
            del self.runs[run.run_id]
            return []
        return [SpeakerTurn(run.run_id, run.label or "unknown", run.start, run.last, run.overlap)]

    def finish(self) -> list[Event]:
        """End of stream: every span resolved (the caller ran them), decide and close all."""
        events = self._release_candidate()
        events += self._advance()
        events += self._decide(self.speech.end)
        events += self._close()
        return events

    # -- labels --------------------------------------------------------------------------------

    def _apply(self, relabels: dict[str, str]) -> None:
        for old, new in relabels.items():
            for run in self.runs.values():
                if run.label == old:
                    run.label = new
            for k, lab in self._labels.items():
                if lab == old:
                    self._labels[k] = new
            if self._last_label == old:
                self._last_label = new

    def rename(self, old: str, new: str, vector: np.ndarray | None = None) -> dict[str, str]:
        """Rename an identity (e.g. `unknown-2` -> a name after enrollment)."""
        relabels = self.clusters.rename(old, new, vector)
        self._apply(relabels)
        return relabels

    def _trim(self) -> None:
        keep_from = self.settled - self.horizon_frames
        self.frame_runs.discard_before(keep_from)
        self.speech.discard_before(min(keep_from, self.keep_from_frame - self.speech_cfg.pad_frames))
        if self.activity is not None:
            self.activity.discard_before(min(keep_from, self.settled - 2 * self.cfg.span_frames))
        old = self._resolved - 4 * self.cfg.span_frames // self.cfg.span_hop_frames
        for key in [k for k in self._boundaries if k[0] < old]:
            del self._boundaries[key]
        for rid in [r for r, run in self.runs.items() if run is not self._open and run.last < keep_from]:
            del self.runs[rid]
        for k in [k for k in self._labels if k < self._resolved - 4 * self.cfg.span_frames // self.cfg.span_hop_frames]:
            del self._labels[k]

    # -- queries -------------------------------------------------------------------------------

    def label_for(self, start: int, end: int) -> str | None:
        """Who spoke frames [start, end): the decided run covering them most, else the current voice."""
        votes: dict[int, int] = {}
        lo, hi = max(start, self.frame_runs.start), min(end, self.frame_runs.end)
        if hi > lo:
            for rid in self.frame_runs.view(lo, hi).tolist():
                if rid >= 0:
                    votes[rid] = votes.get(rid, 0) + 1
        if votes:
            best = min(votes, key=lambda r: (-votes[r], r))
            return self.runs[best].label if best in self.runs else None
        if end > self.settled:
            return self._last_label
        return None

    def is_settled(self, end: int) -> bool:
        return self.settled >= end
