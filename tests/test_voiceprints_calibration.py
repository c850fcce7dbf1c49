"""Calibration: EER and FAR thresholds against brute force, trial scoring, verification.json, trial lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.calibration import FALLBACK_THRESHOLD
from engine.scoring import equal_error_rate, threshold_at_far
from engine.timebase import SAMPLE_RATE
from tests.test_voiceprints import FakeEmbedder, speaker_audio
from voiceprints.calibration import load_calibration, measure, write_verification_json
from voiceprints.trials import list_trials, read_clip, score_trials


def brute_force_rates(target, impostor, t):
    return np.mean(np.asarray(impostor) >= t), np.mean(np.asarray(target) < t)


scores = st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_eer_is_where_the_error_rates_are_closest(target, impostor):
    eer, threshold = equal_error_rate(np.array(target), np.array(impostor))
    far, frr = brute_force_rates(target, impostor, threshold)
    assert eer == pytest.approx((far + frr) / 2)
    # no threshold anywhere brings the two rates closer together
    grid = np.unique(np.concatenate([target, impostor, [2.0]]))
    best_gap = min(abs(np.subtract(*brute_force_rates(target, impostor, t))) for t in grid)
    assert abs(far - frr) == pytest.approx(best_gap)


@settings(max_examples=60, deadline=None)
@given(scores, scores, st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]))
def test_far_threshold_is_the_lowest_that_meets_the_rate(target, impostor, far):
    point = threshold_at_far(np.array(target), np.array(impostor), far)
    got_far, got_frr = brute_force_rates(target, impostor, point["threshold"])
    assert got_far <= far and got_far == pytest.approx(point["far_measured"])
    assert got_frr == pytest.approx(point["frr"])
    lower = [s for s in np.concatenate([target, impostor]) if s < point["threshold"]]
    if lower:  # the next lower observed score as threshold would accept too many impostors
        assert brute_force_rates(target, impostor, max(lower))[0] > far


def test_separated_scores_give_zero_eer_and_a_threshold_between():
    eer, threshold = equal_error_rate(np.array([0.8, 0.9, 0.95]), np.array([0.1, 0.2, 0.5]))
    assert eer == 0.0 and threshold == pytest.approx(0.65)
    eer, threshold = equal_error_rate(np.array([0.4, 0.6, 0.9, 0.95]), np.array([0.1, 0.2, 0.5, 0.7]))
    assert eer == 0.25 and threshold == pytest.approx(0.55)


def test_empty_or_bad_scores_are_refused():
    with pytest.raises(ValueError, match="0 impostor"):
        equal_error_rate(np.array([0.5]), np.array([]))
    with pytest.raises(ValueError, match="finite"):
        equal_error_rate(np.array([np.nan]), np.array([0.1]))
    with pytest.raises(ValueError, match="far must be"):
        threshold_at_far(np.array([0.5]), np.array([0.1]), 1.5)


def clips_of(n_speakers: int, n_clips: int, seconds: float = 3.0) -> dict[str, list[np.ndarray]]:
    return {f"s{k}": [speaker_audio(k, seconds, seed=10 * k + c) for c in range(n_clips)]
            for k in range(1, n_speakers + 1)}


def test_enroll_protocol_scores_held_out_clips_against_voiceprints():
    # 3 s clips hold 2.8 s of speech: two clips enroll (5.6 s), the other three are tests
    scores = score_trials(FakeEmbedder(), clips_of(4, 5), protocol="enroll")
    assert scores.target.size == 4 * 3 and scores.impostor.size == 4 * 3 * 3
    assert scores.target.min() > 0.8 and scores.impostor.max() < 0.4
    assert scores.n_speakers == 4 and scores.n_clips == 20


def test_pairs_protocol_scores_every_pair():
    scores = score_trials(FakeEmbedder(), clips_of(3, 4), protocol="pairs")
    assert scores.target.size == 3 * 6 and scores.impostor.size == 3 * 4 * 4


def test_silent_clips_are_skipped_and_too_few_speakers_refused():
    clips = clips_of(2, 4)
    clips["s1"].append(np.zeros(SAMPLE_RATE, np.float32))
    scores = score_trials(FakeEmbedder(), clips, protocol="pairs")
    assert len(scores.skipped) == 1 and scores.skipped[0].startswith("s1#4")
    with pytest.raises(ValueError, match="at least 2 speakers"):
        score_trials(FakeEmbedder(), clips_of(1, 3))
    with pytest.raises(ValueError, match="no speaker has 5.0 s"):
        score_trials(FakeEmbedder(), clips_of(2, 2))


def test_clips_with_too_little_speech_are_skipped_before_the_embedder_sees_them():
    class ShortRefusingEmbedder(FakeEmbedder):
        def embed(self, samples):
            if samples.size < SAMPLE_RATE // 2:  # like a real x-vector TDNN on a few frames
                raise ValueError("too short to embed")
            return super().embed(samples)

    clips = clips_of(2, 4)
    clips["s1"].append(speaker_audio(1, 0.45))  # 0.45 s, all of it speech
    scores = score_trials(ShortRefusingEmbedder(), clips, protocol="pairs")
    assert len(scores.skipped) == 1 and scores.skipped[0].startswith("s1#4")


def test_verification_json_round_trip(tmp_path):
    emb = FakeEmbedder(noise=1.5)  # noisy enough that the distributions overlap
    content = measure(score_trials(emb, clips_of(5, 6)), "fake:v1", fars=(0.05,),
                      extra={"trials": "synthetic"})
    assert 0 < content["eer"] < 0.5
    assert content["threshold"] == content["eer_threshold"]
    assert content["target_scores"]["mean"] > content["impostor_scores"]["mean"]
    write_verification_json(tmp_path / "verification.json", content)
    cal = load_calibration(tmp_path, "fake:v1")
    assert cal.calibrated and cal.threshold == content["threshold"] and cal.eer == content["eer"]
    assert cal.n_target == content["n_target"] and cal.n_impostor == content["n_impostor"]
    at_far = measure(score_trials(emb, clips_of(5, 6)), "fake:v1", fars=(0.05,), operating_point="far=0.05")
    assert at_far["threshold"] == at_far["far_thresholds"][0]["threshold"] >= content["threshold"]
    # measured for other weights: the fallback, saying so
    other = load_calibration(tmp_path, "fake:v2")
    assert not other.calibrated and other.threshold == FALLBACK_THRESHOLD
    assert "fake:v1" in other.note and "fake:v2" in other.note


def test_missing_and_malformed_verification_json(tmp_path):
    cal = load_calibration(tmp_path, "x")
    assert not cal.calibrated and "no verification.json" in cal.note
    (tmp_path / "verification.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        load_calibration(tmp_path, "x")
    (tmp_path / "verification.json").write_text(json.dumps({"threshold": "high", "fingerprint": "x"}))
    with pytest.raises(ValueError, match="'threshold' must be a finite number"):
        load_calibration(tmp_path, "x")


def test_trials_from_a_folder_and_from_json(tmp_path):
    folder = tmp_path / "wavs"
    (folder / "carol").mkdir(parents=True)
    audio = speaker_audio(1, 1.0)
    sf.write(folder / "alice__one.wav", audio, SAMPLE_RATE)
    sf.write(folder / "alice__two.wav", audio, SAMPLE_RATE)
    sf.write(folder / "bob__one.flac", audio, SAMPLE_RATE)
    sf.write(folder / "carol" / "x.wav", audio, SAMPLE_RATE)
    (folder / "notes.txt").write_text("ignored")
    found = list_trials(folder)
    assert {k: len(v) for k, v in found.items()} == {"alice": 2, "bob": 1, "carol": 1}
    listing = tmp_path / "trials.json"
    listing.write_text(json.dumps([{"speaker": "a", "path": "wavs/alice__one.wav"},
                                   {"speaker": "a", "path": "wavs/alice__two.wav"}]))
    assert list_trials(listing) == {"a": [tmp_path / "wavs/alice__one.wav", tmp_path / "wavs/alice__two.wav"]}
    listing.write_text(json.dumps({"b": ["wavs/bob__one.flac"]}))
    assert list_trials(listing) == {"b": [tmp_path / "wavs/bob__one.flac"]}
    sf.write(folder / "stray.wav", audio, SAMPLE_RATE)
    with pytest.raises(ValueError, match="SPEAKER__CLIP"):
        list_trials(folder)


def test_clips_are_read_as_16k_mono(tmp_path):
    stereo = np.stack([speaker_audio(1, 1.0)] * 2, axis=1)
    import soxr

    sf.write(tmp_path / "x.wav", soxr.resample(stereo, SAMPLE_RATE, 44100), 44100)
    clip = read_clip(tmp_path / "x.wav")
    assert clip.dtype == np.float32 and clip.ndim == 1 and abs(clip.size - SAMPLE_RATE) <= 2


def test_clustering_threshold_in_verification_json(tmp_path):
    base = {"threshold": 0.8, "fingerprint": "x"}
    (tmp_path / "verification.json").write_text(json.dumps(base))
    assert load_calibration(tmp_path, "x").cluster_threshold is None
    (tmp_path / "verification.json").write_text(json.dumps({**base, "clustering": {"threshold": 0.55, "der": 0.2}}))
    cal = load_calibration(tmp_path, "x")
    assert cal.cluster_threshold == 0.55 and cal.change_threshold is None
    (tmp_path / "verification.json").write_text(json.dumps({**base, "clustering": {"threshold": 0.5, "change_threshold": 0.3}}))
    assert load_calibration(tmp_path, "x").change_threshold == 0.3
    (tmp_path / "verification.json").write_text(json.dumps({**base, "clustering": {"threshold": 0.5, "change_threshold": 2}}))
    with pytest.raises(ValueError, match="'clustering.change_threshold' must be null or a number in"):
        load_calibration(tmp_path, "x")
    for bad in ({"threshold": 1.5}, {"threshold": "low"}, {}, 0.5):
        (tmp_path / "verification.json").write_text(json.dumps({**base, "clustering": bad}))
        with pytest.raises(ValueError, match="'clustering.threshold' must be a number in"):
            load_calibration(tmp_path, "x")


def test_engine_clusters_with_the_models_measured_threshold_unless_configured():
    from engine import Engine, EngineConfig
    from engine.config import SpeakerConfig
    from engine.fakes import ScriptedModels

    models = ScriptedModels(num_speakers=2)
    assert Engine(models).config.speakers.new_cluster_threshold is None  # none measured: verification threshold
    models.sv_cluster_threshold, models.sv_change_threshold = 0.6, 0.3
    speakers = Engine(models).config.speakers
    assert speakers.new_cluster_threshold == 0.6 and speakers.merge_threshold == pytest.approx(0.65)
    assert speakers.change_threshold == 0.3
    mine = EngineConfig(speakers=SpeakerConfig(new_cluster_threshold=0.7, change_threshold=-1.0))
    assert Engine(models, mine).config.speakers.new_cluster_threshold == 0.7
    assert Engine(models, mine).config.speakers.change_threshold == -1.0
