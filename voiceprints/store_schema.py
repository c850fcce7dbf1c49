"""The speaker store's SQLite file: its layout and versions, where it lives, how it is created and opened,
and how vectors and audio are encoded in it.

Vectors are little-endian float32 blobs, audio 16-bit PCM at 16 kHz. The layout and versioning rules
are in docs/voiceprints.md; a store made by an older version of this program is opened as it is
(migrations from older schema versions would go in `check_schema`).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from voiceprints.errors import StoreError

SCHEMA_VERSION = 1
APPLICATION_ID = "unispeech-live speaker store"

SCHEMA = """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    fingerprint TEXT PRIMARY KEY,
    dim INTEGER NOT NULL CHECK (dim > 0),
    description TEXT NOT NULL DEFAULT '',
    first_seen TEXT NOT NULL
);
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL
);
CREATE TABLE enrollments (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY,
    enrollment_id INTEGER NOT NULL REFERENCES enrollments(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    num_samples INTEGER NOT NULL CHECK (num_samples >= 0),
    net_speech_samples INTEGER NOT NULL CHECK (net_speech_samples >= 0),
    audio_pcm16 BLOB
);
CREATE TABLE embeddings (
    recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL REFERENCES models(fingerprint),
    vector BLOB NOT NULL,
    PRIMARY KEY (recording_id, fingerprint)
);
CREATE TABLE voiceprints (
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL REFERENCES models(fingerprint),
    vector BLOB NOT NULL,
    n_recordings INTEGER NOT NULL,
    net_speech_samples INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (person_id, fingerprint)
);
CREATE INDEX enrollments_person ON enrollments(person_id);
CREATE INDEX recordings_enrollment ON recordings(enrollment_id);
"""


def default_store_path() -> Path:
    """The per-user default location of the speaker store (XDG data dir, or the OS equivalent)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "unispeech-live" / "speakers.sqlite3"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_vector(blob: bytes, dim: int, what: str) -> np.ndarray:
    if len(blob) != 4 * dim:
        raise StoreError(f"damaged store: {what} holds {len(blob)} bytes, expected {4 * dim}")
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def audio_blob(audio: np.ndarray) -> bytes:
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767)
    return pcm.astype("<i2").tobytes()


def blob_audio(blob: bytes) -> np.ndarray:
    """Stored 16-bit PCM back to float32 samples."""
    return (np.frombuffer(blob, dtype="<i2").astype(np.float32) / 32767.0).astype(np.float32)


def create_private_file(path: Path) -> None:
    """Create the store file (and a missing folder) readable by its owner only: voices are personal.

    SQLite gives the -wal and -shm files the database file's permissions, so they are private too.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first
    except OSError as exc:
        raise StoreError(f"cannot create the speaker store {path}: {exc.strerror or exc}") from None
    os.close(fd)


def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """An autocommit connection with foreign keys, full sync and secure delete on."""
    db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten with zeros
    return db


def check_schema(db: sqlite3.Connection, path: Path,
                 transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
    """Create the tables in an empty file, else check that the file is a store this program reads.

    StoreError when it is another SQLite file, another application's, or a newer schema version.
    """
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        db.execute("PRAGMA journal_mode = WAL")
        with transaction():
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return  # another process created it while we waited for the lock
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("application", APPLICATION_ID),
                 ("created_at", now())],
            )
        return
    if "meta" not in tables:
        raise StoreError(f"{path} is an SQLite file but not a speaker store (no meta table)")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("application") != APPLICATION_ID:
        raise StoreError(f"{path} is not a speaker store (application={meta.get('application')!r})")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this program's "
            f"{SCHEMA_VERSION}; upgrade the program"
        )
    if version < 1:
        raise StoreError(f"{path} has an unknown schema version {meta.get('schema_version')!r}")
    # Future migrations from older versions go here, each in its own transaction.


__all__ = ["APPLICATION_ID", "SCHEMA", "SCHEMA_VERSION", "audio_blob", "blob_audio", "blob_vector", "check_schema",
           "connect", "create_private_file", "default_store_path", "now", "vector_blob"]
