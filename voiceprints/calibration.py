"""`verification.json`: a checkpoint's measured verification threshold, read and written.

A threshold on a cosine score means nothing until it is measured for the checkpoint that makes the
embeddings. `voiceprints.trials` scores labelled clips; `measure` turns the scores into the
file's content (equal error rate and its threshold, thresholds at chosen false-accept rates);
`load_calibration` reads it back for `XVectorEmbedder` as an `engine.calibration.Calibration`.
The command line is `python -m voiceprints.calibrate`; the format is in docs/voiceprints.md.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.calibration import Calibration
from engine.scoring import equal_error_rate, threshold_at_far

if TYPE_CHECKING:
    from voiceprints.trials import TrialScores

VERIFICATION_FILE = "verification.json"
FORMAT_NAME = "unispeech-live verification calibration"
FORMAT_VERSION = 1
SCORING = "cosine of L2-normalised embeddings; voiceprint = speech-weighted mean of unit per-recording embeddings"


def load_calibration(model_dir: str | os.PathLike[str], fingerprint: str) -> Calibration:
    """The calibration in `model_dir/verification.json` if it was measured for `fingerprint`.

    Missing file, or one measured for other weights: the uncalibrated fallback with a note saying
    why. A file that is present but malformed is an error (ValueError naming the problem).
    """
    path = Path(model_dir) / VERIFICATION_FILE
    if not path.is_file():
        return Calibration.fallback(f"no {VERIFICATION_FILE} in {model_dir}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{path}: 'threshold' must be a finite number, got {threshold!r}")
    measured_for = data.get("fingerprint")
    if not isinstance(measured_for, str):
        raise ValueError(f"{path}: 'fingerprint' must be a string, got {measured_for!r}")
    if measured_for != fingerprint:
        return Calibration.fallback(
            f"{path} was measured for model {measured_for}, but the checkpoint is {fingerprint}; "
            "run python -m voiceprints.calibrate again"
        )
    eer = data.get("eer")
    clustering = data.get("clustering")
    cluster_threshold = change_threshold = None
    if clustering is not None:
        value = clustering.get("threshold") if isinstance(clustering, dict) else None
        if not _is_cosine(value):
            raise ValueError(f"{path}: 'clustering.threshold' must be a number in [-1, 1], got {value!r}")
        cluster_threshold = float(value)
        change = clustering.get("change_threshold")
        if change is not None and not _is_cosine(change):
            raise ValueError(f"{path}: 'clustering.change_threshold' must be null or a number in [-1, 1], got {change!r}")
        change_threshold = None if change is None else float(change)
    return Calibration(
        threshold=float(threshold),
        calibrated=True,
        operating_point=str(data.get("operating_point", "eer")),
        fingerprint=measured_for,
        eer=float(eer) if isinstance(eer, (int, float)) else None,
        n_target=int(data.get("n_target", 0)),
        n_impostor=int(data.get("n_impostor", 0)),
        note=str(path),
        cluster_threshold=cluster_threshold,
        change_threshold=change_threshold,
    )


def _is_cosine(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and -1.0 <= value <= 1.0


def _summary(scores: np.ndarray) -> dict[str, float]:
    p = np.percentile(scores, [5, 50, 95])
    return {"mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
            "p5": float(p[0]), "p50": float(p[1]), "p95": float(p[2]), "max": float(scores.max())}



def measure(scores: TrialScores, fingerprint: str, *, fars: tuple[float, ...] = (0.01, 0.001),
            operating_point: str = "eer", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verification.json content for `scores` (see docs/voiceprints.md for every field)."""
    eer, eer_threshold = equal_error_rate(scores.target, scores.impostor)
    far_points = [threshold_at_far(scores.target, scores.impostor, f) for f in fars]
    if operating_point == "eer":
        threshold = eer_threshold
    elif operating_point.startswith("far="):
        wanted = float(operating_point[4:])
        matches = [p for p in far_points if p["far"] == wanted]
        threshold = (matches[0] if matches else threshold_at_far(scores.target, scores.impostor, wanted))["threshold"]
    else:
        raise ValueError(f"operating point must be 'eer' or 'far=X', got {operating_point!r}")
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "threshold": threshold,
        "operating_point": operating_point,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "far_thresholds": far_points,
        "n_target": int(scores.target.size),
        "n_impostor": int(scores.impostor.size),
        "n_speakers": scores.n_speakers,
        "n_clips": scores.n_clips,
        "target_scores": _summary(scores.target),
        "impostor_scores": _summary(scores.impostor),
        "measured": {"protocol": scores.protocol, "scoring": SCORING, "skipped_clips": list(scores.skipped),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra or {})},
    }


def write_verification_json(path: str | os.PathLike[str], content: dict[str, Any]) -> None:
    """Write `content` to `path` atomically (a temporary file beside it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)



__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SCORING", "VERIFICATION_FILE", "load_calibration", "measure",
           "write_verification_json"]
