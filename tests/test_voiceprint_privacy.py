"""Voiceprint privacy and safeguards (issue 26 items 4-5).

The store is private (0600 in a 0700 folder); `speakers remove` leaves no byte of the person in
the database or its write-ahead log (read back from the files); `speakers export` writes a private
folder with the vectors, metadata and kept audio. The command-line safeguards run on the bundled
demo's real recordings with the shipped (embedded) x-vector model: three synthetic voices.
"""

from __future__ import annotations

import functools
import json
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from engine.speech_detect import EnergySpeechDetector
from tests.test_voiceprints import FakeEmbedder, speaker_audio
from voiceprints.service import VoiceprintService
from voiceprints.store import SpeakerStore

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "app" / "demo"
ALICE = [str(DEMO / "enroll" / "Alice" / f"{k}.wav") for k in (1, 2, 3)]
BRUNO = [str(DEMO / "enroll" / "Bruno" / f"{k}.wav") for k in (1, 2, 3)]
Service = functools.partial(VoiceprintService, detector=EnergySpeechDetector())


def _files_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def test_a_new_store_is_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "private" / "speakers.db"
    with SpeakerStore(db) as store:
        Service(FakeEmbedder(), store).enroll("Alice", [speaker_audio(1, 9.0)])
        wal = Path(str(db) + "-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600  # SQLite copies the mode
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_remove_leaves_no_trace_in_the_database_files(tmp_path: Path) -> None:
    db = tmp_path / "speakers.db"
    audio = speaker_audio(1, 9.0, seed=11)
    with SpeakerStore(db) as store:
        service = Service(FakeEmbedder(), store)
        service.enroll("Zelda Quixotic", [audio])
        service.enroll("Bob", [speaker_audio(2, 9.0, seed=12)])
        vector = store.voiceprint("Zelda Quixotic", "fake:v1").vector.astype("<f4").tobytes()
        pcm = np.clip(np.round(audio.astype(np.float64) * 32767), -32768, 32767).astype("<i2").tobytes()
        needles = {"name": b"Zelda Quixotic", "vector": vector,
                   "audio": pcm[len(pcm) // 2: len(pcm) // 2 + 64]}
        before = _files_bytes(db)
        assert all(n in before for n in needles.values())  # the check below can fail
        assert store.remove("zelda quixotic") == "Zelda Quixotic"
        after_open = _files_bytes(db)  # still open: the WAL was checkpointed and truncated
        assert Path(str(db) + "-wal").stat().st_size == 0
        assert [p.name for p in store.people()] == ["Bob"]
    after = _files_bytes(db)
    for what, needle in needles.items():
        assert needle not in after_open and needle not in after, what
    with SpeakerStore(db) as store:  # still a healthy store holding Bob
        assert store.check() == [] and store.names() == ["Bob"]


def test_export_writes_a_private_folder_with_vectors_metadata_and_audio(tmp_path: Path) -> None:
    from app.voiceprint_export import export_person

    db = tmp_path / "speakers.db"
    clips = [speaker_audio(1, 9.0, seed=1), speaker_audio(1, 6.0, seed=2)]
    with SpeakerStore(db) as store:
        Service(FakeEmbedder(), store).enroll("Alice", clips)
        name, folder = export_person(store, "alice", str(tmp_path / "out"))
        vp = store.voiceprint("Alice", "fake:v1")
    assert name == "Alice"
    root = Path(folder)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    person = json.loads((root / "person.json").read_text())
    assert person["name"] == "Alice" and len(person["recordings"]) == 2
    assert np.allclose(person["voiceprints"][0]["vector"], vp.vector, atol=1e-7)
    assert person["voiceprints"][0]["fingerprint"] == "fake:v1"
    for rec, clip in zip(person["recordings"], clips):
        assert set(rec["embeddings"]) == {"fake:v1"}
        data, rate = sf.read(root / rec["audio"], dtype="float32")
        assert rate == 16000 and np.max(np.abs(data - clip)) < 1e-4
    for path in [root / "person.json", *(root / "audio").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    with SpeakerStore(db) as store:
        from app.errors import AppError

        with pytest.raises(AppError, match="already exists"):
            export_person(store, "Alice", folder)


# --- the command line on the demo's recordings with the shipped x-vector model -----------------


def _run(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    last = json.loads(out.out.strip().splitlines()[-1]) if out.out.strip() else {}
    return code, last, out.err


def test_enrollment_safeguards_on_real_recordings(tmp_path: Path, capsys) -> None:
    db = ["--speakers-db", str(tmp_path / "s.db")]
    # a clip of someone else among Alice's: reported on stderr and left out
    code, result, err = _run(capsys, "enroll", "Alice", "--input", ALICE[0], ALICE[1], BRUNO[0], *db)
    assert code == 0, err
    assert result["left_out"] == [2] and result["total_recordings"] == 2
    assert f"warning: {BRUNO[0]} does not match Alice's other recordings" in err and "left out" in err
    # the three-person demo conversation: refused for enrollment, and for verify
    conversation = str(DEMO / "conversation.wav")
    code, _, err = _run(capsys, "enroll", "Crowd", "--input", conversation, *db)
    assert code == 2 and f"{conversation} seems to hold several voices" in err and "--allow-mixed" in err
    code, _, err = _run(capsys, "verify", "Alice", "--input", conversation, *db)
    assert code == 2 and "several voices" in err and err.count("\n") == 1
    # names compare case-insensitively, and say so
    code, _, err = _run(capsys, "enroll", "alice", "--input", ALICE[2], *db)
    assert code == 2 and "already enrolled as 'Alice'" in err and "case-insensitively" in err
    # the same voice under a new name
    code, _, err = _run(capsys, "enroll", "Alicia", "--input", ALICE[2], ALICE[0], *db)
    assert code == 2 and "matches 'Alice'" in err and "--same-voice-ok" in err
    # adding one short clip counts the speech already stored (it used to be refused)
    code, added, err = _run(capsys, "enroll", "Alice", "--input", ALICE[2], *db)
    assert code == 0 and added["total_recordings"] == 3 and added["net_speech_s"] < 5, err
    # another voice is enrolled; verify names a short file in user wording
    code, _, err = _run(capsys, "enroll", "Bruno", "--input", *BRUNO, *db)
    assert code == 0, err
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(ALICE[0], dtype="float32")[0][:2000], 16000)
    code, _, err = _run(capsys, "verify", "Alice", "--input", str(short), *db)
    assert code == 2 and err.startswith(f"error: {short}: ") and "s of speech found" in err
    assert "samples" not in err and "shape" not in err
    # export, then remove every trace
    code, exported, _ = _run(capsys, "speakers", "export", "Bruno", "--to", str(tmp_path / "bruno"), *db)
    assert code == 0 and exported["exported"] == "Bruno" and (tmp_path / "bruno" / "person.json").exists()
    assert len(list((tmp_path / "bruno" / "audio").iterdir())) == 3
    code, removed, _ = _run(capsys, "speakers", "remove", "bruno", *db)
    assert code == 0 and removed == {"removed": "Bruno"}
    assert b"Bruno" not in _files_bytes(tmp_path / "s.db")
    code, listed, _ = _run(capsys, "speakers", "list", *db)
    assert [p["name"] for p in listed["speakers"]] == ["Alice"]


@pytest.mark.slow
def test_naming_the_demo_guest_in_the_live_session(tmp_path: Path) -> None:
    """The TUI's `n` on the demo: the guest's track (the unknown one with the most speech) can be named."""
    import asyncio

    from app.cli import parse_args
    from app.engine_setup import choose_models, enroll_demo_speakers, find_demo, load_engine
    from app.session import InputChoice, LiveSession, SessionOptions
    from app.sources import load_audio

    args = parse_args(["--fast"])
    engine = load_engine(args, choose_models(args))
    demo = find_demo()
    service, _ = enroll_demo_speakers(engine, demo)
    session = LiveSession(engine, InputChoice("file", "demo", samples=load_audio(demo.conversation), speed=None),
                          SessionOptions(), service)

    async def run() -> object:
        await session.start()
        assert session.runner is not None
        await session.runner.run(session._blocks())
        unknown = [t for t in session.tracks() if t.startswith("unknown")]
        held = {t: len(await session.track_audio(t)) for t in unknown}
        guest = max(unknown, key=held.__getitem__)
        try:
            result, _ = await session.name_track(guest, "Guest")
        finally:
            await session.close()
        return result

    result = asyncio.run(run())
    assert result.name == "Guest" and result.created
    assert [p.name for p in service.list()] == ["Alice", "Bruno", "Guest"]
