"""Scorers: diarization error rate (md-eval rules), word and character error rate, and the equal
error rate and operating points of speaker verification.

One implementation, shared by the real-recording evaluation (`app.evaluate_folder`), training's
evaluations and the benchmarks. Pure computation on values (RTTM is parsed from text), no I/O.

DER follows md-eval: speaker time is scored on a 1 ms grid; a collar (default 0.25 s) on each side
of every reference segment boundary is not scored; overlapped speech is scored; reference and
hypothesis speakers are mapped one-to-one to maximise the jointly active time (the assignment
problem, solved exactly with scipy's `linear_sum_assignment`, so any number of speakers is fine);
per frame the error is max(N_ref, N_hyp) - N_correct, split into miss, false alarm and confusion.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.timebase import SAMPLE_RATE

MS_SAMPLES = SAMPLE_RATE // 1000
DEFAULT_COLLAR_S = 0.25  # each side of a reference boundary (pyannote.metrics' collar=0.5 total)


@dataclass(frozen=True, slots=True)
class Segment:
    """One speaker's stretch of speech, samples [start, end), with its words when known.

    A reference or hypothesis turn, or an utterance placed in a training mixture.
    """

    speaker: str
    start: int
    end: int
    text: str = ""


def read_rttm(text: str) -> dict[str, list[Segment]]:
    """Parse RTTM `SPEAKER` lines into segments per file id (times rounded to samples).

    Other line types and blank lines are skipped; a malformed SPEAKER line raises ValueError
    naming its line number.
    """
    out: dict[str, list[Segment]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if not f or f[0] != "SPEAKER":
            continue
        if len(f) < 8:
            raise ValueError(f"RTTM line {n} has {len(f)} fields, expected at least 8: {line!r}")
        try:
            onset, duration = float(f[3]), float(f[4])
        except ValueError:
            raise ValueError(f"RTTM line {n}: onset and duration must be numbers: {line!r}") from None
        if not (np.isfinite(onset) and np.isfinite(duration)) or onset < 0 or duration < 0:
            raise ValueError(f"RTTM line {n}: onset and duration must be finite and not negative: {line!r}")
        start = round(onset * SAMPLE_RATE)
        out.setdefault(f[1], []).append(Segment(f[7], start, start + round(duration * SAMPLE_RATE)))
    return out


# --- words and characters ------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^\w']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_words(text: str) -> str:
    """`text` as scored words: upper case, punctuation dropped, in-word apostrophes kept.

    The rules of the CTC transcripts (`training.text.normalize_transcript`: hyphens and
    punctuation become spaces, apostrophes outside a word go), extended to any text: other
    symbols are dropped instead of refused, letters and digits of any script are kept.
    """
    t = text.replace("\u2019", "'").upper()
    t = _NOT_WORD.sub(" ", t)
    t = _LOOSE_APOSTROPHE.sub(" ", t)
    return " ".join(t.split())


def edit_distance(ref: Sequence[Hashable] | str, hyp: Sequence[Hashable] | str) -> int:
    """Levenshtein distance between two sequences (words or characters): rapidfuzz's, the one
    implementation every scorer in the tree uses (`models.lm.tune` calls it directly)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(ref, hyp))


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


# --- diarization ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DerResult:
    """Diarization error components in seconds of scored speaker time (add results to pool them)."""

    scored_s: float
    miss_s: float
    false_alarm_s: float
    confusion_s: float

    @property
    def der(self) -> float:
        return (self.miss_s + self.false_alarm_s + self.confusion_s) / self.scored_s if self.scored_s else 0.0

    def rates(self) -> dict[str, float | None]:
        """DER and its parts as fractions of the scored reference speech (None when there is none)."""
        if not self.scored_s:
            return {"der": None, "miss": None, "false_alarm": None, "confusion": None}
        return {"der": self.der, "miss": self.miss_s / self.scored_s,
                "false_alarm": self.false_alarm_s / self.scored_s, "confusion": self.confusion_s / self.scored_s}

    def __add__(self, other: "DerResult") -> "DerResult":
        return DerResult(self.scored_s + other.scored_s, self.miss_s + other.miss_s,
                         self.false_alarm_s + other.false_alarm_s, self.confusion_s + other.confusion_s)


