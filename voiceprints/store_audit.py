"""What `speakers export` copies out of the store, and the store's health check.

Both read the store's tables directly (they are the store's own helpers, kept apart from its
lookups and writes): `export_person` everything about one person, `check_store` the SQLite
integrity and whether every voiceprint is still the mean of its recordings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from voiceprints.records import mean_voiceprint
from voiceprints.store_schema import blob_vector

if TYPE_CHECKING:
    from voiceprints.store import SpeakerStore


def export_person(store: SpeakerStore, name: str) -> dict[str, object]:
    """Everything stored about `name`, for `speakers export`: metadata, vectors and kept audio.

    Returns {"name", "created_at", "recordings": [{..., "embeddings": {fp: vector},
    "audio": float32 array or None}], "voiceprints": [{"fingerprint", "dim", "model",
    "vector", "n_recordings", "net_speech_samples", "updated_at"}]}.
    """
    with store._lock:
        person_id, stored = store._person_id(store._db, name)
        created = store._read("SELECT created_at FROM people WHERE id = ?", (person_id,))[0][0]
        recordings = []
        for rec in store.recordings(stored):
            enrolled = store._read("SELECT created_at FROM enrollments WHERE id = ?", (rec.enrollment_id,))[0][0]
            vectors = {fp: blob_vector(blob, dim, f"embedding of recording {rec.recording_id}")
                       for fp, blob, dim in store._read(
                           "SELECT x.fingerprint, x.vector, m.dim FROM embeddings x JOIN models m USING "
                           "(fingerprint) WHERE x.recording_id = ?", (rec.recording_id,))}
            recordings.append({
                "recording_id": rec.recording_id, "enrollment_id": rec.enrollment_id,
                "enrolled_at": enrolled, "num_samples": rec.num_samples,
                "net_speech_samples": rec.net_speech_samples, "embeddings": vectors,
                "audio": store.recording_audio(rec.recording_id) if rec.has_audio else None,
            })
        voiceprints = [
            {"fingerprint": fp, "dim": dim, "model": desc, "vector": blob_vector(blob, dim, "voiceprint"),
             "n_recordings": n, "net_speech_samples": speech, "updated_at": updated}
            for fp, dim, desc, blob, n, speech, updated in store._read(
                "SELECT v.fingerprint, m.dim, m.description, v.vector, v.n_recordings, v.net_speech_samples, "
                "v.updated_at FROM voiceprints v JOIN models m USING (fingerprint) WHERE v.person_id = ? "
                "ORDER BY v.fingerprint", (person_id,))
        ]
    return {"name": stored, "created_at": created, "recordings": recordings, "voiceprints": voiceprints}


def check_store(store: SpeakerStore) -> list[str]:
    """Problems found (empty when healthy): SQLite integrity, foreign keys, stale voiceprints."""
    problems: list[str] = []
    with store._lock:
        db = store._db
        problems += [f"integrity: {r[0]}" for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r}" for r in db.execute("PRAGMA foreign_key_check")]
        for person_id, name, fp, blob, dim, n in db.execute(
            "SELECT v.person_id, p.name, v.fingerprint, v.vector, m.dim, v.n_recordings FROM voiceprints v "
            "JOIN people p ON p.id = v.person_id JOIN models m USING (fingerprint)"
        ).fetchall():
            vectors, speech = store._embeddings(db, person_id, fp)
            if len(vectors) != n:
                problems.append(f"voiceprint of {name!r} ({fp}) counts {n} recordings, store has {len(vectors)}")
                continue
            expected = mean_voiceprint(vectors, np.maximum(speech, 1))
            got = blob_vector(blob, dim, f"voiceprint of {name!r}")
            if not np.allclose(got, expected, atol=1e-5):
                problems.append(f"voiceprint of {name!r} ({fp}) differs from its recordings' mean")
        orphans = db.execute(
            "SELECT p.name FROM people p WHERE NOT EXISTS (SELECT 1 FROM voiceprints v WHERE v.person_id = p.id)"
        ).fetchall()
        problems += [f"{r[0]!r} has no voiceprint" for r in orphans]
    return problems


__all__ = ["check_store", "export_person"]
