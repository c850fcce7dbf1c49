"""VoiceprintService with a scripted embedder: enroll, verify, identify, 5 s rule, consistency, re-embedding.

The fake "speech" of speaker k is a harmonic tone at 100 + 20 k Hz, spoken in 400 ms bursts with
200 ms pauses, so the energy detector finds 2/3 of it. The fake embedder reads the pitch back with
an FFT and returns speaker k's fixed random vector plus noise seeded by the audio's bytes:
deterministic, same-speaker cosines near 0.9, different-speaker cosines near 0.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from engine.calibration import Calibration
from engine.speech_detect import EnergySpeechDetector
from engine.timebase import SAMPLE_RATE
from voiceprints.errors import (
    FingerprintMismatchError,
    InvalidAudioError,
    MixedVoicesError,
    NameConflictError,
    NotEnoughSpeechError,
    OutliersError,
    SameVoiceError,
    UnknownSpeakerError,
)
from voiceprints.service import VoiceprintService
from voiceprints.store import SpeakerStore

DIM = 32
# The fake "speech" is tones: the energy detector is named, whatever the app's default detector is.
Service = functools.partial(VoiceprintService, detector=EnergySpeechDetector())
REPO = Path(__file__).resolve().parents[1]


def speaker_audio(speaker: int, seconds: float, seed: int = 0, on_ms: int = 400, off_ms: int = 200) -> np.ndarray:
    """Bursts of speaker `speaker`'s tone; speech fraction on / (on + off)."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 100.0 + 20.0 * speaker
    tone = sum(0.3 / h * np.sin(2 * np.pi * f0 * h * t + seed) for h in (1, 2, 3))
    period = (on_ms + off_ms) * SAMPLE_RATE // 1000
    gate = (np.arange(n) % period) < on_ms * SAMPLE_RATE // 1000
    rng = np.random.default_rng(seed + 1000 * speaker)
    return (tone * gate + 1e-4 * rng.standard_normal(n)).astype(np.float32)


def expected_speech_s(seconds: float, on_ms: int = 400, off_ms: int = 200) -> float:
    """Net speech the energy detector should find in speaker_audio: bursts plus 160 ms hangover."""
    period_ms = on_ms + off_ms
    full, rest = divmod(int(seconds * 1000), period_ms)
    per_burst = min(on_ms + 160, period_ms)
    last = 0 if rest == 0 else min(rest, per_burst)
    return (full * per_burst + last) / 1000


class FakeEmbedder:
    """Pitch -> speaker id -> a fixed orthogonal direction, plus noise seeded by the audio bytes."""

    speech_detector = EnergySpeechDetector()  # its test audio is tones: speech only to the energy detector

    def __init__(self, fingerprint: str = "fake:v1", threshold: float = 0.5, noise: float = 0.3,
                 space_seed: int = 0) -> None:
        self.fingerprint = fingerprint
        self.threshold = threshold
        self.noise = noise
        self.space_seed = space_seed
        self.calls: list[int] = []
        self.description = f"fake embedder {fingerprint}"
        # orthogonal speaker directions, so different speakers score near 0 whatever the seed
        q, _ = np.linalg.qr(np.random.default_rng(space_seed).standard_normal((DIM, DIM)))
        self.bases = q.T * np.sqrt(DIM)

    def speaker_of(self, samples: np.ndarray) -> int:
        spectrum = np.abs(np.fft.rfft(samples))
        freqs = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
        f0 = freqs[np.argmax(spectrum * (freqs > 50))]
        return int(round((f0 - 100.0) / 20.0))

    def embed(self, samples: np.ndarray) -> np.ndarray:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.calls.append(samples.size)
        base = self.bases[self.speaker_of(samples) % DIM]
        noise = np.random.default_rng(zlib.crc32(samples.tobytes())).standard_normal(DIM)
        return (base + self.noise * noise).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    with SpeakerStore(tmp_path / "speakers.sqlite3") as s:
        yield s


@pytest.fixture
def service(store):
    return Service(FakeEmbedder(), store)


