"""The app hands the engine the store's voiceprints as plain values and re-seeds it after each change."""

from __future__ import annotations

import pytest

from app.engine_setup import attach_speakers
from engine import Engine
from engine.enrolled import EnrolledVoices
from engine.fakes import ScriptedModels
from tests.test_voiceprints import FakeEmbedder, speaker_audio


def test_enrollments_and_removals_reach_the_streams_opened_after_them(tmp_path):
    models = ScriptedModels(num_speakers=2)
    models.embedder = FakeEmbedder(models.fingerprint, threshold=0.55)  # Engine.embedder reads this
    engine = Engine(models)
    service = attach_speakers(engine, str(tmp_path / "speakers.sqlite3"))
    assert isinstance(engine.speakers, EnrolledVoices) and not engine.speakers.vectors
    assert engine.speakers.threshold == pytest.approx(0.55) and engine.speakers.fingerprint == models.fingerprint
    before = engine.new_stream()
    service.enroll("Alice", [speaker_audio(1, 9.0)])
    assert engine.speakers.names == ["Alice"]
    assert engine.new_stream().speakers() == ["Alice"] and before.speakers() == []
    service.enroll("Bob", [speaker_audio(2, 9.0)])
    service.remove("Alice")
    assert engine.new_stream().speakers() == ["Bob"]

