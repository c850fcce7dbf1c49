"""Enrollment, 1:1 verification and 1:N identification of speakers against stored voiceprints.

Scoring is the cosine similarity between L2-normalised embeddings. The x-vector head is trained
with an additive-margin softmax, which compares the *direction* of the embedding with each
speaker's class weight; the norm carries level and duration, not identity. So each recording's
embedding is normalised, a voiceprint is the net-speech-weighted mean of a person's normalised
recording embeddings, normalised again (averaging several recordings cancels part of each one's
channel and content noise), and a score is a dot product in [-1, 1], higher meaning the same
speaker. Embeddings are made from speech frames only (pauses cut out by the speech detector),
since the pooled statistics of silence say nothing about the voice.

This module imports no torch, transformers or textual: `XVectorEmbedder` imports torch and models/
only when built, so `run_live.py verify` stays within its ~3 s budget.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engine.calibration import Calibration, load_calibration
from engine.speaker_store import (
    FingerprintMismatchError,
    NewRecording,
    PersonInfo,
    SpeakerStore,
    UnknownSpeakerError,
    Voiceprint,
    VoiceprintError,
    mean_voiceprint,
    validate_name,
)
from engine.speech_detect import SpeechDetector, speech_mask, speech_only
from engine.speech_model import default_detector
from engine.timebase import SAMPLE_RATE, samples_to_seconds, seconds_to_samples

__all__ = [
    "Candidate", "EnrollResult", "Embedder", "FingerprintMismatchError", "InvalidAudioError",
    "MixedVoicesError", "NameConflictError", "NotEnoughSpeechError", "OutliersError", "RecordingCheck",
    "SameVoiceError", "VoiceMix", "voice_mix", "UnknownSpeakerError", "Verification", "VoiceprintError",
    "VoiceprintService", "XVectorEmbedder", "checkpoint_fingerprint", "embed_recording",
]

MIN_ENROLL_SPEECH_S = 5.0
MIN_TRACK_ENROLL_SPEECH_S = 2.0  # naming a live track: lower minimum, result flagged low_quality
MIXED_SAME_VOICE_FACTOR = 0.8  # 2 s spans of one voice score lower than whole clips: threshold x this
MIN_RECORDING_SPEECH_S = 1.0
MIN_TEST_SPEECH_S = 1.0


@runtime_checkable
class Embedder(Protocol):
    """A speaker-embedding model: one vector per recording, tagged with the model's identity.

    `fingerprint` names the embedding space (same weights and preprocessing, same fingerprint);
    `threshold` is the score at or above which two recordings are judged the same speaker. An
    embedder may also carry `calibration: Calibration` (where the threshold came from) and
    `description: str` (shown in errors and `speakers list`).
    """

    fingerprint: str
    threshold: float

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """(dim,) embedding of `samples`: 1-D float32, 16 kHz, at least about 0.5 s long."""
        ...


class InvalidAudioError(VoiceprintError, ValueError):
    """Audio that cannot be scored: not 1-D, empty, or holding NaN or infinite samples."""


class NotEnoughSpeechError(VoiceprintError, ValueError):
    """Too little net speech to enroll or to score; says how much was found."""

    def __init__(self, message: str, found_samples: int, required_samples: int) -> None:
        super().__init__(message)
        self.found_samples = found_samples
        self.required_samples = required_samples

    @property
    def found_s(self) -> float:
        return samples_to_seconds(self.found_samples)


class MixedVoicesError(VoiceprintError, ValueError):
    """The audio seems to hold several voices: enrolling or scoring it would describe a mixture."""


class SameVoiceError(VoiceprintError, ValueError):
    """A new name's voice matches someone already enrolled (the same person under two names?)."""


class NameConflictError(VoiceprintError, ValueError):
    """A name that differs from an enrolled one only in letter case (names compare case-insensitively)."""


class OutliersError(VoiceprintError, ValueError):
    """Every new recording disagrees with the others: they seem to be different people."""


