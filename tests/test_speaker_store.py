"""SpeakerStore: persistence, add/replace/remove, fingerprints, schema checks, rollback, crash safety."""

from __future__ import annotations

import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from voiceprints.errors import FingerprintMismatchError, InvalidNameError, StoreError, UnknownSpeakerError
from voiceprints.records import NewRecording, mean_voiceprint
from voiceprints.store import SpeakerStore
from voiceprints.store_schema import SCHEMA_VERSION, default_store_path

REPO = Path(__file__).resolve().parents[1]
DIM = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def rec(seed: int, speech: int = 16000, audio: bool = False) -> NewRecording:
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, 20000).astype(np.float32) if audio else None
    return NewRecording(unit(seed), max(20000, speech), speech, samples)


def test_enrollment_survives_reopening(tmp_path):
    path = tmp_path / "sub" / "speakers.sqlite3"
    with SpeakerStore(path) as store:
        vp = store.add_enrollment("Alice", "fp:a", [rec(1, 16000), rec(2, 48000)])
    assert vp.n_recordings == 2 and vp.net_speech_samples == 64000 and vp.net_speech_s == 4.0
    expected = mean_voiceprint(np.stack([unit(1), unit(2)]), np.array([16000, 48000]))
    np.testing.assert_allclose(vp.vector, expected, atol=1e-6)
    with SpeakerStore(path, create=False) as store:
        again = store.voiceprint("alice", "fp:a")
        np.testing.assert_array_equal(again.vector, vp.vector)
        assert again.name == "Alice"
        assert float(np.linalg.norm(again.vector)) == pytest.approx(1.0, abs=1e-6)
        assert store.check() == []
    db = sqlite3.connect(path)
    assert dict(db.execute("SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_weighted_mean_weights_by_speech():
    a, b = np.eye(2, dtype=np.float32)
    v = mean_voiceprint(np.stack([a * 5, b]), np.array([3.0, 1.0]))  # norms do not count, weights do
    np.testing.assert_allclose(v, np.array([3, 1]) / np.sqrt(10), atol=1e-6)
    with pytest.raises(ValueError, match="cancel"):
        mean_voiceprint(np.stack([a, -a]), np.array([1.0, 1.0]))


def test_add_replace_and_remove(tmp_path):
    with SpeakerStore(tmp_path / "s.db") as store:
        store.add_enrollment("Alice", "fp:a", [rec(1)])
        vp = store.add_enrollment("ALICE", "fp:a", [rec(2), rec(3)])
        assert vp.n_recordings == 3 and vp.name == "Alice"
        store.add_enrollment("Bob", "fp:a", [rec(4)])
        vp = store.add_enrollment("alice", "fp:a", [rec(5)], replace=True)
        assert vp.n_recordings == 1
        np.testing.assert_allclose(vp.vector, unit(5), atol=1e-6)
        assert [len(store.recordings(n)) for n in store.names()] == [1, 1]
        assert store.remove("bob") == "Bob"
        assert store.names() == ["Alice"]
        with pytest.raises(UnknownSpeakerError, match="'Bob'.*enrolled: Alice"):
            store.remove("Bob")
        store.remove("Alice")
        with pytest.raises(UnknownSpeakerError, match="no one is enrolled"):
            store.voiceprint("Alice", "fp:a")
        # nothing is left behind: recordings and embeddings went with the person
        db = sqlite3.connect(tmp_path / "s.db")
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("people", "enrollments", "recordings", "embeddings", "voiceprints")]
        db.close()
        assert counts == [0, 0, 0, 0, 0]


def test_voiceprints_are_kept_per_fingerprint(tmp_path):
    with SpeakerStore(tmp_path / "s.db") as store:
        store.add_enrollment("Alice", "fp:a", [rec(1)])
        with pytest.raises(FingerprintMismatchError) as info:
            store.voiceprint("Alice", "fp:b")
        assert info.value.stored == ("fp:a",) and info.value.current == "fp:b"
        assert "fp:a" in str(info.value) and "fp:b" in str(info.value)
        store.add_enrollment("Alice", "fp:b", [rec(2)])
        assert store.voiceprint("Alice", "fp:a").n_recordings == 1
        assert store.voiceprint("Alice", "fp:b").n_recordings == 1
        assert [p.fingerprints for p in store.people()] == [("fp:a", "fp:b")]
        assert store.people()[0].to_dict() == {"name": "Alice", "created_at": store.people()[0].created_at,
                                               "n_recordings": 2, "net_speech_s": 2.0,
                                               "fingerprints": ["fp:a", "fp:b"]}
        assert [v.name for v in store.voiceprints("fp:b")] == ["Alice"]
        assert store.voiceprints("fp:c") == []
        with pytest.raises(ValueError, match="16-dimensional"):
            store.add_enrollment("Bob", "fp:a", [NewRecording(np.ones(8, np.float32), 100, 100)])


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\nname", "unknown-3", "Unknown-12"])
def test_invalid_names_are_refused(tmp_path, name):
    with SpeakerStore(tmp_path / "s.db") as store:
        with pytest.raises(InvalidNameError):
            store.add_enrollment(name, "fp:a", [rec(1)])


def test_a_failed_enrollment_leaves_the_store_unchanged(tmp_path):
    with SpeakerStore(tmp_path / "s.db") as store:
        store.add_enrollment("Alice", "fp:a", [rec(1)])
        before = store.voiceprint("Alice", "fp:a")
        bad = NewRecording(np.array([np.nan] * DIM, np.float32), 100, 100)
        with pytest.raises(ValueError, match="recording 2: embedding must be a finite"):
            store.add_enrollment("Alice", "fp:a", [rec(2), bad], replace=True)
        with pytest.raises(ValueError, match="at least one recording"):
            store.add_enrollment("Carol", "fp:a", [])
        after = store.voiceprint("Alice", "fp:a")
        np.testing.assert_array_equal(before.vector, after.vector)
        assert len(store.recordings("Alice")) == 1 and store.names() == ["Alice"]
        assert store.check() == []


def test_audio_round_trips_as_pcm16(tmp_path):
    with SpeakerStore(tmp_path / "s.db") as store:
        r = rec(7, audio=True)
        store.add_enrollment("Alice", "fp:a", [r, rec(8)])
        infos = store.recordings("Alice")
        assert [i.has_audio for i in infos] == [True, False]
        back = store.recording_audio(infos[0].recording_id)
        assert back.dtype == np.float32 and back.shape == r.audio.shape
        assert np.max(np.abs(back - r.audio)) <= 1 / 32767
        assert store.recording_audio(infos[1].recording_id) is None


def test_recompute_and_check_find_a_tampered_voiceprint(tmp_path):
    path = tmp_path / "s.db"
    with SpeakerStore(path) as store:
        store.add_enrollment("Alice", "fp:a", [rec(1), rec(2)])
        good = store.voiceprint("Alice", "fp:a").vector
    db = sqlite3.connect(path)
    db.execute("UPDATE voiceprints SET vector = ?", (unit(9).astype("<f4").tobytes(),))
    db.commit()
    db.close()
    with SpeakerStore(path) as store:
        assert any("differs" in p for p in store.check())
        assert store.recompute() == 1
        assert store.check() == []
        np.testing.assert_allclose(store.voiceprint("Alice", "fp:a").vector, good, atol=1e-6)


def test_files_that_are_not_stores_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a readable speaker store"):
        SpeakerStore(junk)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a speaker store"):
        SpeakerStore(other)
    with pytest.raises(StoreError, match="no speaker store at"):
        SpeakerStore(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="is a directory"):
        SpeakerStore(tmp_path)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    SpeakerStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        SpeakerStore(path)


def test_two_handles_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "s.db"
    with SpeakerStore(path) as a, SpeakerStore(path) as b:
        a.add_enrollment("Alice", "fp:a", [rec(1)])
        assert b.names() == ["Alice"]
        b.add_enrollment("Alice", "fp:a", [rec(2)])
        assert a.voiceprint("Alice", "fp:a").n_recordings == 2


def test_default_store_path_is_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert default_store_path() == tmp_path / "unispeech-live" / "speakers.sqlite3"
    assert default_store_path().name == "speakers.sqlite3"


# -- crash safety: SIGKILL a writer in the middle of its transaction ----------------------------

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from voiceprints.records import NewRecording
    from voiceprints.store import SpeakerStore

    path, name, replace, signal_at = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
    store = SpeakerStore(path)

    def recordings():
        rng = np.random.default_rng(0)
        for i in range(10 * signal_at):
            if i == signal_at:
                print("mid-transaction", flush=True)
                sys.stdin.read()  # blocks until the parent kills us
            v = rng.standard_normal(16).astype(np.float32)
            yield NewRecording(v / np.linalg.norm(v), 16000, 16000,
                               rng.uniform(-0.5, 0.5, 16000).astype(np.float32))

    store.add_enrollment(name, "fp:a", recordings(), replace=replace)
    print("committed", flush=True)
""")


def _kill_writer_mid_transaction(path: Path, name: str, replace: bool, signal_at: int = 200) -> int:
    """Run the writer until it says it is mid-transaction, SIGKILL it; return the WAL size then."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, "1" if replace else "0", str(signal_at)],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=60), "writer never reached the middle of its transaction"
        line = proc.stdout.readline().decode().strip()
        assert line == "mid-transaction", (line, proc.stderr.read().decode() if proc.poll() is not None else "")
        wal = Path(str(path) + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        return wal_bytes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


def test_killed_writer_leaves_a_readable_store_without_half_writes(tmp_path):
    path = tmp_path / "speakers.sqlite3"
    with SpeakerStore(path) as store:
        before = store.add_enrollment("Alice", "fp:a", [rec(1), rec(2)])
    # 200 recordings of 32 kB are more than SQLite's 2 MB page cache: they spill to the WAL,
    # so the kill lands after part of the transaction is on disk
    wal_bytes = _kill_writer_mid_transaction(path, "Bob", replace=False)
    assert wal_bytes > 2_000_000
    with SpeakerStore(path) as store:
        assert store.check() == []
        assert store.names() == ["Alice"]
        np.testing.assert_array_equal(store.voiceprint("Alice", "fp:a").vector, before.vector)
        assert len(store.recordings("Alice")) == 2
        # and the store still takes writes
        store.add_enrollment("Bob", "fp:a", [rec(3)])
        assert store.names() == ["Alice", "Bob"]


def test_killed_replace_keeps_the_old_voiceprint(tmp_path):
    path = tmp_path / "speakers.sqlite3"
    with SpeakerStore(path) as store:
        before = store.add_enrollment("Alice", "fp:a", [rec(1), rec(2), rec(3)])
    wal_bytes = _kill_writer_mid_transaction(path, "Alice", replace=True)
    assert wal_bytes > 2_000_000
    with SpeakerStore(path) as store:
        assert store.check() == []
        after = store.voiceprint("Alice", "fp:a")
        assert after.n_recordings == 3
        np.testing.assert_array_equal(after.vector, before.vector)
