"""Measure the engine's clustering threshold for an x-vector model on validation conversations.

    python -m training.tune_clustering --model models/embedded --corpus /work/runs/corpus [--conversations 10]

The engine names a speaker run by clustering its x-vector: a run joins the closest unknown cluster
when their cosine is at least the clustering threshold, else it starts a new `unknown-N`. The
verification threshold (`verification.json`, from 5 s enrollments against single clips) is the
wrong yardstick for this. Runs are embedded from 1-8 s of conversation speech, so their
same-speaker cosines sit lower, and a threshold that is too high splits one voice into several
clusters.

This tool builds conversations of 2-4 *validation* speakers (held out from training and from the
test conversations). It runs them through the streaming engine with the model's three heads at
each candidate threshold and scores DER (0.25 s collar, overlap scored). The threshold with the
lowest DER is written as `clustering.threshold` into `sv/verification.json`, which the engine
reads (`engine.calibration.Calibration.cluster_threshold`). Model outputs do not depend on the
threshold, so each window and embedding is computed once and reused for every candidate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from training.corpus import Corpus, CorpusSpec, make_conversations
from training.evaluate_stream import _run_stream, turn_segments
from training.scoring import DerResult, diarization_error

DEFAULT_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
VAL_SEED_TAG = 78  # the test conversations use 77


class CachedModels:
    """A `ModelSide` that remembers the outputs of `run_windows` and `embed` by input content."""

    def __init__(self, models) -> None:
        self._models = models
        self._windows: dict[tuple, object] = {}
        self._embeddings: dict[bytes, np.ndarray] = {}
        for name in ("heads", "shared", "vocab", "num_speakers", "fingerprint", "embedder", "sv_threshold"):
            setattr(self, name, getattr(models, name, None))
        self.sv_cluster_threshold = None  # the tool sets thresholds explicitly

    @staticmethod
    def _key(a: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest() + str(a.shape).encode()

    def run_windows(self, batch: np.ndarray, want: frozenset[str]):
        key = (self._key(batch), want)
        if key not in self._windows:
            self._windows[key] = self._models.run_windows(batch, want)
        return self._windows[key]

    def embed(self, samples: np.ndarray) -> np.ndarray:
        key = self._key(samples)
        if key not in self._embeddings:
            self._embeddings[key] = self._models.embed(samples)
        return self._embeddings[key]


def sweep(model_dir: Path, conversations: list, grid: tuple[float, ...], log=print) -> dict[float, DerResult]:
    """DER over `conversations` [(name, Mixture)] for each clustering threshold in `grid`."""
    from engine import Engine, EngineConfig
    from engine.config import SpeakerConfig
    from engine.torch_models import TorchModels

    models = CachedModels(TorchModels.load(asr=str(model_dir / "ctc"), diar=str(model_dir / "sd"),
                                           sv=str(model_dir / "sv")))
    results = {}
    for t in grid:
        t0 = time.monotonic()
        cfg = EngineConfig(speakers=SpeakerConfig(new_cluster_threshold=t, merge_threshold=min(1.0, t + 0.05)))
        engine = Engine(models, cfg, voiceprint_threshold=models.sv_threshold)
        total = DerResult(0, 0, 0, 0)
        for _, mix in conversations:
            hyp = turn_segments(_run_stream(engine.new_stream(), mix.audio.astype(np.float32)))
            total = total + diarization_error(mix.segments, hyp)
        results[t] = total
        log(f"[tune_clustering] threshold {t:.2f}: DER {total.der:.4f} (confusion "
            f"{total.confusion_s / max(total.scored_s, 1e-9):.4f}) {time.monotonic() - t0:.0f} s")
    return results


def best_threshold(results: dict[float, DerResult], verification: float) -> float:
    """Lowest DER; ties go to the threshold nearest the verification threshold."""
    return min(results, key=lambda t: (round(results[t].der, 6), abs(t - verification)))


def tune(model_dir: Path, corpus: Corpus, count: int = 10, grid: tuple[float, ...] = DEFAULT_GRID,
         log=print) -> dict:
    """Sweep, then write `clustering` into model_dir/sv/verification.json; returns what was written."""
    from engine.calibration import VERIFICATION_FILE, write_verification_json

    path = model_dir / "sv" / VERIFICATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibrate the verification threshold first (python -m engine.calibration)")
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = json.loads((corpus.root / "meta.json").read_text(encoding="utf-8"))
    spec = CorpusSpec(seed=int(meta["spec"]["seed"]), conversation_s=tuple(meta["spec"]["conversation_s"]))
    conversations = make_conversations(corpus, spec, "val", count, seed_tag=VAL_SEED_TAG)
    results = sweep(model_dir, conversations, grid, log)
    best = best_threshold(results, float(data["threshold"]))
    r = results[best]
    data["clustering"] = {
        "threshold": best,
        "der": round(r.der, 4),
        "confusion": round(r.confusion_s / max(r.scored_s, 1e-9), 4),
        "der_by_threshold": {f"{t:.2f}": round(v.der, 4) for t, v in results.items()},
        "conversations": len(conversations),
        "audio_s": round(sum(len(m.audio) for _, m in conversations) / 16000, 1),
        "split": "val",
        "collar_s": 0.25,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m training.tune_clustering --model {model_dir} --corpus {corpus.root} --conversations {count}",
    }
    write_verification_json(path, data)
    return data["clustering"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/embedded"), help="folder with ctc/, sd/, sv/")
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--conversations", type=int, default=10)
    args = parser.parse_args(argv)
    result = tune(args.model, Corpus(args.corpus), args.conversations)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
