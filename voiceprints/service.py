"""Enrollment, 1:1 verification and 1:N identification of speakers against stored voiceprints.

A voiceprint is the net-speech-weighted mean of a person's normalised recording embeddings,
normalised again (averaging several recordings cancels part of each one's channel and content
noise), and a score is a dot product in [-1, 1], higher meaning the same speaker
(`voiceprints.embedding`). `VoiceprintService.enrolled()` gives the engine the voiceprints as plain
values (`engine.enrolled.EnrolledVoices`); the engine never reads the store.

This module imports no torch, transformers or textual: `XVectorEmbedder` (voiceprints.xvector)
imports torch and models/ only when built, so `run_live.py verify` stays within its ~3 s budget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.calibration import Calibration
from engine.enrolled import EnrolledVoices
from engine.speech_detect import SpeechDetector, speech_mask, speech_only
from engine.speech_model import default_detector
from engine.timebase import samples_to_seconds, seconds_to_samples
from voiceprints.embedding import Embedder, check_audio, embed_recording
from voiceprints.errors import (
    FingerprintMismatchError,
    InvalidAudioError,
    MixedVoicesError,
    NameConflictError,
    NotEnoughSpeechError,
    OutliersError,
    SameVoiceError,
    VoiceprintError,
)
from voiceprints.records import NewRecording, PersonInfo, Voiceprint, mean_voiceprint, validate_name
from voiceprints.results import Candidate, EnrollResult, RecordingCheck, Verification
from voiceprints.store import SpeakerStore
from voiceprints.voice_mix import VoiceMix, voice_mix

MIN_ENROLL_SPEECH_S = 5.0
MIN_TRACK_ENROLL_SPEECH_S = 2.0  # naming a live track: lower minimum, result flagged low_quality
MIXED_SAME_VOICE_FACTOR = 0.8  # 2 s spans of one voice score lower than whole clips: threshold x this
MIN_RECORDING_SPEECH_S = 1.0
MIN_TEST_SPEECH_S = 1.0


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
        # called after every change to the enrolled voiceprints (the app re-seeds the engine's new streams)
        self.on_change: list[Callable[[], None]] = []

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def enrolled(self) -> EnrolledVoices:
        """Every voiceprint made with this embedder's model, as the plain values the engine seeds
        its streams with (`engine.Engine(speakers=...)`)."""
        return EnrolledVoices({vp.name: vp.vector for vp in self.voiceprints()}, self.threshold, self.fingerprint)

    def _changed(self) -> None:
        for listener in list(self.on_change):
            listener()

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
        self._changed()
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
        try:
            return self.store.remove(name)
        finally:  # the rows are gone even when the wipe of free pages could not finish
            self._changed()

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
        if updated:
            self._changed()
        return updated



__all__ = ["MIN_ENROLL_SPEECH_S", "MIN_RECORDING_SPEECH_S", "MIN_TEST_SPEECH_S", "MIN_TRACK_ENROLL_SPEECH_S",
           "MIXED_SAME_VOICE_FACTOR", "VoiceprintService"]
