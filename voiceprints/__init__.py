"""Voiceprints: the speaker store, enrollment and verification, calibration, and the x-vector embedder.

Beside engine/ and models/: it uses the engine's speech detection and values and the models'
x-vector head, and the engine uses none of it. The app asks the service for the enrolled voices
as plain values (`VoiceprintService.enrolled()` -> `engine.enrolled.EnrolledVoices`) and hands
them to the engine, so the engine never touches the database.

    store.py, store_schema.py, store_audit.py   the SQLite speaker store (people, recordings, voiceprints)
    records.py, errors.py                       its values and every error, under VoiceprintError
    service.py, results.py                      enroll / verify / identify / remove / re-embed
    embedding.py, voice_mix.py                  one embedding per recording; the mixed-voice check
    xvector.py                                  the UniSpeech-SAT x-vector embedder and checkpoint fingerprints
    calibration.py, trials.py, calibrate.py     verification.json: measured thresholds (python -m voiceprints.calibrate)

The names below are importable from `voiceprints` itself; each is loaded with its module on first
use, so `import voiceprints` costs nothing (torch only comes with `XVectorEmbedder`'s module).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "SpeakerStore": "store", "default_store_path": "store_schema",
    "NewRecording": "records", "PersonInfo": "records", "RecordingInfo": "records", "Voiceprint": "records",
    "mean_voiceprint": "records", "validate_name": "records",
    "VoiceprintService": "service", "MIN_TRACK_ENROLL_SPEECH_S": "service",
    "Candidate": "results", "EnrollResult": "results", "RecordingCheck": "results", "Verification": "results",
    "Embedder": "embedding", "embed_recording": "embedding", "VoiceMix": "voice_mix", "voice_mix": "voice_mix",
    "XVectorEmbedder": "xvector", "checkpoint_fingerprint": "xvector",
    "load_calibration": "calibration", "score_trials": "trials",
    **{name: "errors" for name in (
        "FingerprintMismatchError", "InvalidAudioError", "InvalidNameError", "MixedVoicesError", "NameConflictError",
        "NotEnoughSpeechError", "OutliersError", "SameVoiceError", "StoreError", "UnknownSpeakerError",
        "VoiceprintError")},
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'voiceprints' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"voiceprints.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