def test_enroll_then_verify_accepts_same_speaker_and_rejects_another(service):
    result = service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    assert result.created and not result.replaced
    assert result.n_recordings == 1 and result.total_recordings == 1
    assert result.net_speech_samples / SAMPLE_RATE == pytest.approx(expected_speech_s(9.0), abs=0.05)
    service.enroll("Bob", [speaker_audio(2, 9.0, seed=2)])

    same = service.verify("alice", speaker_audio(1, 3.0, seed=7))
    other = service.verify("Alice", speaker_audio(2, 3.0, seed=8))
    assert same.name == "Alice" and isinstance(same.score, float)
    assert same.accepted and same.score > 0.7
    assert not other.accepted and other.score < 0.5
    assert same.threshold == other.threshold == 0.5
    assert same.to_dict()["score"] == same.score


def test_enrollment_refuses_less_than_five_seconds_and_says_how_much(service):
    clip = speaker_audio(2, 6.0, seed=1)  # 10 periods of 0.6 s: 10 * 0.56 = 5.6 s of net speech
    short = speaker_audio(1, 4.2, seed=1)  # 7 periods: 7 * 0.56 = 3.92 s of net speech
    with pytest.raises(NotEnoughSpeechError) as info:
        service.enroll("Alice", [short])
    assert info.value.found_s == pytest.approx(expected_speech_s(4.2), abs=0.05)
    assert f"{info.value.found_s:.2f} s" in str(info.value) and "5.0 s" in str(info.value)
    assert service.list() == []
    # two recordings together pass the rule
    result = service.enroll("Alice", [short, speaker_audio(1, 3.0, seed=3)])
    assert result.n_recordings == 2
    assert result.net_speech_samples >= 5 * SAMPLE_RATE
    assert service.enroll("Bob", [clip]).net_speech_samples >= 5 * SAMPLE_RATE


def test_each_recording_needs_a_second_of_speech(service):
    with pytest.raises(NotEnoughSpeechError, match="recording 2 holds 0.00 s"):
        service.enroll("Alice", [speaker_audio(1, 10.0), np.zeros(SAMPLE_RATE, np.float32)])


def test_adding_to_and_replacing_a_voiceprint(service, store):
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    added = service.enroll("Alice", [speaker_audio(1, 9.0, seed=2), speaker_audio(1, 9.0, seed=3)])
    assert not added.created and added.total_recordings == 3
    assert added.total_net_speech_samples == store.voiceprint("Alice", "fake:v1").net_speech_samples
    replaced = service.enroll("Alice", [speaker_audio(1, 9.0, seed=4)], replace=True)
    assert replaced.replaced and replaced.total_recordings == 1
    assert [p.name for p in service.list()] == ["Alice"]


def test_consistency_check_flags_the_recording_of_someone_else(service):
    result = service.enroll("Alice", [speaker_audio(1, 6.0, seed=1), speaker_audio(3, 6.0, seed=2),
                                      speaker_audio(1, 6.0, seed=3)])
    flags = [c.outlier for c in result.checks]
    assert flags == [False, True, False]
    assert result.outliers[0].index == 1 and result.outliers[0].score < 0.3
    assert all(c.score > 0.5 for c in result.checks if not c.outlier)
    assert result.left_out == (1,) and result.total_recordings == 2  # the outlier is not stored
    # a later enrollment is checked against the stored recordings: refused, or kept when asked
    with pytest.raises(OutliersError, match="do not match"):
        service.enroll("Alice", [speaker_audio(4, 6.0, seed=5)])
    later = service.enroll("Alice", [speaker_audio(4, 6.0, seed=5)], keep_outliers=True)
    assert later.outliers and later.checks[0].score < 0.3 and later.left_out == ()
    assert later.total_recordings == 3


def test_single_first_recording_has_no_consistency_score(service):
    result = service.enroll("Alice", [speaker_audio(1, 9.0)])
    assert result.checks[0].score is None and not result.checks[0].outlier


def test_identify_ranks_enrolled_speakers(service):
    for k, name in enumerate(["Ann", "Ben", "Cat", "Dan"], start=1):
        service.enroll(name, [speaker_audio(k, 8.0, seed=k)])
    candidates = service.identify(speaker_audio(3, 3.0, seed=99))
    assert [c.name for c in candidates][0] == "Cat"
    assert [c.accepted for c in candidates] == [True, False, False, False]
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True)
    assert len(service.identify(speaker_audio(3, 3.0, seed=99), top_k=2)) == 2
    # nobody's voice: nothing accepted
    assert not any(c.accepted for c in service.identify(speaker_audio(9, 3.0, seed=5)))


def test_identify_on_an_empty_store_returns_nothing(service):
    assert service.identify(speaker_audio(1, 2.0)) == []


