"""Who is this voice: incremental cosine clustering of x-vectors, seeded by enrolled voiceprints.

An enrolled person is named from the first embedding that matches their voiceprint; other voices
become `unknown-1`, `unknown-2`, ...; unknown clusters that come too close merge (unless they were
heard at the same time: a cannot-link). Shared by both speaker trackers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.config import SpeakerConfig
from engine.events import SpeakerMatch


@dataclass(slots=True)
class Cluster:
    """A speaker identity: enrolled (fixed voiceprint) or unknown (running centroid)."""

    label: str
    centroid: np.ndarray
    enrolled: bool
    count: int = 1
    audio: list[np.ndarray] = field(default_factory=list)
    audio_samples: int = 0


def unit_vector(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("speaker embedding is zero or not finite")
    return v / n


class SpeakerClusters:
    """Incremental cosine clustering of run embeddings, seeded by enrolled voiceprints."""

    def __init__(self, cfg: SpeakerConfig, enrolled: dict[str, np.ndarray] | None = None,
                 enrolled_threshold: float = 0.5, max_clusters: int = 64,
                 thresholds: tuple[float, float] | None = None) -> None:
        """`thresholds`: (new, merge) cosines overriding those of `cfg` (span tracking uses its own)."""
        self.cfg = cfg
        self.enrolled_threshold = enrolled_threshold
        self.new_threshold = cfg.new_cluster_threshold if cfg.new_cluster_threshold is not None else enrolled_threshold
        self.merge_threshold = cfg.merge_threshold if cfg.merge_threshold is not None else min(1.0, enrolled_threshold + 0.05)
        if thresholds is not None:
            self.new_threshold, self.merge_threshold = thresholds
        self.max_clusters = max_clusters
        self.clusters: list[Cluster] = []
        self._next_unknown = 1
        self._cannot: set[frozenset[str]] = set()  # label pairs heard at the same time: never merged
        for name, vec in (enrolled or {}).items():
            self.add_voiceprint(name, vec)

    def add_voiceprint(self, name: str, vector: np.ndarray) -> None:
        """Seed (or replace) an enrolled identity."""
        self.clusters = [c for c in self.clusters if c.label != name]
        self.clusters.append(Cluster(name, unit_vector(vector), enrolled=True))

    def find(self, label: str) -> Cluster | None:
        return next((c for c in self.clusters if c.label == label), None)

    def fits(self, embedding: np.ndarray) -> bool:
        """Would `assign` put this embedding into an existing cluster (no new voice)?"""
        e = unit_vector(embedding)
        return any(float(c.centroid @ e) >= (self.enrolled_threshold if c.enrolled else self.new_threshold)
                   for c in self.clusters)

    def cannot_link(self, a: str, b: str) -> None:
        """`a` and `b` spoke at the same time: they are two people and are never merged."""
        if a != b:
            self._cannot.add(frozenset((a, b)))

    def assign(self, embedding: np.ndarray, may_open: bool = True) -> tuple[Cluster | None, SpeakerMatch, dict[str, str]]:
        """Name an embedding; returns its cluster, the match event and labels merged away.

        With `may_open` False (too little evidence for a new person) an embedding that matches no
        cluster joins the closest unknown one, or gets no cluster (None) when there is none.
        """
        e = unit_vector(embedding)
        enrolled = [(c, float(c.centroid @ e)) for c in self.clusters if c.enrolled]
        unknown = [(c, float(c.centroid @ e)) for c in self.clusters if not c.enrolled]
        enrolled.sort(key=lambda cs: -cs[1])
        unknown.sort(key=lambda cs: -cs[1])
        candidates = tuple((c.label, round(s, 4)) for c, s in enrolled[:3])
        best_score = enrolled[0][1] if enrolled else 0.0
        if enrolled and best_score >= self.enrolled_threshold:
            cluster = enrolled[0][0]
        elif unknown and (unknown[0][1] >= self.new_threshold or len(self.clusters) >= self.max_clusters or not may_open):
            cluster = unknown[0][0]
            if unknown[0][1] >= self.new_threshold or may_open:  # a weak match does not move the centroid
                m = self.cfg.centroid_momentum
                cluster.centroid = unit_vector(m * cluster.centroid + (1 - m) * e)
                cluster.count += 1
        elif not may_open:
            return None, SpeakerMatch(track="unknown", name=None, score=round(best_score, 4),
                                      threshold=self.enrolled_threshold, accepted=False, candidates=candidates), {}
        else:
            cluster = Cluster(f"unknown-{self._next_unknown}", e, enrolled=False)
            self._next_unknown += 1
            self.clusters.append(cluster)
        match = SpeakerMatch(
            track=cluster.label,
            name=cluster.label if cluster.enrolled else None,
            score=round(best_score, 4),
            threshold=self.enrolled_threshold,
            accepted=cluster.enrolled,
            candidates=candidates,
        )
        return cluster, match, self._merge_from(cluster)

    def _merge_from(self, cluster: Cluster) -> dict[str, str]:
        """Merge unknown clusters that came too close to `cluster`; old label -> new label."""
        if cluster.enrolled:
            return {}
        for other in self.clusters:
            if other is cluster or frozenset((other.label, cluster.label)) in self._cannot:
                continue
            sim = float(other.centroid @ cluster.centroid)
            limit = self.enrolled_threshold if other.enrolled else self.merge_threshold
            if sim >= limit:
                # keep the enrolled one, else the older (lower number) one
                older = self.clusters.index(other) < self.clusters.index(cluster)
                keep, drop = (other, cluster) if other.enrolled or older else (cluster, other)
                if not keep.enrolled:
                    keep.centroid = unit_vector(keep.count * keep.centroid + drop.count * drop.centroid)
                keep.count += drop.count
                self.add_audio(keep, *drop.audio)
                self.clusters.remove(drop)
                self._relink(drop.label, keep.label)
                return {drop.label: keep.label}
        return {}

    def _relink(self, old: str, new: str) -> None:
        """Cannot-links of a label that is merged or renamed move to its new label."""
        for pair in [p for p in self._cannot if old in p]:
            self._cannot.discard(pair)
            (other,) = pair - {old}
            self.cannot_link(other, new)

    def add_audio(self, cluster: Cluster, *pieces: np.ndarray) -> None:
        """Keep the most recent `cluster_audio_samples` of a cluster's clean speech."""
        for p in pieces:
            cluster.audio.append(p)
            cluster.audio_samples += len(p)
        while cluster.audio and cluster.audio_samples - len(cluster.audio[0]) >= self.cfg.cluster_audio_samples:
            cluster.audio_samples -= len(cluster.audio.pop(0))

    def rename(self, old: str, new: str, vector: np.ndarray | None = None) -> dict[str, str]:
        """Rename a cluster (e.g. after enrolling it); merges into `new` if that exists."""
        c = self.find(old)
        if c is None:
            raise KeyError(f"no speaker {old!r} (known: {[k.label for k in self.clusters]})")
        target = self.find(new)
        if target is not None and target is not c:
            target.count += c.count
            self.add_audio(target, *c.audio)
            self.clusters.remove(c)
            self._relink(old, new)
        else:
            self._relink(old, new)
            c.label = new
            c.enrolled = True
            if vector is not None:
                c.centroid = unit_vector(vector)
        return {old: new}