@dataclass(frozen=True, slots=True)
class RecordingCheck:
    """Consistency of one new enrollment recording with all the person's other recordings.

    `score` is the cosine between this recording's embedding and the voiceprint of all the
    others (None when there is no other recording); `outlier` when it is below the threshold,
    i.e. verification would say this recording is not the same speaker.
    """

    index: int
    net_speech_samples: int
    score: float | None
    outlier: bool

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "net_speech_s": samples_to_seconds(self.net_speech_samples),
                "score": self.score, "outlier": self.outlier}


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What one enrollment did: the person's voiceprint totals and a check per new recording."""

    name: str
    fingerprint: str
    created: bool
    replaced: bool
    n_recordings: int  # in this enrollment
    net_speech_samples: int  # in this enrollment
    total_recordings: int  # in the voiceprint now
    total_net_speech_samples: int
    threshold: float
    checks: tuple[RecordingCheck, ...]
    left_out: tuple[int, ...] = ()  # indices of outlier recordings not stored (no --keep-outliers)
    low_quality: bool = False  # enrolled under the documented lower minimum (a TUI track)

    @property
    def outliers(self) -> tuple[RecordingCheck, ...]:
        return tuple(c for c in self.checks if c.outlier)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "created": self.created,
                "replaced": self.replaced, "n_recordings": self.n_recordings,
                "net_speech_s": samples_to_seconds(self.net_speech_samples),
                "total_recordings": self.total_recordings,
                "total_net_speech_s": samples_to_seconds(self.total_net_speech_samples),
                "threshold": self.threshold, "checks": [c.to_dict() for c in self.checks],
                "outliers": [c.index for c in self.outliers], "left_out": list(self.left_out),
                "low_quality": self.low_quality}


