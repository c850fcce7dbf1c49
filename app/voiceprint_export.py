"""`speakers export NAME`: everything the store holds about one person, as a private folder.

The folder (mode 0700; every file 0600, since voices are personal data) holds `person.json`
(name, dates, each recording's speech and embeddings per model, each voiceprint with its model)
and `audio/recording-<id>.wav`, the kept enrollment audio as 16 kHz 16-bit PCM. Vectors are
written as JSON lists of floats, so the export reads without this program.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from app.errors import AppError
from engine.timebase import SAMPLE_RATE, samples_to_seconds


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "speaker"


def _private_write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def export_person(store: Any, name: str, folder: str | None = None) -> tuple[str, str]:
    """Write `name`'s data into `folder` (default ./<NAME>-voiceprint, which must not exist yet).

    Returns (the name as stored, the folder's absolute path).
    """
    import soundfile as sf

    data = store.export(name)
    target = os.path.abspath(folder or f"{_safe(str(data['name']))}-voiceprint")
    if os.path.exists(target):
        raise AppError(f"{target} already exists: give a new folder with --to DIR")
    try:
        os.makedirs(target, mode=0o700)
        os.chmod(target, 0o700)  # makedirs' mode is masked by the umask
        os.mkdir(os.path.join(target, "audio"), mode=0o700)
    except OSError as exc:
        raise AppError(f"cannot create {target}: {exc.strerror or exc}") from None
    recordings = []
    for rec in data["recordings"]:
        audio_file = None
        if rec["audio"] is not None:
            audio_file = f"audio/recording-{rec['recording_id']}.wav"
            path = os.path.join(target, audio_file)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            sf.write(path, np.asarray(rec["audio"], dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
        recordings.append({
            "recording_id": rec["recording_id"], "enrollment_id": rec["enrollment_id"],
            "enrolled_at": rec["enrolled_at"], "duration_s": samples_to_seconds(rec["num_samples"]),
            "net_speech_s": samples_to_seconds(rec["net_speech_samples"]), "audio": audio_file,
            "embeddings": {fp: [float(x) for x in v] for fp, v in rec["embeddings"].items()},
        })
    voiceprints = [{
        "fingerprint": vp["fingerprint"], "model": vp["model"], "dim": vp["dim"],
        "n_recordings": vp["n_recordings"], "net_speech_s": samples_to_seconds(vp["net_speech_samples"]),
        "updated_at": vp["updated_at"], "vector": [float(x) for x in vp["vector"]],
    } for vp in data["voiceprints"]]
    person = {"format": "unispeech-live voiceprint export 1", "name": data["name"],
              "created_at": data["created_at"], "sample_rate": SAMPLE_RATE,
              "scoring": "cosine similarity of unit vectors; compare only vectors of one fingerprint",
              "voiceprints": voiceprints, "recordings": recordings}
    _private_write(os.path.join(target, "person.json"), json.dumps(person, indent=1, ensure_ascii=False) + "\n")
    return str(data["name"]), target