def test_scores_are_never_compared_across_model_fingerprints(store):
    old = Service(FakeEmbedder("fake:old"), store)
    old.enroll("Alice", [speaker_audio(1, 9.0)])
    new = Service(FakeEmbedder("fake:new", space_seed=1), store)
    with pytest.raises(FingerprintMismatchError) as info:
        new.verify("Alice", speaker_audio(1, 3.0))
    assert "fake:old" in str(info.value) and "fake:new" in str(info.value)
    with pytest.raises(FingerprintMismatchError, match="fake:old.*fake:new"):
        new.identify(speaker_audio(1, 3.0))
    # enrolling with the new model adds a second, separate voiceprint
    new.enroll("Alice", [speaker_audio(1, 9.0, seed=5)])
    assert new.verify("Alice", speaker_audio(1, 3.0, seed=6)).accepted
    assert old.verify("Alice", speaker_audio(1, 3.0, seed=6)).accepted
    assert store.people()[0].fingerprints == ("fake:new", "fake:old")


def test_reembed_makes_voiceprints_for_a_new_model_from_kept_audio(store):
    Service(FakeEmbedder("fake:old"), store).enroll("Alice", [speaker_audio(1, 9.0)])
    Service(FakeEmbedder("fake:old"), store).enroll("Bob", [speaker_audio(2, 9.0)])
    new = Service(FakeEmbedder("fake:new", space_seed=1), store)
    assert sorted(new.reembed()) == ["Alice", "Bob"]
    assert new.verify("Alice", speaker_audio(1, 3.0, seed=4)).accepted
    assert not new.verify("Bob", speaker_audio(1, 3.0, seed=4)).accepted
    assert new.reembed() == []
    assert store.check() == []


def test_audio_is_not_kept_when_told_not_to(store):
    Service(FakeEmbedder(), store, keep_audio=False).enroll("Alice", [speaker_audio(1, 9.0)])
    assert [r.has_audio for r in store.recordings("Alice")] == [False]
    assert Service(FakeEmbedder("fake:new"), store).reembed() == []


def test_unknown_names_and_bad_audio_raise_specific_errors(service):
    service.enroll("Alice", [speaker_audio(1, 9.0)])
    with pytest.raises(UnknownSpeakerError, match="'Zed'.*enrolled: Alice"):
        service.verify("Zed", speaker_audio(1, 3.0))
    with pytest.raises(UnknownSpeakerError):
        service.remove("Zed")
    bad = speaker_audio(1, 3.0)
    bad[100] = np.nan
    with pytest.raises(InvalidAudioError, match="1 NaN or infinite"):
        service.verify("Alice", bad)
    with pytest.raises(InvalidAudioError, match="shape"):
        service.verify("Alice", np.zeros((2, 16000), np.float32))
    with pytest.raises(InvalidAudioError, match="no samples"):
        service.identify(np.zeros(0, np.float32))
    with pytest.raises(NotEnoughSpeechError, match="0.00 s of speech"):
        service.verify("Alice", np.zeros(3 * SAMPLE_RATE, np.float32))
    assert service.remove("alice") == "Alice"
    assert service.list() == []


def test_embeddings_are_made_from_speech_frames_only(store):
    embedder = FakeEmbedder()
    service = Service(embedder, store)
    clip = speaker_audio(1, 9.0)
    result = service.enroll("Alice", [clip])
    # the mixed-voice check embeds 2 s spans of the speech, then the whole speech is embedded once
    assert embedder.calls[-1] == result.net_speech_samples and result.net_speech_samples < clip.size
    assert sum(embedder.calls[:-1]) == result.net_speech_samples


def test_enroll_from_engine_embeddings(service):
    rng = np.random.default_rng(0)
    vectors = [(rng.standard_normal(DIM), 2 * SAMPLE_RATE) for _ in range(2)]
    with pytest.raises(NotEnoughSpeechError, match="found 4.00 s"):
        service.enroll_embeddings("Alice", vectors)
    result = service.enroll_embeddings("Alice", vectors + [(vectors[0][0] * 3, 2 * SAMPLE_RATE)])
    assert result.total_recordings == 3 and result.checks[2].score > result.checks[1].score


def test_uncalibrated_threshold_is_reported(store):
    embedder = FakeEmbedder()
    embedder.calibration = Calibration.fallback("no verification.json")
    service = Service(embedder, store)
    service.enroll("Alice", [speaker_audio(1, 9.0)])
    v = service.verify("Alice", speaker_audio(1, 3.0, seed=3))
    assert v.threshold == Calibration.fallback("x").threshold and v.calibrated is False