def activity_grid(segments: list[Segment], n: int) -> tuple[list[str], np.ndarray]:
    """(speaker names, (speakers, n) boolean activity on the 1 ms grid)."""
    names = sorted({s.speaker for s in segments})
    index = {name: i for i, name in enumerate(names)}
    act = np.zeros((len(names), n), dtype=bool)
    for s in segments:
        act[index[s.speaker], max(0, s.start // MS_SAMPLES):max(0, s.end // MS_SAMPLES)] = True
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


def diarization_error(reference: list[Segment], hypothesis: list[Segment], collar_s: float = DEFAULT_COLLAR_S,
                      end_sample: int | None = None) -> DerResult:
    """DER components of `hypothesis` against `reference` (segments in samples).

    The scored region is [0, end_sample) (the whole file, as a UEM) minus the collars; without
    `end_sample` it reaches the last segment end of either side.
    """
    from scipy.optimize import linear_sum_assignment

    if collar_s < 0:
        raise ValueError(f"collar_s must not be negative, got {collar_s}")
    last = max([s.end for s in reference] + [s.end for s in hypothesis] + [0])
    end = (last if end_sample is None else end_sample) // MS_SAMPLES
    _, ref = activity_grid(reference, max(end, last // MS_SAMPLES + 1))
    _, hyp = activity_grid(hypothesis, max(end, last // MS_SAMPLES + 1))
    scored = np.zeros(ref.shape[1], dtype=bool)
    scored[:end] = True
    collar = int(round(collar_s * 1000))
    for s in reference:
        for b in (s.start // MS_SAMPLES, s.end // MS_SAMPLES):
            scored[max(0, b - collar):b + collar] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (R, H) jointly active ms
    best = 0
    if overlap.size:
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        best = int(overlap[rows, cols].sum())
    total_ref = float(n_ref.sum())
    miss = float(np.maximum(n_ref - n_hyp, 0).sum())
    fa = float(np.maximum(n_hyp - n_ref, 0).sum())
    confusion = float(np.minimum(n_ref, n_hyp).sum()) - best
    return DerResult(total_ref / 1000, miss / 1000, fa / 1000, confusion / 1000)


# -- speaker verification: equal error rate and operating points --------------------------------
# One convention for every caller (calibration, training's evaluations, fine-tuning): a trial is
# accepted when score >= threshold, and a reported threshold is the middle of the score interval
# that gives the reported rates (halfway between the highest impostor and the lowest target when
# the sets separate), so it keeps the same rates on these scores and a margin on new ones.


def _error_rates(target: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept rate, false-reject rate) at each threshold; a trial is accepted if score >= t."""
    t_sorted, i_sorted = np.sort(target), np.sort(impostor)
    frr = np.searchsorted(t_sorted, thresholds, side="left") / t_sorted.size
    far = (i_sorted.size - np.searchsorted(i_sorted, thresholds, side="left")) / i_sorted.size
    return far, frr


def _check_scores(target: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, i = np.asarray(target, dtype=np.float64).ravel(), np.asarray(impostor, dtype=np.float64).ravel()
    if t.size == 0 or i.size == 0:
        raise ValueError(f"need target and impostor scores, got {t.size} target and {i.size} impostor")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(i))):
        raise ValueError("scores must be finite")
    return t, i


def _candidates(t: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, representative thresholds): every observed score plus one above them all.

    The error rates are constant for thresholds in (u[j-1], u[j]], so each candidate u[j] is
    reported as the middle of that interval: the same rates on these scores, more margin on new ones.
    """
    u = np.unique(np.concatenate([t, i]))
    cand = np.append(u, np.nextafter(u[-1], np.inf))
    rep = cand.copy()
    rep[1:-1] = (u[:-1] + u[1:]) / 2.0
    return cand, rep


def equal_error_rate(target: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false-accept and false-reject rates are closest.

    The EER is the mean of the two rates there (they meet exactly only with enough trials).
    Accept rule: score >= threshold. The threshold is the middle of the score interval that gives
    those rates, so when the two sets separate it lies halfway between the highest impostor and
    the lowest target score, with an EER of 0.
    """
    t, i = _check_scores(target, impostor)
    cand, rep = _candidates(t, i)
    far, frr = _error_rates(t, i, cand)
    # among equally close points prefer the one with the fewest total errors, then the lowest threshold
    best = np.lexsort((cand, far + frr, np.abs(far - frr)))[0]
    return float((far[best] + frr[best]) / 2.0), float(rep[best])


def threshold_at_far(target: np.ndarray, impostor: np.ndarray, far: float) -> dict[str, float]:
    """The lowest threshold whose false-accept rate is at most `far`, with the FRR it costs.

    `resolvable` is False when there are too few impostor trials (fewer than 10 / far) for the
    rate to mean much.
    """
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), got {far}")
    t, i = _check_scores(target, impostor)
    cand, rep = _candidates(t, i)
    far_at, frr_at = _error_rates(t, i, cand)
    k = np.flatnonzero(far_at <= far)[0]  # far_at falls as the threshold rises: the first is lowest
    return {"far": far, "threshold": float(rep[k]), "far_measured": float(far_at[k]),
            "frr": float(frr_at[k]), "resolvable": bool(i.size * far >= 10)}
