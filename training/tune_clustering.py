"""Measure the engine's clustering and speaker-change thresholds for an x-vector model on validation conversations.

    python -m training.tune_clustering --model models/embedded --corpus /work/runs/corpus [--conversations 20]
    python -m training.tune_clustering --model DIR --score-only --split test --seed-tag 79 --conversations 40

The engine names a speaker run by clustering its x-vector: a run joins the closest unknown cluster
when their cosine is at least the clustering threshold, else it starts a new `unknown-N`. The
verification threshold (`verification.json`, from 5 s enrollments against single clips) is the
wrong yardstick for this. Runs are embedded from 1-8 s of conversation speech, so their
same-speaker cosines sit lower, and a threshold that is too high splits one voice into several
clusters.

The speaker-change threshold splits a run when 1 s of its new speech, embedded on its own, has a
cosine to the run's x-vector below it. That catches one channel of the speaker-activity head
passing from one voice to the next without a pause.

This tool builds conversations of 2-4 *validation* speakers (held out from training and from the
test conversations). It runs them through the streaming engine with the model's three heads for
each pair of candidate thresholds and scores DER (0.25 s collar, overlap scored). The pair with the
lowest DER is written as `clustering.threshold` and `clustering.change_threshold` (null: no
splitting) into `sv/verification.json`, which the engine reads
(`engine.calibration.Calibration`). Model outputs do not depend on the thresholds, so each window
and embedding is computed once and reused for every candidate.
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

from training.corpus import Corpus, build_conversations
from training.evaluate_stream import _run_stream, turn_segments
from training.scoring import DerResult, diarization_error, oracle_named

DEFAULT_GRID = tuple(round(0.15 + 0.05 * i, 2) for i in range(16))  # 0.15 .. 0.90
CHANGE_GRID = (None, 0.2, 0.3, 0.4, 0.5)  # None: no splitting
VAL_SEED_TAG = 78  # the test conversations use 77


class CachedModels:
    """A `ModelSide` that remembers the outputs of `run_windows` and `embed` by input content."""

    def __init__(self, models) -> None:
        self._models = models
        self._windows: dict[tuple, object] = {}
        self._embeddings: dict[bytes, np.ndarray] = {}
        for name in ("heads", "shared", "vocab", "num_speakers", "fingerprint", "embedder", "sv_threshold",
                     "sv_cluster_threshold", "sv_change_threshold"):
            setattr(self, name, getattr(models, name, None))

    @staticmethod
    def _key(a: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest() + str(a.shape).encode()

    def run_windows(self, batch: np.ndarray, want: frozenset[str]):
        key = (self._key(batch), want)
        if key not in self._windows:
            self._windows[key] = self._models.run_windows(batch, want)
        return self._windows[key]

    def save(self, path: Path) -> None:
        """Keep the computed outputs in a file (a later run with the same models reuses them)."""
        import pickle

        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(pickle.dumps((self.fingerprint, self._windows, self._embeddings)))
        tmp.replace(path)

    def load(self, path: Path) -> None:
        """Reuse outputs saved by `save` for the same x-vector model (a trusted local file)."""
        import pickle

        if not path.is_file():
            return
        fingerprint, windows, embeddings = pickle.loads(path.read_bytes())
        if fingerprint == self.fingerprint:
            self._windows.update(windows)
            self._embeddings.update(embeddings)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        key = self._key(samples)
        if key not in self._embeddings:
            self._embeddings[key] = self._models.embed(samples)
        return self._embeddings[key]


Candidate = tuple[float, "float | None"]  # (clustering threshold, change threshold or None)


def sweep(model_dir: Path, conversations: list, grid: tuple[float, ...],
          change_grid: tuple[float | None, ...] = CHANGE_GRID, log=print) -> dict[Candidate, DerResult]:
    """DER over `conversations` [(name, Mixture)] for each (clustering, change) threshold pair."""
    from engine import Engine, EngineConfig
    from engine.config import SpeakerConfig
    from engine.torch_models import TorchModels

    models = CachedModels(TorchModels.load(asr=str(model_dir / "ctc"), diar=str(model_dir / "sd"),
                                           sv=str(model_dir / "sv")))
    results = {}
    for change in change_grid:
        for t in grid:
            t0 = time.monotonic()
            speakers = SpeakerConfig(new_cluster_threshold=t, merge_threshold=min(1.0, t + 0.05),
                                     change_threshold=-1.0 if change is None else change)
            engine = Engine(models, EngineConfig(speakers=speakers), voiceprint_threshold=models.sv_threshold)
            total = DerResult(0, 0, 0, 0)
            for _, mix in conversations:
                hyp = turn_segments(_run_stream(engine.new_stream(), mix.audio.astype(np.float32)))
                total = total + diarization_error(mix.segments, hyp)
            results[(t, change)] = total
            log(f"[tune_clustering] clustering {t:.2f}, change {change}: DER {total.der:.4f} (confusion "
                f"{total.confusion_s / max(total.scored_s, 1e-9):.4f}) {time.monotonic() - t0:.0f} s")
    return results


def der_seconds(total: DerResult) -> dict:
    """The error and scored seconds behind a DER, so DERs of several sets can be pooled."""
    return {"scored_s": round(total.scored_s, 3),
            "error_s": round(total.miss_s + total.false_alarm_s + total.confusion_s, 3)}


def score(model_dir: Path, conversations: list) -> dict:
    """Streaming DER of `conversations` with the model as the app runs it (its measured
    thresholds), and with every turn named after its majority reference speaker (segmentation only)."""
    from engine import Engine

    engine = Engine.from_checkpoints(asr=str(model_dir / "ctc"), diar=str(model_dir / "sd"), sv=str(model_dir / "sv"))
    total = named = DerResult(0, 0, 0, 0)
    for _, mix in conversations:
        hyp = turn_segments(_run_stream(engine.new_stream(), mix.audio.astype(np.float32)))
        total = total + diarization_error(mix.segments, hyp)
        named = named + diarization_error(mix.segments, oracle_named(mix.segments, hyp))
    speakers = engine.config.speakers
    return {"conversations": len(conversations), "der": round(total.der, 4),
            "confusion": round(total.confusion_s / max(total.scored_s, 1e-9), 4),
            **der_seconds(total),
            "der_turns_named_right": round(named.der, 4),
            "thresholds": {"clustering": speakers.new_cluster_threshold, "change": speakers.change_threshold}}


def best_threshold(results: dict[Candidate, DerResult], verification: float) -> Candidate:
    """Lowest DER; ties go to no splitting, then to the clustering threshold nearest the verification one."""
    return min(results, key=lambda c: (round(results[c].der, 6), c[1] is not None, abs(c[0] - verification)))


def tune(model_dir: Path, corpus: Corpus, count: int = 20, grid: tuple[float, ...] = DEFAULT_GRID,
         change_grid: tuple[float | None, ...] = CHANGE_GRID, log=print) -> dict:
    """Sweep, then write `clustering` into model_dir/sv/verification.json; returns what was written."""
    from voiceprints.calibration import VERIFICATION_FILE, write_verification_json
    from engine.config import SpeakerConfig

    path = model_dir / "sv" / VERIFICATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibrate the verification threshold first (python -m voiceprints.calibrate)")
    data = json.loads(path.read_text(encoding="utf-8"))
    conversations = build_conversations(corpus, "val", count, VAL_SEED_TAG)
    results = sweep(model_dir, conversations, grid, change_grid, log)
    best = best_threshold(results, float(data["threshold"]))
    r = results[best]
    no_split = min((c for c in results if c[1] is None), key=lambda c: results[c].der, default=None)
    data["clustering"] = {
        "threshold": best[0],
        "change_threshold": best[1],
        "change_check_samples": SpeakerConfig().change_check_samples,
        "der": round(r.der, 4),
        "confusion": round(r.confusion_s / max(r.scored_s, 1e-9), 4),
        "best_without_splitting": None if no_split is None else
        {"threshold": no_split[0], "der": round(results[no_split].der, 4)},
        "der_by_threshold": {f"{t:.2f}/{'off' if c is None else f'{c:.2f}'}": round(v.der, 4)
                             for (t, c), v in results.items()},
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
    parser.add_argument("--conversations", type=int, default=20,
                        help="validation conversations scored (more: steadier thresholds, a slower sweep)")
    parser.add_argument("--score-only", action="store_true",
                        help="write nothing: score the model at its measured thresholds (compare models)")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="speakers of --score-only")
    parser.add_argument("--seed-tag", type=int, default=VAL_SEED_TAG,
                        help=f"conversation seed of --score-only (tuning uses {VAL_SEED_TAG}; the corpus's "
                             "stored test conversations 77)")
    args = parser.parse_args(argv)
    if args.score_only:
        result = score(args.model, build_conversations(Corpus(args.corpus), args.split, args.conversations,
                                                       args.seed_tag))
    else:
        result = tune(args.model, Corpus(args.corpus), args.conversations)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
