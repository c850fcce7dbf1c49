"""The speaker store: enrolled people, their recordings' embeddings and voiceprints, in SQLite.

Embedding spaces differ per checkpoint, so every embedding and voiceprint carries the fingerprint
of the model that made it, and nothing is ever compared across fingerprints. Each enrollment's
recordings are kept (embedding, net-speech samples and, optionally, the audio as 16-bit PCM), so a
voiceprint can be added to, replaced, recomputed from its recordings, or re-embedded with a new
model. Every write is one `BEGIN IMMEDIATE ... COMMIT` transaction in WAL mode with
`synchronous=FULL`: a process killed mid-write leaves the store readable and holding exactly what
the last committed transaction left. The file's layout: `voiceprints.store_schema`;
`speakers export` and the health check: `voiceprints.store_audit`; docs/voiceprints.md.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from voiceprints.errors import FingerprintMismatchError, StoreError, UnknownSpeakerError
from voiceprints.records import NewRecording, PersonInfo, RecordingInfo, Voiceprint, mean_voiceprint, validate_name
from voiceprints.store_audit import check_store, export_person
from voiceprints.store_schema import (
    audio_blob,
    blob_audio,
    blob_vector,
    check_schema,
    connect,
    create_private_file,
    now,
    vector_blob,
)


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
            create_private_file(self.path)
        elif self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a speaker store file")
        self._lock = threading.RLock()
        try:
            self._db = connect(self.path, timeout_s)
            check_schema(self._db, self.path, self.transaction)
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"{self.path} is not a readable speaker store: {exc}") from exc
        except StoreError:
            self._close_quietly()
            raise

    # -- lifecycle -------------------------------------------------------------------------

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
                return Voiceprint(stored_name, fp, blob_vector(blob, dim, f"voiceprint of {stored_name!r}"),
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
        return [Voiceprint(name, fingerprint, blob_vector(blob, dim, f"voiceprint of {name!r}"), n, s, u)
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
        return None if blob is None else blob_audio(blob)

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
        vectors = np.stack([blob_vector(b, d, f"embedding of recording (person {person_id})") for b, d, _ in rows])
        return vectors, np.array([s for _, _, s in rows], dtype=np.int64)

    # -- writes (each one transaction) -----------------------------------------------------

    def _register_model(self, db: sqlite3.Connection, fingerprint: str, dim: int, description: str) -> None:
        if not fingerprint:
            raise ValueError("a model fingerprint must be a non-empty string")
        row = db.execute("SELECT dim FROM models WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            db.execute("INSERT INTO models(fingerprint, dim, description, first_seen) VALUES (?, ?, ?, ?)",
                       (fingerprint, dim, description, now()))
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
            (person_id, fingerprint, vector_blob(vp), len(vectors), int(speech.sum()), now()),
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
                                       (clean, now())).lastrowid
            else:
                person_id = row[0]
                if replace:
                    db.execute("DELETE FROM enrollments WHERE person_id = ?", (person_id,))
                    db.execute("DELETE FROM voiceprints WHERE person_id = ?", (person_id,))
            enrollment_id = db.execute("INSERT INTO enrollments(person_id, created_at) VALUES (?, ?)",
                                       (person_id, now())).lastrowid
            count = 0
            for position, rec in enumerate(recordings):
                vector = np.asarray(rec.embedding, dtype=np.float32)
                if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
                    raise ValueError(f"recording {position + 1}: embedding must be a finite 1-D vector")
                if rec.net_speech_samples > rec.num_samples:
                    raise ValueError(f"recording {position + 1}: more speech than samples")
                self._register_model(db, fingerprint, vector.size, model_description)
                audio = None if rec.audio is None else audio_blob(rec.audio)
                rid = db.execute(
                    "INSERT INTO recordings(enrollment_id, position, num_samples, net_speech_samples, audio_pcm16) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (enrollment_id, position, int(rec.num_samples), int(rec.net_speech_samples), audio),
                ).lastrowid
                db.execute("INSERT INTO embeddings(recording_id, fingerprint, vector) VALUES (?, ?, ?)",
                           (rid, fingerprint, vector_blob(vector)))
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
                           (rid, fingerprint, vector_blob(v)))
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

    # -- export and health (voiceprints.store_audit) ------------------------------------------

    def export(self, name: str) -> dict[str, object]:
        """Everything stored about `name`, for `speakers export` (see `store_audit.export_person`)."""
        return export_person(self, name)

    def check(self) -> list[str]:
        """Problems found (empty when healthy): see `store_audit.check_store`."""
        return check_store(self)


__all__ = ["SpeakerStore"]
