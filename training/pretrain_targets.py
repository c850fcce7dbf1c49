"""Cluster targets for masked prediction: k-means over MFCC frames (HuBERT's first iteration).

    python -m training.pretrain_targets --corpus /work/runs/corpus --out /work/runs/targets \
        [--clusters 100] [--percent 0.1] [--seed 0] [--splits train]

Three resumable stages, each skipped when its output exists, with progress on stdout:

1. `features.npy`: MFCC frames of a seeded `--percent` share of the training utterances;
2. `kmeans.npz`: scikit-learn's MiniBatchKMeans fitted on them (HuBERT's `learn_kmeans.py`
   settings: k-means++, batch 10000, 100 iterations, 20 inits, no reassignment), cluster centres
   saved as plain arrays (no pickle);
3. `{split}/shard_NNNNN.npy`: one label per MFCC frame (nearest centre, int16) for every utterance
   of each split, in shards of `--shard` utterances, so an interrupted run resumes at the shard.
   `targets.json` (written last) holds the settings and a SHA-256 of the labels.

MFCCs are Kaldi's (kaldi-native-fbank; HuBERT's `simple_kmeans/dump_mfcc_feature.py` computes the
same with torchaudio's Kaldi-compliance `mfcc(use_energy=False)`): 25 ms windows every 10 ms, 23
mel bins, 13 cepstra without energy, no dither, plus deltas and delta-deltas over 5 frames (39 dims). Labels are at 100 Hz; the objective takes
every second one for the 20 ms encoder frames (`ObjectiveConfig.targets_per_frame = 2`).
Everything is deterministic from `--seed`. Only the corpus' own splits are read: the real
recordings in ../shared/real/ never enter pre-training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.corpus import Corpus

LABEL_RATE_HZ = 100
MFCC_DIM = 39
_DELTA_WINDOW = 2  # frames each side: torchaudio.functional.compute_deltas' default win_length 5


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Settings of one target build (written to targets.json)."""

    clusters: int = 100  # HuBERT's first iteration used 100 clusters on MFCCs
    percent: float = 0.1  # share of training utterances the k-means is fitted on (HuBERT: 10 %)
    seed: int = 0
    batch_size: int = 10000
    max_iter: int = 100
    n_init: int = 20
    max_no_improvement: int = 100
    shard: int = 500

    def __post_init__(self) -> None:
        if self.clusters < 2:
            raise ValueError(f"clusters must be >= 2, got {self.clusters}")
        if not 0.0 < self.percent <= 1.0:
            raise ValueError(f"percent must be in (0, 1], got {self.percent}")