@dataclass(frozen=True, slots=True)
class Verification:
    """A 1:1 decision: `score` (cosine, higher = same speaker) against `threshold`."""

    name: str
    score: float
    threshold: float
    accepted: bool
    calibrated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "threshold": self.threshold,
                "accepted": self.accepted, "calibrated": self.calibrated}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ranked 1:N candidate."""

    name: str
    score: float
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "accepted": self.accepted}


def check_audio(samples: Any, what: str = "audio") -> np.ndarray:
    """`samples` as contiguous 1-D float32, or InvalidAudioError saying what is wrong."""
    try:
        x = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidAudioError(f"{what}: not an array of samples ({exc})") from exc
    if x.ndim != 1:
        raise InvalidAudioError(f"{what}: expected mono 1-D samples at {SAMPLE_RATE} Hz, got shape {x.shape}")
    if x.size == 0:
        raise InvalidAudioError(f"{what}: no samples")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise InvalidAudioError(f"{what}: {bad} NaN or infinite samples")
    return np.ascontiguousarray(x)


def embed_recording(
    embedder: Embedder, samples: np.ndarray, detector: SpeechDetector | None = None, trim: bool = True,
    min_speech_samples: int = 1,
) -> tuple[np.ndarray | None, int]:
    """(unit embedding of the speech in `samples`, net speech samples); the embedding is None when
    there is less than `min_speech_samples` of speech (the embedder is not called then)."""
    x = check_audio(samples)
    mask = speech_mask(x, detector or getattr(embedder, "speech_detector", None) or default_detector())
    speech = speech_only(x, mask)
    if speech.size == 0 or speech.size < min_speech_samples:
        return None, int(speech.size)
    vector = np.asarray(embedder.embed(speech if trim else x), dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise VoiceprintError(f"the embedder returned an unusable embedding of shape {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise VoiceprintError("the embedder returned a zero embedding")
    return (vector / norm).astype(np.float32), int(speech.size)


@dataclass(frozen=True, slots=True)
class VoiceMix:
    """How many voices a recording seems to hold, from pairwise x-vectors of its short speech spans.

    `voices` lists the speech (samples) of each group of mutually similar spans, largest first;
    `mixed` when at least two groups each hold `MIXED_MIN_SHARE` of the speech. With fewer than
    two spans (under 2 x `MIXED_SPAN_S` of speech) nothing can be told and `mixed` is False.
    """

    n_spans: int
    voices: tuple[int, ...]
    mixed: bool

    def describe(self) -> str:
        """E.g. `2 voices (10.7 s, 8.5 s of speech; 10.7 s more in smaller groups)`."""
        total = sum(self.voices)
        big = [v for v in self.voices if v >= MIXED_MIN_SHARE * total]
        rest = total - sum(big)
        shares = ", ".join(f"{samples_to_seconds(v):.1f} s" for v in big)
        more = f"; {samples_to_seconds(rest):.1f} s more in smaller groups" if rest else ""
        return f"{len(big)} voice{'s' if len(big) != 1 else ''} ({shares} of speech{more})"


MIXED_SPAN_S = 2.0  # speech per span compared (the engine's first x-vector of a run needs as much)
MIXED_MAX_SPANS = 30  # longer recordings get longer spans, so the check costs at most this many embeddings
MIXED_MIN_SHARE = 0.2  # a second voice must hold this share of the speech to count


def voice_mix(embedder: Embedder, speech: np.ndarray, same_voice: float) -> VoiceMix:
    """Group the 2 s spans of `speech` (speech-only samples) by voice: average-linkage clustering
    of their cosine similarities, merging while the groups' mean similarity is >= `same_voice`.

    A stand-in for the engine's speaker tracking (issue 21) until that can run on a recording:
    a single voice gives one group plus at most a few stray spans; a conversation gives one group
    per speaker with enough speech.
    """
    span = seconds_to_samples(MIXED_SPAN_S)
    n = min(len(speech) // span, MIXED_MAX_SPANS)
    if n < 2:
        return VoiceMix(n, (int(len(speech)),), False)
    length = len(speech) // n
    pieces = [np.asarray(speech[k * length:(k + 1) * length], dtype=np.float32) for k in range(n)]
    batch = getattr(embedder, "embed_batch", None)  # equal lengths: one forward pass, no padding
    vectors = np.asarray(batch(np.stack(pieces)) if batch is not None else [embedder.embed(p) for p in pieces],
                         dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = vectors @ vectors.T
    groups = [[i] for i in range(n)]
    while len(groups) > 1:
        best, pair = -2.0, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                mean = float(sim[np.ix_(groups[a], groups[b])].mean())
                if mean > best:
                    best, pair = mean, (a, b)
        if best < same_voice:
            break
        a, b = pair
        groups[a] += groups.pop(b)
    sizes = sorted((sum(len(pieces[i]) for i in g) for g in groups), reverse=True)
    total = sum(sizes)
    big = [s for s in sizes if s >= MIXED_MIN_SHARE * total]
    return VoiceMix(n, tuple(int(s) for s in sizes), len(big) >= 2)


def _calibration_of(embedder: Embedder) -> Calibration:
    cal = getattr(embedder, "calibration", None)
    if isinstance(cal, Calibration):
        return cal
    if isinstance(embedder.threshold, Calibration):
        return embedder.threshold
    return Calibration.given(float(embedder.threshold), note="the embedder's threshold")


class VoiceprintService:
    """Enroll, verify, identify, list and remove speakers with one embedder over one store.

    Rules: an enrollment needs `min_enroll_speech_s` (5 s) of net speech over all its recordings
    and `min_recording_speech_s` in each; verify and identify need `min_test_speech_s`. Scores
    are only ever computed against voiceprints made with the embedder's fingerprint.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: SpeakerStore,
        *,
        detector: SpeechDetector | None = None,
        min_enroll_speech_s: float = MIN_ENROLL_SPEECH_S,
        min_recording_speech_s: float = MIN_RECORDING_SPEECH_S,
        min_test_speech_s: float = MIN_TEST_SPEECH_S,
        keep_audio: bool = True,
    ) -> None:
        if not isinstance(getattr(embedder, "fingerprint", None), str) or not embedder.fingerprint:
            raise ValueError("the embedder needs a non-empty string fingerprint")
        for label, value in (("min_enroll_speech_s", min_enroll_speech_s),
                             ("min_recording_speech_s", min_recording_speech_s),
                             ("min_test_speech_s", min_test_speech_s)):
            if not value >= 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        self.embedder = embedder
        self.store = store
        # a scripted embedder may bring the detector its test audio suits (tones are not speech to Silero)
        self.detector = detector if detector is not None else getattr(embedder, "speech_detector", None)
        self.calibration = _calibration_of(embedder)
        self.min_enroll_samples = seconds_to_samples(min_enroll_speech_s)
        self.min_recording_samples = seconds_to_samples(min_recording_speech_s)
        self.min_test_samples = seconds_to_samples(min_test_speech_s)
        self.keep_audio = keep_audio

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    # -- embedding ------------------------------------------------------------------------

    def embed(self, samples: np.ndarray, what: str = "audio") -> tuple[np.ndarray, int]:
        """(unit embedding, net speech samples) of a test recording of one voice.

        NotEnoughSpeechError if it holds too little speech (the embedder is not called then);
        MixedVoicesError if it seems to hold several voices, whose mixture no score describes.
        """
        x = check_audio(samples, what)
        speech = speech_only(x, speech_mask(x, self.detector or default_detector()))
        if speech.size == 0 or speech.size < self.min_test_samples:
            raise NotEnoughSpeechError(
                f"{what}: {samples_to_seconds(speech.size):.2f} s of speech found, at least "
                f"{samples_to_seconds(self.min_test_samples):.2f} s needed to score it",
                int(speech.size), self.min_test_samples)
        mix = self.voice_mix(speech)
        if mix.mixed:
            raise MixedVoicesError(
                f"{what} seems to hold several voices ({mix.describe()}); a score would describe their "
                "mixture: give a recording of one speaker")
        vector, n = embed_recording(self.embedder, x, self.detector)
        assert vector is not None
        return vector, n

    # -- enrollment -----------------------------------------------------------------------

    def _check_name(self, name: str) -> tuple[str, bool]:
        """(the name, whether it is new); NameConflictError when it differs from one only in case."""
        clean = validate_name(name)
        for stored in self.store.names():
            if stored.casefold() == clean.casefold():
                if stored != clean:
                    raise NameConflictError(
                        f"{clean!r} is already enrolled as {stored!r} (names compare case-insensitively): "
                        f"use {stored!r} to add to that voiceprint, or choose another name")
                return clean, False
        return clean, True

    def voice_mix(self, speech: np.ndarray) -> VoiceMix:
        """Several voices in `speech` (speech-only samples)? See `voice_mix`."""
        return voice_mix(self.embedder, speech, MIXED_SAME_VOICE_FACTOR * self.threshold)

    def enroll(self, name: str, recordings: list[np.ndarray], replace: bool = False, *,
               allow_mixed: bool = False, keep_outliers: bool = False, same_voice_ok: bool = False,
               min_enroll_speech_s: float | None = None, labels: list[str] | None = None) -> EnrollResult:
        """Enroll `name` from `recordings` (16 kHz float32 each), adding to their voiceprint unless `replace`.

        Refuses, naming the problem: a name that differs from an enrolled one only in case
        (NameConflictError); less net speech than the minimum, counting what is already stored
        for the person (NotEnoughSpeechError); a recording that seems to hold several voices
        unless `allow_mixed` (MixedVoicesError); a new name whose voice matches an enrolled
        person unless `same_voice_ok` (SameVoiceError). Recordings that disagree with the
        others are left out unless `keep_outliers` (`EnrollResult.left_out`); if that leaves
        nothing, OutliersError. `min_enroll_speech_s` lowers the minimum (naming a live track);
        an enrollment under the usual minimum is flagged `low_quality`. `labels` name the
        recordings in errors (file names); "recording N" by default.
        """
        clean, created = self._check_name(name)
        if isinstance(recordings, np.ndarray) and recordings.ndim == 1:
            recordings = [recordings]
        label = [labels[i] if labels and i < len(labels) else f"recording {i + 1}" for i in range(len(recordings))]
        clips = [check_audio(r, label[i]) for i, r in enumerate(recordings)]
        if not clips:
            raise InvalidAudioError("enrollment needs at least one recording")
        speech_audio = [speech_only(c, speech_mask(c, self.detector or default_detector())) for c in clips]
        speech = [int(a.size) for a in speech_audio]
        stored = 0  # adding to a voiceprint: its stored speech counts towards the minimum
        if not created and not replace and self.fingerprint in self._fingerprints_of(clean):
            stored = self.store.voiceprint(clean, self.fingerprint).net_speech_samples
        minimum = self.min_enroll_samples if min_enroll_speech_s is None else seconds_to_samples(min_enroll_speech_s)
        total = sum(speech)
        if total + stored < minimum:
            detail = ", ".join(f"{label[i]}: {samples_to_seconds(s):.2f} s" for i, s in enumerate(speech))
            have = f"{samples_to_seconds(total):.2f} s" + (f" here and {samples_to_seconds(stored):.2f} s stored"
                                                          if stored else "")
            raise NotEnoughSpeechError(
                f"enrollment needs at least {samples_to_seconds(minimum):.1f} s of net speech "
                f"over all recordings; found {have}" + (f" ({detail})" if len(clips) > 1 else ""),
                total + stored, minimum)
        for i, s in enumerate(speech):
            if s < self.min_recording_samples:
                raise NotEnoughSpeechError(
                    f"{label[i]} holds {samples_to_seconds(s):.2f} s of speech, less than the "
                    f"{samples_to_seconds(self.min_recording_samples):.1f} s each recording needs; "
                    "leave it out or record it again", s, self.min_recording_samples)
        if not allow_mixed:
            for i, a in enumerate(speech_audio):
                mix = self.voice_mix(a)
                if mix.mixed:
                    raise MixedVoicesError(
                        f"{label[i]} seems to hold several voices ({mix.describe()}); enroll "
                        "recordings of one person (--allow-mixed enrolls it anyway)")
        vectors = []
        for c in clips:
            vector, _ = embed_recording(self.embedder, c, self.detector)
            vectors.append(vector)
        return self._store_enrollment(clean, created, vectors, speech, clips, replace, keep_outliers,
                                      same_voice_ok, low_quality=total + stored < self.min_enroll_samples)

    def _fingerprints_of(self, name: str) -> tuple[str, ...]:
        for person in self.store.people():
            if person.name.casefold() == name.casefold():
                return person.fingerprints
        return ()

    def enroll_embeddings(self, name: str, embeddings: list[tuple[np.ndarray, int]], replace: bool = False) -> EnrollResult:
        """Enroll from embeddings already made by this embedder: (vector, net speech samples) pairs.

        For the engine, which has x-vectors of a speaker track but not its audio. Same rules as
        `enroll` for names and the minimum; no audio is kept, so these recordings cannot be
        re-embedded for another model, and there is no audio to check for mixed voices.
        """
        clean, created = self._check_name(name)
        if not embeddings:
            raise InvalidAudioError("enrollment needs at least one embedding")
        speech = [int(s) for _, s in embeddings]
        total = sum(speech)
        if total < self.min_enroll_samples:
            raise NotEnoughSpeechError(
                f"enrollment needs at least {samples_to_seconds(self.min_enroll_samples):.1f} s of net speech; "
                f"found {samples_to_seconds(total):.2f} s", total, self.min_enroll_samples)
        vectors = []
        for i, (v, _) in enumerate(embeddings):
            v = np.asarray(v, dtype=np.float64)
            norm = float(np.linalg.norm(v)) if v.ndim == 1 and np.all(np.isfinite(v)) else 0.0
            if norm < 1e-12:
                raise VoiceprintError(f"embedding {i + 1} is not a finite non-zero vector")
            vectors.append((v / norm).astype(np.float32))
        return self._store_enrollment(clean, created, vectors, speech, [None] * len(vectors), replace,
                                      keep_outliers=True, same_voice_ok=True)

    def _store_enrollment(self, name: str, created: bool, vectors: list[np.ndarray], speech: list[int],
                          clips: list[np.ndarray | None], replace: bool, keep_outliers: bool,
                          same_voice_ok: bool, low_quality: bool = False) -> EnrollResult:
        dim = vectors[0].size
        known = self.store.model_dim(self.fingerprint)
        if known is not None and known != dim:
            raise VoiceprintError(f"model {self.fingerprint} gave {known}-dimensional embeddings before, now {dim}")
        if not created and not replace:
            old_vectors, old_speech = self.store.embeddings(name, self.fingerprint)
        else:
            old_vectors, old_speech = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        checks = self._consistency(vectors, speech, old_vectors, old_speech)
        keep = list(range(len(vectors)))
        if not keep_outliers:
            keep = self._without_outliers(vectors, speech, old_vectors, old_speech)
            if not keep:
                scores = ", ".join(f"recording {c.index + 1}: {c.score:.3f}" for c in checks if c.score is not None)
                raise OutliersError(
                    f"the recordings do not match each other ({scores}, threshold {self.threshold:.3f}): "
                    "they seem to be different people; enroll one person's recordings "
                    "(--keep-outliers stores them anyway)")
        kept_vectors = [vectors[i] for i in keep]
        if created and not same_voice_ok:
            self._refuse_same_voice(name, kept_vectors, [speech[i] for i in keep])
        new = [NewRecording(vectors[i], int(clips[i].size) if clips[i] is not None else speech[i], speech[i],
                            clips[i] if self.keep_audio else None) for i in keep]
        vp = self.store.add_enrollment(name, self.fingerprint, new, replace=replace,
                                       model_description=str(getattr(self.embedder, "description", "")))
        left_out = tuple(i for i in range(len(vectors)) if i not in keep)
        return EnrollResult(vp.name, self.fingerprint, created, replace and not created, len(new),
                            sum(speech[i] for i in keep), vp.n_recordings, vp.net_speech_samples,
                            self.threshold, checks, left_out, low_quality)

    def _refuse_same_voice(self, name: str, vectors: list[np.ndarray], speech: list[int]) -> None:
        """SameVoiceError when the new voiceprint scores at or above the threshold against someone enrolled."""
        new = mean_voiceprint(np.stack(vectors), np.maximum(np.array(speech, dtype=np.float64), 1))
        for vp in self.store.voiceprints(self.fingerprint):
            score = float(np.dot(new.astype(np.float64), vp.vector.astype(np.float64)))
            if score >= self.threshold:
                raise SameVoiceError(
                    f"the voice of {name!r} matches {vp.name!r}, who is already enrolled (score {score:.3f} >= "
                    f"threshold {self.threshold:.3f}): the same person under two names would take each "
                    f"other's turns; add to {vp.name!r} instead (--same-voice-ok enrolls {name!r} anyway)")

    def _without_outliers(self, vectors: list[np.ndarray], speech: list[int],
                          old_vectors: np.ndarray, old_speech: np.ndarray) -> list[int]:
        """Indices of the new recordings kept once outliers are dropped, worst first, one at a time."""
        keep = list(range(len(vectors)))
        while keep:
            checks = self._consistency([vectors[i] for i in keep], [speech[i] for i in keep], old_vectors, old_speech)
            bad = [(c.score, k) for c, k in zip(checks, keep) if c.outlier and c.score is not None]
            if not bad:
                return keep
            if len(keep) + len(old_vectors) <= 2 and len(old_vectors) == 0:
                return []  # two recordings that disagree: no way to tell which one is the person
            keep.remove(min(bad)[1])
        return keep

    def _consistency(self, vectors: list[np.ndarray], speech: list[int],
                     old_vectors: np.ndarray, old_speech: np.ndarray) -> tuple[RecordingCheck, ...]:
        """Leave-one-out score of each new recording against all the person's other recordings."""
        all_v = np.concatenate([old_vectors.reshape(-1, vectors[0].size), np.stack(vectors)])
        all_w = np.concatenate([old_speech, np.array(speech)]).astype(np.float64)
        offset = len(old_vectors)
        checks = []
        for i, (v, s) in enumerate(zip(vectors, speech)):
            others = np.delete(np.arange(len(all_v)), offset + i)
            if others.size == 0:
                checks.append(RecordingCheck(i, s, None, False))
                continue
            ref = mean_voiceprint(all_v[others], np.maximum(all_w[others], 1))
            score = float(np.dot(v.astype(np.float64), ref.astype(np.float64)))
            checks.append(RecordingCheck(i, s, score, score < self.threshold))
        return tuple(checks)

    # -- scoring --------------------------------------------------------------------------

    def verify(self, name: str, audio: np.ndarray, what: str = "audio") -> Verification:
        """1:1: is `audio` spoken by `name`? UnknownSpeakerError, FingerprintMismatchError on misuse;
        `what` names the audio in errors (a file name)."""
        vp = self.store.voiceprint(name, self.fingerprint)
        vector, _ = self.embed(audio, what)
        score = float(np.dot(vector.astype(np.float64), vp.vector.astype(np.float64)))
        return Verification(vp.name, score, self.threshold, score >= self.threshold, self.calibration.calibrated)

    def voiceprints(self) -> list[Voiceprint]:
        """Every voiceprint made with this embedder's model (what the engine seeds its clusters with)."""
        return self.store.voiceprints(self.fingerprint)

    def identify(self, audio: np.ndarray, top_k: int | None = None, what: str = "audio") -> list[Candidate]:
        """1:N: every comparable enrolled person, best score first (`top_k` limits the list).

        Empty when nobody is enrolled. People enrolled only with other models are left out;
        if that is everyone, FingerprintMismatchError.
        """
        prints = self.voiceprints()
        if not prints:
            others = sorted({fp for p in self.store.people() for fp in p.fingerprints})
            if others:
                raise FingerprintMismatchError(None, others, self.fingerprint)
            return []
        vector, _ = self.embed(audio, what)
        matrix = np.stack([p.vector for p in prints]).astype(np.float64)
        scores = matrix @ vector.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else None]
        return [Candidate(prints[k].name, float(scores[k]), bool(scores[k] >= self.threshold)) for k in order]

    # -- management -----------------------------------------------------------------------

    def list(self) -> list[PersonInfo]:
        """Everyone enrolled; `fingerprints` says which models each has a voiceprint for."""
        return self.store.people()

    def remove(self, name: str) -> str:
        """Forget `name` and all their recordings; returns the name as stored."""
        return self.store.remove(name)

    def reembed(self) -> list[str]:
        """Make voiceprints for this model from the kept audio of people who lack one; returns their names."""
        updated: list[str] = []
        for person in self.store.people():
            if self.fingerprint in person.fingerprints:
                continue
            vectors = {}
            for rec in self.store.recordings(person.name):
                audio = self.store.recording_audio(rec.recording_id) if rec.has_audio else None
                if audio is None:
                    continue
                vector, _ = embed_recording(self.embedder, audio, self.detector)
                if vector is not None:
                    vectors[rec.recording_id] = vector
            if vectors:
                self.store.add_embeddings(self.fingerprint, vectors,
                                          model_description=str(getattr(self.embedder, "description", "")))
                updated.append(person.name)
        return updated


