"""The speaker store: enrolled people, their recordings' embeddings and voiceprints, in SQLite.

Embedding spaces differ per checkpoint, so every embedding and voiceprint carries the fingerprint
of the model that made it, and nothing is ever compared across fingerprints. Each enrollment's
recordings are kept (embedding, net-speech samples and, optionally, the audio as 16-bit PCM), so a
voiceprint can be added to, replaced, recomputed from its recordings, or re-embedded with a new
model. Every write is one `BEGIN IMMEDIATE ... COMMIT` transaction in WAL mode with
`synchronous=FULL`: a process killed mid-write leaves the store readable and holding exactly what
the last committed transaction left. Layout and versioning: docs/voiceprints.md.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.timebase import samples_to_seconds

SCHEMA_VERSION = 1
APPLICATION_ID = "unispeech-live speaker store"
MAX_NAME_CHARS = 100
_RESERVED_NAME = re.compile(r"unknown-\d+", re.IGNORECASE)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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


class VoiceprintError(Exception):
    """Base of every error the speaker store and the voiceprint service raise on purpose."""


class StoreError(VoiceprintError):
    """The store file is missing, not a speaker store, from a newer version, or damaged."""


class UnknownSpeakerError(VoiceprintError, LookupError):
    """No person of that name is enrolled."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = tuple(known)
        hint = f"enrolled: {', '.join(self.known)}" if self.known else "no one is enrolled"
        super().__init__(f"unknown speaker {name!r} ({hint})")

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class FingerprintMismatchError(VoiceprintError):
    """Voiceprints exist only for other models: embeddings of different checkpoints don't compare."""

    def __init__(self, name: str | None, stored: Iterable[str], current: str) -> None:
        self.name = name
        self.stored = tuple(stored)
        self.current = current
        who = f"{name!r} was" if name is not None else "the enrolled speakers were"
        super().__init__(
            f"{who} enrolled with model {', '.join(self.stored)}, but the current model is "
            f"{current}; embeddings of different checkpoints cannot be compared: enroll again "
            "with this model (or re-embed the stored enrollment audio)"
        )


class InvalidNameError(VoiceprintError, ValueError):
    """A person's name that the store refuses (empty, too long, control characters, reserved)."""


