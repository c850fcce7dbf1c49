"""The engine takes enrolled voices as plain values (issue 23 item 2): no store, no database here."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine, EngineConfig
from engine.enrolled import EnrolledVoices
from engine.fakes import ScriptedModels


def test_enrolled_voices_seed_every_new_stream_and_a_later_assignment_reaches_the_next_one():
    models = ScriptedModels(num_speakers=2)
    alice, bob = models.speaker_vectors[0], models.speaker_vectors[1]
    engine = Engine(models, EngineConfig(), speakers=EnrolledVoices({"alice": alice}, 0.7, models.fingerprint))
    s1 = engine.new_stream()
    assert s1.speakers() == ["alice"] and s1.tracker.clusters.enrolled_threshold == 0.7
    engine.speakers = EnrolledVoices({"alice": alice, "bob": bob}, 0.6, models.fingerprint)
    s2 = engine.new_stream()
    assert s2.speakers() == ["alice", "bob"] and s2.tracker.clusters.enrolled_threshold == 0.6
    assert s1.speakers() == ["alice"]  # a stream keeps what it was seeded with


def test_a_plain_dict_still_works_with_the_engine_threshold():
    models = ScriptedModels(num_speakers=2)
    engine = Engine(models, speakers={"alice": models.speaker_vectors[0]}, voiceprint_threshold=0.65)
    stream = engine.new_stream()
    assert stream.speakers() == ["alice"] and stream.tracker.clusters.enrolled_threshold == 0.65


def test_anything_else_is_refused_by_name():
    class Service:  # the old duck-typed VoiceprintService is no longer read by the engine
        threshold = 0.7

        def voiceprints(self):
            return []

    models = ScriptedModels(num_speakers=2)
    for wrong in (42, Service()):
        with pytest.raises(TypeError, match=r"EnrolledVoices \(VoiceprintService.enrolled\(\) gives one\)"):
            Engine(models, speakers=wrong)


def test_voices_of_another_model_are_refused():
    models = ScriptedModels(num_speakers=2)
    voices = EnrolledVoices({"alice": models.speaker_vectors[0]}, 0.7, "sha256:someothermodel")
    with pytest.raises(ValueError, match="made with model sha256:someothermodel.*do not compare"):
        Engine(models, speakers=voices)
    engine = Engine(models)
    with pytest.raises(ValueError, match="do not compare"):
        engine.speakers = voices
    engine.speakers = EnrolledVoices({}, 0.7, "sha256:someothermodel")  # nobody enrolled: nothing to compare
    engine.speakers = EnrolledVoices({"alice": models.speaker_vectors[0]}, 0.7)  # fingerprint unknown: taken


def test_enrolled_voices_are_validated_and_copied():
    v = np.ones(4, np.float32)
    voices = EnrolledVoices({"a": v}, 0.5, "fp")
    v[0] = 9.0
    assert voices.vectors["a"][0] == 1.0  # a copy, so the caller's array can change
    with pytest.raises(ValueError):
        voices.vectors["a"][0] = 2.0  # read-only
    with pytest.raises(TypeError):
        voices.vectors["b"] = v  # type: ignore[index]
    assert voices.names == ["a"]
    with pytest.raises(ValueError, match="threshold must be a cosine"):
        EnrolledVoices({}, 1.5)
    with pytest.raises(ValueError, match="threshold must be a cosine"):
        EnrolledVoices({}, float("nan"))
    with pytest.raises(ValueError, match="finite 1-D vector"):
        EnrolledVoices({"a": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="finite 1-D vector"):
        EnrolledVoices({"a": np.ones((2, 2))})
    with pytest.raises(ValueError, match="different sizes"):
        EnrolledVoices({"a": np.ones(3), "b": np.ones(4)})