def mfcc_features(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(frames, 39) float32: 13 Kaldi MFCCs (no energy, no dither) + deltas + delta-deltas.

    Frames are 1 + (len - 400) // 160 (Kaldi's snip_edges); an input shorter than 400 samples
    gives none."""
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.use_energy = False
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(sample_rate, np.asarray(audio, dtype=np.float32))  # [-1, 1], as HuBERT passes it
    mfcc.input_finished()
    n = mfcc.num_frames_ready
    if n == 0:
        return np.zeros((0, MFCC_DIM), np.float32)
    ceps = np.stack([mfcc.get_frame(i) for i in range(n)]).astype(np.float32)
    d1 = deltas(ceps)
    return np.concatenate([ceps, d1, deltas(d1)], axis=1)


def deltas(x: np.ndarray, window: int = _DELTA_WINDOW) -> np.ndarray:
    """Regression deltas over time (frames, dims), edges replicated, as torchaudio's compute_deltas."""
    padded = np.pad(x, ((window, window), (0, 0)), mode="edge")
    n = len(x)
    num = sum(k * (padded[window + k:window + k + n] - padded[window - k:window - k + n]) for k in range(1, window + 1))
    return (num / (2 * sum(k * k for k in range(1, window + 1)))).astype(np.float32)


def label_frames(n_samples: int) -> int:
    """Number of 100 Hz labels (MFCC frames) of an utterance of `n_samples`."""
    return 0 if n_samples < 400 else 1 + (n_samples - 400) // 160


def nearest_centre(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row, int16."""
    d = (features ** 2).sum(1, keepdims=True) - 2 * features @ centres.T + (centres ** 2).sum(1)[None, :]
    return d.argmin(1).astype(np.int16)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


class TargetBuilder:
    """The three stages over one corpus and output folder."""

    def __init__(self, corpus: Corpus, out: Path, spec: TargetSpec, log=print) -> None:
        self.corpus, self.out, self.spec, self.log = corpus, out, spec, log
        out.mkdir(parents=True, exist_ok=True)
        # A resumed build must be of the same settings and the same corpus (a rebuilt corpus has
        # another fingerprint; stale features or labels would otherwise be reused silently).
        meta = corpus.root / "meta.json"
        fingerprint = json.loads(meta.read_text()).get("fingerprint") if meta.is_file() else None
        wanted = {**asdict(spec), "corpus_fingerprint": fingerprint}
        settings = out / "settings.json"
        if settings.exists():
            saved = json.loads(settings.read_text())
            if saved != wanted:
                raise ValueError(f"{out} was started with other settings or another corpus ({saved}); "
                                 "use another --out")
        else:
            settings.write_text(json.dumps(wanted, indent=1))

    def fit_subset(self) -> list[int]:
        rows = self.corpus.rows["train"]
        rng = np.random.default_rng(self.spec.seed)
        n = max(1, int(round(len(rows) * self.spec.percent)))
        return sorted(rng.choice(len(rows), n, replace=False).tolist())

    def features(self) -> np.ndarray:
        path = self.out / "features.npy"
        if path.exists():
            self.log(f"[targets] features: {path} exists, skipped")
            return np.load(path)
        subset = self.fit_subset()
        t0 = time.monotonic()
        parts = []
        for k, i in enumerate(subset, 1):
            parts.append(mfcc_features(self.corpus.audio("train", i)))
            if k % 200 == 0 or k == len(subset):
                self.log(f"[targets] features: {k}/{len(subset)} utterances, {time.monotonic() - t0:.0f} s")
        feats = np.concatenate(parts)
        _save_atomic(path, feats)
        return feats

    def centres(self) -> np.ndarray:
        path = self.out / "kmeans.npz"
        if path.exists():
            self.log(f"[targets] k-means: {path} exists, skipped")
            return np.load(path)["centres"]
        feats = self.features()
        from sklearn.cluster import MiniBatchKMeans

        s = self.spec
        self.log(f"[targets] k-means: {s.clusters} clusters on {len(feats)} frames ({s.n_init} inits)")
        t0 = time.monotonic()
        km = MiniBatchKMeans(n_clusters=s.clusters, init="k-means++", max_iter=s.max_iter, batch_size=s.batch_size,
                             tol=0.0, max_no_improvement=s.max_no_improvement, n_init=s.n_init,
                             reassignment_ratio=0.0, random_state=s.seed, compute_labels=False)
        km.fit(feats)
        inertia = float(-km.score(feats) / len(feats))
        self.log(f"[targets] k-means: done in {time.monotonic() - t0:.0f} s, mean squared distance {inertia:.2f}")
        tmp = self.out / "kmeans.tmp.npz"
        np.savez(tmp, centres=km.cluster_centers_.astype(np.float32), inertia=inertia)
        tmp.replace(path)
        return km.cluster_centers_.astype(np.float32)

    def labels(self, split: str, centres: np.ndarray) -> None:
        rows = self.corpus.rows[split]
        folder = self.out / split
        folder.mkdir(exist_ok=True)
        shards = range(0, len(rows), self.spec.shard)
        t0 = time.monotonic()
        for k, start in enumerate(shards):
            path = folder / f"shard_{k:05d}.npy"
            if path.exists():
                continue
            labs = []
            for i in range(start, min(start + self.spec.shard, len(rows))):
                lab = nearest_centre(mfcc_features(self.corpus.audio(split, i)), centres)
                if len(lab) != label_frames(rows[i]["length"]):
                    raise RuntimeError(f"{split} utterance {i}: {len(lab)} MFCC frames, expected "
                                       f"{label_frames(rows[i]['length'])}")
                labs.append(lab)
            _save_atomic(path, np.concatenate(labs) if labs else np.zeros(0, np.int16))
            self.log(f"[targets] labels {split}: shard {k + 1}/{len(shards)}, {time.monotonic() - t0:.0f} s")

    def run(self, splits: tuple[str, ...] = ("train",)) -> dict:
        centres = self.centres()
        for split in splits:
            self.labels(split, centres)
        h = hashlib.sha256()
        for split in splits:
            for path in sorted((self.out / split).glob("shard_*.npy")):
                h.update(np.load(path).tobytes())
        meta = {"spec": asdict(self.spec), "splits": list(splits), "label_rate_hz": LABEL_RATE_HZ,
                "corpus": str(self.corpus.root), "labels_sha256": h.hexdigest()}
        (self.out / "targets.json").write_text(json.dumps(meta, indent=1))
        return meta


def load_targets(out: Path | str, split: str, corpus: Corpus) -> list[np.ndarray]:
    """Per-utterance 100 Hz cluster labels of `split` (int64 arrays), checked against the corpus."""
    out = Path(out)
    meta_path = out / "targets.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no targets at {out} (build them with python -m training.pretrain_targets --out {out})")
    meta = json.loads(meta_path.read_text())
    if split not in meta["splits"]:
        raise ValueError(f"{out} has labels for {meta['splits']}, not {split!r}")
    flat = np.concatenate([np.load(p) for p in sorted((out / split).glob("shard_*.npy"))]).astype(np.int64)
    lengths = [label_frames(r["length"]) for r in corpus.rows[split]]
    if sum(lengths) != len(flat):
        raise ValueError(f"{out}/{split} holds {len(flat)} labels, the corpus needs {sum(lengths)}: "
                         "targets were built from another corpus")
    bounds = np.cumsum([0] + lengths)
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clusters", type=int, default=TargetSpec().clusters)
    parser.add_argument("--percent", type=float, default=TargetSpec().percent)
    parser.add_argument("--seed", type=int, default=TargetSpec().seed)
    parser.add_argument("--n-init", type=int, default=TargetSpec().n_init)
    parser.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val", "test"])
    args = parser.parse_args(argv)
    try:
        spec = TargetSpec(clusters=args.clusters, percent=args.percent, seed=args.seed, n_init=args.n_init)
        builder = TargetBuilder(Corpus(args.corpus), args.out, spec, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    meta = builder.run(tuple(args.splits))
    print(f"[targets] done: {args.out}/targets.json, labels sha256 {meta['labels_sha256'][:16]}")


if __name__ == "__main__":
    main()