def validate_name(name: str) -> str:
    """The name, stripped, or InvalidNameError saying what is wrong with it."""
    if not isinstance(name, str):
        raise InvalidNameError(f"a speaker name must be a string, got {type(name).__name__}")
    clean = name.strip()
    if not clean:
        raise InvalidNameError("a speaker name must not be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise InvalidNameError(f"a speaker name has at most {MAX_NAME_CHARS} characters, got {len(clean)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        raise InvalidNameError(f"a speaker name must not contain control characters: {clean!r}")
    if _RESERVED_NAME.fullmatch(clean):
        raise InvalidNameError(f"{clean!r} is reserved for unenrolled speaker tracks; choose another name")
    return clean


@dataclass(frozen=True, slots=True)
class NewRecording:
    """One enrollment recording to store: its L2-normalised embedding and how much speech it held."""

    embedding: np.ndarray  # (dim,) float32
    num_samples: int
    net_speech_samples: int
    audio: np.ndarray | None = None  # float32 16 kHz, kept for re-embedding with another model


@dataclass(frozen=True, slots=True)
class Voiceprint:
    """A person's voiceprint for one model: the weighted mean of their recordings' embeddings."""

    name: str
    fingerprint: str
    vector: np.ndarray  # (dim,) float32, unit length
    n_recordings: int
    net_speech_samples: int
    updated_at: str

    @property
    def net_speech_s(self) -> float:
        return samples_to_seconds(self.net_speech_samples)


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """One stored recording of a person, without its audio."""

    recording_id: int
    enrollment_id: int
    position: int
    num_samples: int
    net_speech_samples: int
    has_audio: bool
    fingerprints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PersonInfo:
    """A summary row of `SpeakerStore.people()`."""

    name: str
    created_at: str
    n_recordings: int
    net_speech_samples: int
    fingerprints: tuple[str, ...]  # models this person has a voiceprint for

    @property
    def net_speech_s(self) -> float:
        return samples_to_seconds(self.net_speech_samples)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "created_at": self.created_at, "n_recordings": self.n_recordings,
                "net_speech_s": self.net_speech_s, "fingerprints": list(self.fingerprints)}


def mean_voiceprint(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unit-length weighted mean of unit-length embeddings `vectors` (n, dim) with `weights` (n,).

    Each embedding is normalised before averaging so that no recording dominates through its
    norm (which reflects level and length, not identity), then the mean is normalised so that
    scoring is a plain dot product (cosine similarity).
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or w.shape != (v.shape[0],):
        raise ValueError(f"need (n>0, dim) vectors and (n,) weights, got {v.shape} and {w.shape}")
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights must be non-negative with a positive sum")
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    mean = (w[:, None] * unit).sum(axis=0) / w.sum()
    norm = np.linalg.norm(mean)
    if norm < 1e-8:
        raise ValueError("the embeddings cancel out: their weighted mean has no direction")
    return (mean / norm).astype(np.float32)


def default_store_path() -> Path:
    """The per-user default location of the speaker store (XDG data dir, or the OS equivalent)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "unispeech-live" / "speakers.sqlite3"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _blob_vector(blob: bytes, dim: int, what: str) -> np.ndarray:
    if len(blob) != 4 * dim:
        raise StoreError(f"damaged store: {what} holds {len(blob)} bytes, expected {4 * dim}")
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _audio_blob(audio: np.ndarray) -> bytes:
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767)
    return pcm.astype("<i2").tobytes()


class SpeakerStore:
    """People, recordings, embeddings and voiceprints in one SQLite file (see module docstring).

    One connection, guarded by a lock, so the app may call it from executor threads. Several
    processes may open the same file (WAL; writers wait up to `timeout_s` for each other).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"no speaker store at {self.path}")
            self._create_private_file()
        elif self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a speaker store file")
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten with zeros
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"{self.path} is not a readable speaker store: {exc}") from exc
        except StoreError:
            self._close_quietly()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def _create_private_file(self) -> None:
        """Create the store file (and a missing folder) readable by its owner only: voices are personal.

        SQLite gives the -wal and -shm files the database file's permissions, so they are private too.
        """
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process created it first
        except OSError as exc:
            raise StoreError(f"cannot create the speaker store {self.path}: {exc.strerror or exc}") from None
        os.close(fd)

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._close_quietly()

    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            self._db.execute("PRAGMA journal_mode = WAL")
            with self.transaction():
                if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    return  # another process created it while we waited for the lock
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("application", APPLICATION_ID),
                     ("created_at", _now())],
                )
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a speaker store (no meta table)")
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION_ID:
            raise StoreError(f"{self.path} is not a speaker store (application={meta.get('application')!r})")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}; upgrade the program"
            )
        if version < 1:
            raise StoreError(f"{self.path} has an unknown schema version {meta.get('schema_version')!r}")
        # Future migrations from older versions go here, each in its own transaction.

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT around the block (ROLLBACK on any exception)."""
        with self._lock:
            if self._db is None:
                raise StoreError("the speaker store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._db is None:
                raise StoreError("the speaker store is closed")
            return self._db.execute(sql, params).fetchall()

    # -- lookups ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Enrolled names in alphabetical order (case-insensitive)."""
        return [r[0] for r in self._read("SELECT name FROM people ORDER BY name COLLATE NOCASE")]

    def _person_id(self, db: sqlite3.Connection, name: str) -> tuple[int, str]:
        row = db.execute("SELECT id, name FROM people WHERE name = ?", (name.strip(),)).fetchone()
        if row is None:
            raise UnknownSpeakerError(name, self.names())
        return row[0], row[1]

    def model_dim(self, fingerprint: str) -> int | None:
        """Embedding size recorded for `fingerprint`, or None if the store has never seen it."""
        rows = self._read("SELECT dim FROM models WHERE fingerprint = ?", (fingerprint,))
        return rows[0][0] if rows else None

    def models(self) -> dict[str, str]:
        """fingerprint -> description of every model the store holds embeddings for."""
        return dict(self._read("SELECT fingerprint, description FROM models ORDER BY first_seen"))

    def voiceprint(self, name: str, fingerprint: str) -> Voiceprint:
        """`name`'s voiceprint for the model `fingerprint`.

        UnknownSpeakerError if nobody has that name; FingerprintMismatchError (naming both
        fingerprints) if the person has voiceprints only for other models.
        """
        with self._lock:
            person_id, stored_name = self._person_id(self._db, name)
            rows = self._read(
                "SELECT v.fingerprint, v.vector, m.dim, v.n_recordings, v.net_speech_samples, v.updated_at "
                "FROM voiceprints v JOIN models m USING (fingerprint) WHERE v.person_id = ?",
                (person_id,),
            )
        for fp, blob, dim, n, speech, updated in rows:
            if fp == fingerprint:
                return Voiceprint(stored_name, fp, _blob_vector(blob, dim, f"voiceprint of {stored_name!r}"),
                                  n, speech, updated)
        raise FingerprintMismatchError(stored_name, [r[0] for r in rows], fingerprint)

    def voiceprints(self, fingerprint: str) -> list[Voiceprint]:
        """Every voiceprint made with the model `fingerprint`, by name."""
        rows = self._read(
            "SELECT p.name, v.vector, m.dim, v.n_recordings, v.net_speech_samples, v.updated_at "
            "FROM voiceprints v JOIN people p ON p.id = v.person_id JOIN models m USING (fingerprint) "
            "WHERE v.fingerprint = ? ORDER BY p.name COLLATE NOCASE",
            (fingerprint,),
        )
        return [Voiceprint(name, fingerprint, _blob_vector(blob, dim, f"voiceprint of {name!r}"), n, s, u)
                for name, blob, dim, n, s, u in rows]

    def people(self) -> list[PersonInfo]:
        """One summary per enrolled person, by name."""
        rows = self._read(
            "SELECT p.id, p.name, p.created_at, count(r.id), coalesce(sum(r.net_speech_samples), 0) "
            "FROM people p LEFT JOIN enrollments e ON e.person_id = p.id "
            "LEFT JOIN recordings r ON r.enrollment_id = e.id GROUP BY p.id ORDER BY p.name COLLATE NOCASE"
        )
        fps: dict[int, list[str]] = {}
        for pid, fp in self._read("SELECT person_id, fingerprint FROM voiceprints ORDER BY fingerprint"):
            fps.setdefault(pid, []).append(fp)
        return [PersonInfo(name, created, n, speech, tuple(fps.get(pid, ())))
                for pid, name, created, n, speech in rows]

    def recordings(self, name: str) -> list[RecordingInfo]:
        """`name`'s stored recordings, oldest first."""
        with self._lock:
            person_id, _ = self._person_id(self._db, name)
            rows = self._read(
                "SELECT r.id, r.enrollment_id, r.position, r.num_samples, r.net_speech_samples, "
                "r.audio_pcm16 IS NOT NULL FROM recordings r JOIN enrollments e ON e.id = r.enrollment_id "
                "WHERE e.person_id = ? ORDER BY r.id",
                (person_id,),
            )
            fps: dict[int, list[str]] = {}
            for rid, fp in self._read(
                "SELECT x.recording_id, x.fingerprint FROM embeddings x JOIN recordings r ON r.id = x.recording_id "
                "JOIN enrollments e ON e.id = r.enrollment_id WHERE e.person_id = ? ORDER BY x.fingerprint",
                (person_id,),
            ):
                fps.setdefault(rid, []).append(fp)
        return [RecordingInfo(rid, eid, pos, n, s, bool(a), tuple(fps.get(rid, ())))
                for rid, eid, pos, n, s, a in rows]

    def recording_audio(self, recording_id: int) -> np.ndarray | None:
        """The stored audio of a recording (float32, 16 kHz), or None if it was not kept."""
        rows = self._read("SELECT audio_pcm16 FROM recordings WHERE id = ?", (recording_id,))
        if not rows:
            raise StoreError(f"no recording with id {recording_id}")
        blob = rows[0][0]
        if blob is None:
            return None
        return (np.frombuffer(blob, dtype="<i2").astype(np.float32) / 32767.0).astype(np.float32)

    def embeddings(self, name: str, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim), net speech samples (n,)) of `name`'s recordings for `fingerprint`."""
        with self._lock:
            person_id, _ = self._person_id(self._db, name)
            return self._embeddings(self._db, person_id, fingerprint)

    def _embeddings(self, db: sqlite3.Connection, person_id: int, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        rows = db.execute(
            "SELECT x.vector, m.dim, r.net_speech_samples FROM embeddings x "
            "JOIN recordings r ON r.id = x.recording_id JOIN enrollments e ON e.id = r.enrollment_id "
            "JOIN models m ON m.fingerprint = x.fingerprint "
            "WHERE e.person_id = ? AND x.fingerprint = ? ORDER BY r.id",
            (person_id, fingerprint),
        ).fetchall()
        if not rows:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        vectors = np.stack([_blob_vector(b, d, f"embedding of recording (person {person_id})") for b, d, _ in rows])
        return vectors, np.array([s for _, _, s in rows], dtype=np.int64)

    # -- writes (each one transaction) -----------------------------------------------------

    def _register_model(self, db: sqlite3.Connection, fingerprint: str, dim: int, description: str) -> None:
        if not fingerprint:
            raise ValueError("a model fingerprint must be a non-empty string")
        row = db.execute("SELECT dim FROM models WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            db.execute("INSERT INTO models(fingerprint, dim, description, first_seen) VALUES (?, ?, ?, ?)",
                       (fingerprint, dim, description, _now()))
        elif row[0] != dim:
            raise ValueError(
                f"model {fingerprint} made {row[0]}-dimensional embeddings before, this one is {dim}-dimensional"
            )

    def _refresh_voiceprint(self, db: sqlite3.Connection, person_id: int, fingerprint: str) -> None:
        vectors, speech = self._embeddings(db, person_id, fingerprint)
        db.execute("DELETE FROM voiceprints WHERE person_id = ? AND fingerprint = ?", (person_id, fingerprint))
        if len(vectors) == 0:
            return
        weights = np.maximum(speech, 1).astype(np.float64)
        vp = mean_voiceprint(vectors, weights)
        db.execute(
            "INSERT INTO voiceprints(person_id, fingerprint, vector, n_recordings, net_speech_samples, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (person_id, fingerprint, _vector_blob(vp), len(vectors), int(speech.sum()), _now()),
        )

    def add_enrollment(
        self,
        name: str,
        fingerprint: str,
        recordings: Iterable[NewRecording],
        *,
        replace: bool = False,
        model_description: str = "",
    ) -> Voiceprint:
        """Store one enrollment of `name` (created if new) and return the updated voiceprint.

        Adds to the person's recordings, or with `replace` first deletes all of them (for every
        model). All of it is a single transaction: on any error, or if the process dies, the
        store is left exactly as before. `recordings` is consumed inside the transaction.
        """
        clean = validate_name(name)
        with self.transaction() as db:
            row = db.execute("SELECT id FROM people WHERE name = ?", (clean,)).fetchone()
            if row is None:
                person_id = db.execute("INSERT INTO people(name, created_at) VALUES (?, ?)",
                                       (clean, _now())).lastrowid
            else:
                person_id = row[0]
                if replace:
                    db.execute("DELETE FROM enrollments WHERE person_id = ?", (person_id,))
                    db.execute("DELETE FROM voiceprints WHERE person_id = ?", (person_id,))
            enrollment_id = db.execute("INSERT INTO enrollments(person_id, created_at) VALUES (?, ?)",
                                       (person_id, _now())).lastrowid
            count = 0
            for position, rec in enumerate(recordings):
                vector = np.asarray(rec.embedding, dtype=np.float32)
                if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
                    raise ValueError(f"recording {position + 1}: embedding must be a finite 1-D vector")
                if rec.net_speech_samples > rec.num_samples:
                    raise ValueError(f"recording {position + 1}: more speech than samples")
                self._register_model(db, fingerprint, vector.size, model_description)
                audio = None if rec.audio is None else _audio_blob(rec.audio)
                rid = db.execute(
                    "INSERT INTO recordings(enrollment_id, position, num_samples, net_speech_samples, audio_pcm16) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (enrollment_id, position, int(rec.num_samples), int(rec.net_speech_samples), audio),
                ).lastrowid
                db.execute("INSERT INTO embeddings(recording_id, fingerprint, vector) VALUES (?, ?, ?)",
                           (rid, fingerprint, _vector_blob(vector)))
                count += 1
            if count == 0:
                raise ValueError("an enrollment needs at least one recording")
            self._refresh_voiceprint(db, person_id, fingerprint)
        return self.voiceprint(clean, fingerprint)

    def add_embeddings(self, fingerprint: str, vectors: dict[int, np.ndarray], *, model_description: str = "") -> int:
        """Store embeddings of existing recordings (by id) for another model and update voiceprints.

        Used to re-embed kept enrollment audio with a new checkpoint. Returns how many people's
        voiceprints changed.
        """
        with self.transaction() as db:
            people: set[int] = set()
            for rid, vector in vectors.items():
                v = np.asarray(vector, dtype=np.float32)
                if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
                    raise ValueError(f"recording {rid}: embedding must be a finite 1-D vector")
                row = db.execute("SELECT e.person_id FROM recordings r JOIN enrollments e ON e.id = r.enrollment_id "
                                 "WHERE r.id = ?", (rid,)).fetchone()
                if row is None:
                    raise StoreError(f"no recording with id {rid}")
                self._register_model(db, fingerprint, v.size, model_description)
                db.execute("INSERT OR REPLACE INTO embeddings(recording_id, fingerprint, vector) VALUES (?, ?, ?)",
                           (rid, fingerprint, _vector_blob(v)))
                people.add(row[0])
            for person_id in people:
                self._refresh_voiceprint(db, person_id, fingerprint)
        return len(people)

    def remove(self, name: str) -> str:
        """Delete every trace of `name`: recordings, audio, embeddings, voiceprints; returns the stored name.

        The rows are deleted with `secure_delete` on (their bytes overwritten with zeros), then the
        file is rebuilt (VACUUM) and the write-ahead log checkpointed and truncated, so no copy of
        the deleted pages stays in the database file, its free pages or the WAL file. If another
        process holds the store open the checkpoint cannot finish: StoreError says so (the rows
        are deleted; run the removal again once the other process is done).
        """
        with self.transaction() as db:
            person_id, stored = self._person_id(db, name)
            db.execute("DELETE FROM people WHERE id = ?", (person_id,))
        self.wipe_free_space()
        return stored

    def wipe_free_space(self) -> None:
        """VACUUM, then checkpoint the WAL into the database file and truncate it to zero bytes."""
        with self._lock:
            if self._db is None:
                raise StoreError("the speaker store is closed")
            self._db.execute("VACUUM")
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreError(
                f"{self.path}: another process holds the store open, so deleted data may remain in its "
                "write-ahead log; run the removal again when that process has ended")

    def export(self, name: str) -> dict[str, object]:
        """Everything stored about `name`, for `speakers export`: metadata, vectors and kept audio.

        Returns {"name", "created_at", "recordings": [{..., "embeddings": {fp: vector},
        "audio": float32 array or None}], "voiceprints": [{"fingerprint", "dim", "model",
        "vector", "n_recordings", "net_speech_samples", "updated_at"}]}.
        """
        with self._lock:
            person_id, stored = self._person_id(self._db, name)
            created = self._read("SELECT created_at FROM people WHERE id = ?", (person_id,))[0][0]
            recordings = []
            for rec in self.recordings(stored):
                enrolled = self._read("SELECT created_at FROM enrollments WHERE id = ?", (rec.enrollment_id,))[0][0]
                vectors = {fp: _blob_vector(blob, dim, f"embedding of recording {rec.recording_id}")
                           for fp, blob, dim in self._read(
                               "SELECT x.fingerprint, x.vector, m.dim FROM embeddings x JOIN models m USING "
                               "(fingerprint) WHERE x.recording_id = ?", (rec.recording_id,))}
                recordings.append({
                    "recording_id": rec.recording_id, "enrollment_id": rec.enrollment_id,
                    "enrolled_at": enrolled, "num_samples": rec.num_samples,
                    "net_speech_samples": rec.net_speech_samples, "embeddings": vectors,
                    "audio": self.recording_audio(rec.recording_id) if rec.has_audio else None,
                })
            voiceprints = [
                {"fingerprint": fp, "dim": dim, "model": desc, "vector": _blob_vector(blob, dim, "voiceprint"),
                 "n_recordings": n, "net_speech_samples": speech, "updated_at": updated}
                for fp, dim, desc, blob, n, speech, updated in self._read(
                    "SELECT v.fingerprint, m.dim, m.description, v.vector, v.n_recordings, v.net_speech_samples, "
                    "v.updated_at FROM voiceprints v JOIN models m USING (fingerprint) WHERE v.person_id = ? "
                    "ORDER BY v.fingerprint", (person_id,))
            ]
        return {"name": stored, "created_at": created, "recordings": recordings, "voiceprints": voiceprints}

    def recompute(self) -> int:
        """Rebuild every voiceprint from the stored embeddings; returns how many there are now."""
        with self.transaction() as db:
            pairs = db.execute(
                "SELECT DISTINCT e.person_id, x.fingerprint FROM embeddings x "
                "JOIN recordings r ON r.id = x.recording_id JOIN enrollments e ON e.id = r.enrollment_id"
            ).fetchall()
            db.execute("DELETE FROM voiceprints")
            for person_id, fingerprint in pairs:
                self._refresh_voiceprint(db, person_id, fingerprint)
        return len(pairs)

    # -- health ----------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Problems found (empty when healthy): SQLite integrity, foreign keys, stale voiceprints."""
        problems: list[str] = []
        with self._lock:
            db = self._db
            problems += [f"integrity: {r[0]}" for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"foreign key: {r}" for r in db.execute("PRAGMA foreign_key_check")]
            for person_id, name, fp, blob, dim, n in db.execute(
                "SELECT v.person_id, p.name, v.fingerprint, v.vector, m.dim, v.n_recordings FROM voiceprints v "
                "JOIN people p ON p.id = v.person_id JOIN models m USING (fingerprint)"
            ).fetchall():
                vectors, speech = self._embeddings(db, person_id, fp)
                if len(vectors) != n:
                    problems.append(f"voiceprint of {name!r} ({fp}) counts {n} recordings, store has {len(vectors)}")
                    continue
                expected = mean_voiceprint(vectors, np.maximum(speech, 1))
                got = _blob_vector(blob, dim, f"voiceprint of {name!r}")
                if not np.allclose(got, expected, atol=1e-5):
                    problems.append(f"voiceprint of {name!r} ({fp}) differs from its recordings' mean")
            orphans = db.execute(
                "SELECT p.name FROM people p WHERE NOT EXISTS (SELECT 1 FROM voiceprints v WHERE v.person_id = p.id)"
            ).fetchall()
            problems += [f"{r[0]!r} has no voiceprint" for r in orphans]
        return problems


__all__ = [
    "APPLICATION_ID", "SCHEMA_VERSION", "FingerprintMismatchError", "InvalidNameError",
    "NewRecording", "PersonInfo", "RecordingInfo", "SpeakerStore", "StoreError", "UnknownSpeakerError",
    "Voiceprint", "VoiceprintError", "default_store_path", "mean_voiceprint", "validate_name",
]