def test_voiceprint_import_path_stays_light():
    """`speakers list` / `remove` need no model at all, and `verify` no transformers or textual."""
    code = ("import sys, voiceprints, voiceprints.service, voiceprints.calibration, voiceprints.trials, voiceprints.store; "
            "print(' '.join(m for m in ('torch', 'transformers', 'textual', 'models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _two_voices(seconds: float = 6.0) -> np.ndarray:
    return np.concatenate([speaker_audio(1, seconds, seed=1), speaker_audio(2, seconds, seed=2)])


def test_enrollment_refuses_a_recording_of_several_voices_unless_allowed(service):
    with pytest.raises(MixedVoicesError, match="recording 1 seems to hold several voices .*--allow-mixed"):
        service.enroll("Alice", [_two_voices()])
    assert service.list() == []
    result = service.enroll("Alice", [_two_voices()], allow_mixed=True)
    assert result.total_recordings == 1


def test_one_voice_over_many_spans_is_not_called_mixed(service):
    result = service.enroll("Alice", [speaker_audio(1, 30.0, seed=7)])  # 13 spans of one voice
    assert result.total_recordings == 1
    mix = service.voice_mix(np.concatenate([speaker_audio(1, 12.0), speaker_audio(3, 12.0)]))
    assert mix.mixed and len(mix.voices) == 2


def test_two_people_under_one_name_are_refused(service):
    with pytest.raises(OutliersError, match="recording 1: .*recording 2: .*different people"):
        service.enroll("Alice", [speaker_audio(1, 9.0, seed=1), speaker_audio(2, 9.0, seed=2)])
    assert service.list() == []


def test_same_voice_under_a_new_name_is_refused_unless_asked(service):
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    with pytest.raises(SameVoiceError, match="matches 'Alice'.*--same-voice-ok"):
        service.enroll("Alicia", [speaker_audio(1, 9.0, seed=2)])
    assert [p.name for p in service.list()] == ["Alice"]
    assert service.enroll("Alicia", [speaker_audio(1, 9.0, seed=2)], same_voice_ok=True).created
    assert service.enroll("Bob", [speaker_audio(2, 9.0, seed=3)]).created  # another voice is fine


def test_names_compare_case_insensitively_and_the_error_says_so(service):
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    with pytest.raises(NameConflictError, match="'alice' is already enrolled as 'Alice'.*case-insensitively"):
        service.enroll("alice", [speaker_audio(1, 9.0, seed=2)])
    assert service.store.voiceprint("Alice", "fake:v1").n_recordings == 1


def test_adding_counts_the_stored_speech(service):
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    added = service.enroll("Alice", [speaker_audio(1, 2.4, seed=2)])  # 2.24 s of speech: enough with the stored
    assert added.total_recordings == 2 and not added.low_quality
    with pytest.raises(NotEnoughSpeechError, match="found 2.24 s"):
        service.enroll("Bob", [speaker_audio(2, 2.4, seed=2)])


def test_verify_and_identify_refuse_several_voices(service):
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    with pytest.raises(MixedVoicesError, match="talk.wav seems to hold several voices"):
        service.verify("Alice", _two_voices(), what="talk.wav")
    with pytest.raises(MixedVoicesError, match="several voices"):
        service.identify(_two_voices())
    assert service.verify("Alice", speaker_audio(1, 6.0, seed=4)).accepted


def test_short_test_audio_names_the_file_and_needs_no_embedder_call(store):
    embedder = FakeEmbedder()
    service = Service(embedder, store)
    service.enroll("Alice", [speaker_audio(1, 9.0, seed=1)])
    embedder.calls.clear()
    with pytest.raises(NotEnoughSpeechError, match=r"short.wav: 0\.\d\d s of speech found, at least 1\.00 s"):
        service.verify("Alice", speaker_audio(1, 0.4), what="short.wav")
    assert embedder.calls == []


def test_a_lower_minimum_is_flagged_low_quality(service):
    result = service.enroll("Guest", [speaker_audio(3, 4.2, seed=1)], min_enroll_speech_s=2.0)
    assert result.low_quality and result.to_dict()["low_quality"] is True
    with pytest.raises(NotEnoughSpeechError):
        service.enroll("Other", [speaker_audio(4, 2.0, seed=1)], min_enroll_speech_s=2.0)
