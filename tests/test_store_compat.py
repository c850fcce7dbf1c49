"""A speaker store made by the code before the voiceprints package still opens, checks clean and identifies.

`tests/data/speaker_store/store-598a0de.sqlite3` was made by `run_live.py enroll` at commit 598a0de
(engine/speaker_store.py) with the demo's synthetic voices and the shipped x-vector model; its README
has the commands and the scores that code gave. Each test works on a copy (opening a store in WAL
mode writes beside it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_voiceprints import FakeEmbedder, speaker_audio
from voiceprints.records import mean_voiceprint
from voiceprints.service import VoiceprintService
from voiceprints.store import SpeakerStore

ROOT = Path(__file__).resolve().parents[1]
OLD_STORE = ROOT / "tests" / "data" / "speaker_store" / "store-598a0de.sqlite3"
OLD_FINGERPRINT = "sha256:4c2ea5fd40e4f878"  # the shipped sv model when the store was made
DEMO = ROOT / "app" / "demo" / "enroll"
SPEECH_S = {"Alice": 5.56, "Bruno": 5.12}  # what `enroll` printed then
SCORES_THEN = {"Alice": (0.8699, 0.3294), "Bruno": (0.8449, 0.1655)}  # identify on clip 3: own, other


@pytest.fixture
def old_store(tmp_path):
    path = tmp_path / "speakers.sqlite3"
    shutil.copyfile(OLD_STORE, path)
    with SpeakerStore(path, create=False) as store:
        yield store


def test_an_old_store_opens_with_its_people_recordings_and_voiceprints(old_store):
    assert old_store.check() == []
    assert old_store.names() == ["Alice", "Bruno"]
    assert old_store.models() == {OLD_FINGERPRINT: old_store.models()[OLD_FINGERPRINT]}
    people = {p.name: p for p in old_store.people()}
    for name, speech_s in SPEECH_S.items():
        assert people[name].n_recordings == 2 and people[name].fingerprints == (OLD_FINGERPRINT,)
        assert people[name].net_speech_s == pytest.approx(speech_s, abs=0.01)
        recs = old_store.recordings(name)
        assert [r.has_audio for r in recs] == [True, True]
        assert all(len(old_store.recording_audio(r.recording_id)) == r.num_samples for r in recs)
        vectors, speech = old_store.embeddings(name, OLD_FINGERPRINT)
        vp = old_store.voiceprint(name, OLD_FINGERPRINT)
        np.testing.assert_allclose(vp.vector, mean_voiceprint(vectors, np.maximum(speech, 1)), atol=1e-6)
    # each recording's embedding is closer to its own person's voiceprint than to the other's
    prints = {vp.name: vp.vector for vp in old_store.voiceprints(OLD_FINGERPRINT)}
    for name in SPEECH_S:
        other = next(n for n in SPEECH_S if n != name)
        vectors, _ = old_store.embeddings(name, OLD_FINGERPRINT)
        assert np.all(vectors @ prints[name] > vectors @ prints[other])


def test_the_engine_gets_an_old_stores_voiceprints_as_plain_values(old_store):
    embedder = FakeEmbedder(OLD_FINGERPRINT, threshold=0.514)
    voices = VoiceprintService(embedder, old_store).enrolled()
    assert voices.fingerprint == OLD_FINGERPRINT and voices.threshold == pytest.approx(0.514)
    assert sorted(voices.vectors) == ["Alice", "Bruno"]
    np.testing.assert_array_equal(voices.vectors["Alice"], old_store.voiceprint("Alice", OLD_FINGERPRINT).vector)


def test_the_new_code_writes_into_an_old_store(old_store):
    service = VoiceprintService(FakeEmbedder("fake:v1"), old_store)
    service.enroll("Carla", [speaker_audio(1, 9.0)])
    assert old_store.names() == ["Alice", "Bruno", "Carla"] and old_store.check() == []
    assert old_store.remove("Carla") == "Carla" and old_store.names() == ["Alice", "Bruno"]


def test_an_old_store_identifies_the_demo_voices_with_the_shipped_model(old_store):
    pytest.importorskip("torch")
    from app.sources import load_audio
    from voiceprints.xvector import XVectorEmbedder

    embedder = XVectorEmbedder(ROOT / "models" / "embedded" / "sv")
    service = VoiceprintService(embedder, old_store)
    same_model = embedder.fingerprint == OLD_FINGERPRINT
    if not same_model:  # the shipped model changed since: the kept audio is re-embedded, as documented
        assert service.reembed() == ["Alice", "Bruno"]
    for name, (own_then, other_then) in SCORES_THEN.items():
        ranked = service.identify(load_audio(str(DEMO / name / "3.wav")))
        assert [c.name for c in ranked][0] == name and ranked[0].accepted and not ranked[1].accepted
        if same_model:  # the same model and audio give the scores the old code printed
            assert ranked[0].score == pytest.approx(own_then, abs=2e-4)
            assert ranked[1].score == pytest.approx(other_then, abs=2e-4)


def test_speakers_reembed_brings_an_old_models_store_to_the_shipped_model(tmp_path, capsys):
    """After a model change, `run_live.py speakers reembed` makes voiceprints from the kept audio,
    and the people are identified again; a second run has nothing left to do."""
    pytest.importorskip("torch")
    import json

    from app.cli import main
    from voiceprints.xvector import XVectorEmbedder

    if XVectorEmbedder(ROOT / "models" / "embedded" / "sv").fingerprint == OLD_FINGERPRINT:
        pytest.skip("the shipped x-vector model is the one the old store was made with")
    db = tmp_path / "speakers.sqlite3"
    shutil.copyfile(OLD_STORE, db)

    def run(*argv: str) -> dict:
        assert main([*argv, "--speakers-db", str(db), "--device", "cpu"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    # before: nobody has a voiceprint for this model, and the error says what to do
    assert main(["identify", "--input", str(DEMO / "Alice" / "3.wav"), "--speakers-db", str(db), "--device", "cpu"]) != 0
    assert "run_live.py speakers reembed" in capsys.readouterr().err
    first = run("speakers", "reembed")
    assert first["reembedded"] == ["Alice", "Bruno"] and first["without_audio"] == []
    assert run("speakers", "reembed")["reembedded"] == []
    for name in SPEECH_S:
        ranked = run("identify", "--input", str(DEMO / name / "3.wav"))["candidates"]
        assert ranked[0]["name"] == name and ranked[0]["accepted"]
