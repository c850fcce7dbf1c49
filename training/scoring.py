"""Scorers: character/word error rate, diarization error rate, equal error rate.

DER is this project's own scorer (md-eval conventions): speaker time is scored on a 1 ms grid,
a collar (default 0.25 s) on each side of every reference segment boundary is not scored,
overlapped speech is scored, and reference and hypothesis speakers are mapped one-to-one to
maximise the overlapped time (exhaustive search; fine for the handful of speakers per recording).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from training.mixing import SAMPLE_RATE, Segment

MS_SAMPLES = SAMPLE_RATE // 1000


def edit_distance(ref: list[str] | str, hyp: list[str] | str) -> int:
    """Levenshtein distance between two sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def char_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus CER: character edits (spaces included) over reference characters."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("references are empty")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / total


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: word edits over reference words."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r.split()) for r in refs)
    if total == 0:
        raise ValueError("references are empty")
    return sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps)) / total


@dataclass(frozen=True, slots=True)
class DerResult:
    """Diarization error components in seconds of scored speaker time."""

    scored_s: float
    miss_s: float
    false_alarm_s: float
    confusion_s: float

    @property
    def der(self) -> float:
        return (self.miss_s + self.false_alarm_s + self.confusion_s) / self.scored_s if self.scored_s else 0.0

    def __add__(self, other: "DerResult") -> "DerResult":
        return DerResult(self.scored_s + other.scored_s, self.miss_s + other.miss_s,
                         self.false_alarm_s + other.false_alarm_s, self.confusion_s + other.confusion_s)


def _activity(segments: list[Segment], n: int) -> tuple[list[str], np.ndarray]:
    names = sorted({s.speaker for s in segments})
    act = np.zeros((len(names), n), dtype=bool)
    for s in segments:
        act[names.index(s.speaker), max(0, s.start // MS_SAMPLES):max(0, s.end // MS_SAMPLES)] = True
    return names, act


def oracle_named(reference: list[Segment], hypothesis: list[Segment]) -> list[Segment]:
    """`hypothesis` with every turn renamed to the reference speaker it overlaps most (turns that
    overlap no reference speech keep their name). Its DER is the part of the error that naming
    cannot fix: speech detection and turn boundaries, i.e. segmentation."""
    out = []
    for h in hypothesis:
        cover: dict[str, int] = {}
        for r in reference:
            ov = min(h.end, r.end) - max(h.start, r.start)
            if ov > 0:
                cover[r.speaker] = cover.get(r.speaker, 0) + ov
        name = max(sorted(cover), key=cover.__getitem__) if cover else h.speaker
        out.append(Segment(name, h.start, h.end))
    return out


def diarization_error(reference: list[Segment], hypothesis: list[Segment], collar_s: float = 0.25) -> DerResult:
    """DER components of `hypothesis` against `reference` (segments in samples)."""
    end = max([s.end for s in reference] + [s.end for s in hypothesis] + [0]) // MS_SAMPLES + 1
    _, ref = _activity(reference, end)
    _, hyp = _activity(hypothesis, end)
    scored = np.ones(end, dtype=bool)
    collar = int(round(collar_s * 1000))
    for s in reference:
        for b in (s.start // MS_SAMPLES, s.end // MS_SAMPLES):
            scored[max(0, b - collar):b + collar] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (R,H) jointly active ms
    best = 0
    if len(ref) and len(hyp):
        if len(hyp) >= len(ref):
            for perm in itertools.permutations(range(len(hyp)), len(ref)):
                best = max(best, sum(overlap[i, j] for i, j in enumerate(perm)))
        else:
            for perm in itertools.permutations(range(len(ref)), len(hyp)):
                best = max(best, sum(overlap[i, j] for j, i in enumerate(perm)))
    # md-eval: per frame, error = max(N_ref, N_hyp) - N_correct; split into miss/FA/confusion.
    total_ref = float(n_ref.sum())
    miss = float(np.maximum(n_ref - n_hyp, 0).sum())
    fa = float(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = float(np.minimum(n_ref, n_hyp).sum()) - best
    return DerResult(total_ref / 1000, miss / 1000, fa / 1000, confusion / 1000)


def equal_error_rate(target_scores: list[float] | np.ndarray, impostor_scores: list[float] | np.ndarray) -> tuple[float, float]:
    """Return (EER, threshold) where false acceptance and false rejection rates meet."""
    tgt = np.asarray(target_scores, dtype=np.float64)
    imp = np.asarray(impostor_scores, dtype=np.float64)
    if not len(tgt) or not len(imp):
        raise ValueError("need at least one target and one impostor score")
    thresholds = np.unique(np.concatenate([tgt, imp]))
    frr = np.array([(tgt < t).mean() for t in thresholds])
    far = np.array([(imp >= t).mean() for t in thresholds])
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2), float(thresholds[k])