# -- the UniSpeech-SAT x-vector adapter ------------------------------------------------------

# Keys of config.json that do not change what the network computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "architectures", "id2label", "label2id",
                         "torch_dtype", "dtype", "_commit_hash"}
_PREPROCESSOR_KEYS = ("do_normalize", "return_attention_mask", "sampling_rate", "feature_size", "padding_value")


def _hash_safetensors(path: Path, h: "hashlib._Hash") -> None:
    """Feed `h` every tensor of a safetensors file in name order: name, dtype, shape, raw bytes."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise ValueError(f"{path}: damaged safetensors header")
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for name in sorted(k for k in header if k != "__metadata__"):
                info = header[name]
                start, end = info["data_offsets"]
                h.update(f"{name}|{info['dtype']}|{info['shape']}|".encode())
                h.update(memoryview(mm)[base + start : base + end])


def checkpoint_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """`sha256:` + 16 hex digits over the weights, the architecture config and the preprocessing.

    Safetensors weights are hashed tensor by tensor in name order (the same weights saved in a
    different order give the same fingerprint); `pytorch_model.bin` is hashed as bytes. From
    config.json every key except bookkeeping (`_name_or_path`, labels, versions) counts, and
    from preprocessor_config.json the keys that change the input (normalisation, mask, rate).
    """
    root = Path(model_dir)
    h = hashlib.sha256()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{root}: no config.json, not a checkpoint folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    h.update(json.dumps({k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS},
                        sort_keys=True).encode())
    pre_path = root / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text(encoding="utf-8")) if pre_path.is_file() else {}
    h.update(json.dumps({k: pre.get(k) for k in _PREPROCESSOR_KEYS}, sort_keys=True).encode())
    shards = sorted(root.glob("*.safetensors"))
    if shards:
        for shard in shards:
            _hash_safetensors(shard, h)
    elif (root / "pytorch_model.bin").is_file():
        with open(root / "pytorch_model.bin", "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    else:
        raise ValueError(f"{root}: no model.safetensors or pytorch_model.bin")
    return "sha256:" + h.hexdigest()[:16]


class XVectorEmbedder:
    """`Embedder` over a UniSpeech-SAT x-vector checkpoint folder (models/ `UniSpeechSatForXVector`).

    `device`: "cpu" (also for None), "cuda[:N]" or "auto"; `dtype`: "fp32" (also for None), "bf16",
    or "fp16" (CUDA only).
    The threshold comes from `verification.json` beside the checkpoint when it was measured for
    these weights (see engine.calibration), else the documented fallback with `calibration.calibrated`
    False. Recordings longer than `max_chunk_s` are embedded in equal chunks whose unit embeddings
    are averaged by length, which bounds memory and attention cost.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str | None = "cpu", dtype: str | None = "fp32",
                 max_chunk_s: float = 20.0) -> None:
        import torch

        from models import FeatureExtractor, UniSpeechSatForXVector
        from models.loading import resolve_pretrained

        local = resolve_pretrained(model_dir)  # a local folder, or the hub snapshot of owner/name
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype or "fp32")
        if torch_dtype is None:
            raise ValueError(f"dtype must be 'fp32', 'bf16' or 'fp16', got {dtype!r}")
        device = device or "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if torch_dtype is torch.float16 and not str(device).startswith("cuda"):
            raise ValueError("fp16 runs only on a CUDA device; on the CPU use fp32 or bf16")
        self._torch = torch
        self.device = torch.device(device)
        self.model = UniSpeechSatForXVector.from_pretrained(str(local), device=self.device, dtype=torch_dtype)
        self.features = FeatureExtractor.from_pretrained(str(local))
        self.fingerprint = checkpoint_fingerprint(local)
        self.calibration = load_calibration(local, self.fingerprint)
        self.threshold = self.calibration.threshold
        self.description = str(model_dir)
        self.max_chunk_samples = seconds_to_samples(max_chunk_s)
        self.min_samples = seconds_to_samples(0.5)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, xvector_output_dim) float32 embeddings of a (B, N) batch of equal-length clips, in
        one forward pass (no padding, so group-norm front ends see what `embed` would show them)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < self.min_samples:
            raise InvalidAudioError(f"need a (clips, samples) batch of at least {self.min_samples} samples each, "
                                    f"got shape {x.shape}")
        torch = self._torch
        with torch.inference_mode():
            input_values, attention_mask = self.features(list(x), sampling_rate=SAMPLE_RATE)
            input_values = input_values.to(self.device, dtype=next(self.model.parameters()).dtype)
            if attention_mask is not None:
                attention_mask = attention_mask.to(self.device)
            out = self.model(input_values, attention_mask=attention_mask).embeddings
        return out.float().cpu().numpy()

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """(xvector_output_dim,) float32 embedding of 16 kHz mono `samples` (at least 0.5 s)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1 or x.size < self.min_samples:
            raise InvalidAudioError(f"need at least {self.min_samples} mono samples to embed, got shape {x.shape}")
        n_chunks = -(-x.size // self.max_chunk_samples)
        chunks = np.array_split(x, n_chunks)
        torch = self._torch
        with torch.inference_mode():
            vectors, weights = [], []
            for chunk in chunks:  # one at a time: group-norm front ends must not see padding
                input_values, attention_mask = self.features([chunk], sampling_rate=SAMPLE_RATE)
                input_values = input_values.to(self.device, dtype=next(self.model.parameters()).dtype)
                if attention_mask is not None:
                    attention_mask = attention_mask.to(self.device)
                emb = self.model(input_values, attention_mask=attention_mask).embeddings[0]
                vectors.append(emb.float().cpu().numpy().astype(np.float64))
                weights.append(chunk.size)
            if len(vectors) == 1:
                out = vectors[0]
            else:
                out = mean_voiceprint(np.stack(vectors), np.array(weights, dtype=np.float64))
        return out.astype(np.float32)
