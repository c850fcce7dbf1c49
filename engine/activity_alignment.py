"""Aligning the activity head's overlapping windows: its speaker slots are unordered per window.

`best_permutation` maps each window's local slots onto S running channels by the permutation that
agrees best with what earlier windows said about the overlap; `ActivityAggregator` then averages
the aligned windows with Hamming weights. Frames no later window will cover are "settled".
Used by both speaker trackers (engine/activity_speakers.py, engine/span_speakers.py).
"""

from __future__ import annotations

import itertools

import numpy as np

from engine.buffers import RollingArray


def best_permutation(local: np.ndarray, running: np.ndarray, weights: np.ndarray) -> tuple[int, ...]:
    """The channel for each local slot that best matches `running` on the overlap.

    `local`, `running`: (frames, S) probabilities; `weights`: (frames,) how much each frame counts
    (0 where nothing is known yet). Scores are weighted dot products of p and of 1-p; ties keep the
    earliest permutation in lexicographic order (the identity first), so results are deterministic.
    """
    s = local.shape[1]
    if len(local) == 0 or not np.any(weights > 0):
        return tuple(range(s))
    w = weights[:, None]
    # agreement[i, c]: how well local slot i matches channel c over the overlap
    agreement = (local * w).T @ running + ((1 - local) * w).T @ (1 - running)
    best, best_score = tuple(range(s)), -np.inf
    for perm in itertools.permutations(range(s)):
        score = float(sum(agreement[i, c] for i, c in enumerate(perm)))
        if score > best_score + 1e-9:
            best, best_score = perm, score
    return best


class ActivityAggregator:
    """Hamming-weighted average of permutation-aligned window activities over S channels."""

    def __init__(self, num_channels: int, capacity_frames: int) -> None:
        self.num_channels = num_channels
        self._wp = RollingArray(capacity_frames, (num_channels,), np.float64)
        self._w = RollingArray(capacity_frames, (), np.float64)
        self.settled = 0  # frames before this will not change any more

    def add(self, start_frame: int, probs: np.ndarray, settle_to: int) -> tuple[int, np.ndarray, tuple[int, ...]]:
        """Add one window's (T, S) probs at `start_frame`; settle frames < `settle_to`.

        Returns (first settled frame, settled (n, S) probs, permutation used).
        """
        t = len(probs)
        weights = np.hamming(t) if t > 2 else np.ones(t)
        cut = max(0, self._w.start - start_frame)  # frames already settled take nothing new
        if cut >= t:
            return (*self._settle(settle_to), tuple(range(self.num_channels)))
        probs, weights, start_frame = probs[cut:], weights[cut:], start_frame + cut
        end = start_frame + len(probs)
        self._wp.extend_to(end)
        self._w.extend_to(end)
        wsum, wpsum = self._w.view(start_frame, end), self._wp.view(start_frame, end)
        known = wsum > 0
        running = np.where(known[:, None], wpsum / np.where(known, wsum, 1.0)[:, None], 0.0)
        perm = best_permutation(probs, running, wsum)
        aligned = np.zeros_like(probs, dtype=np.float64)
        aligned[:, list(perm)] = probs
        wpsum += weights[:, None] * aligned
        wsum += weights
        return (*self._settle(settle_to), perm)

    def _settle(self, settle_to: int) -> tuple[int, np.ndarray]:
        first = self.settled
        settle_to = min(max(settle_to, first), self._w.end)
        w = self._w.view(first, settle_to)
        wp = self._wp.view(first, settle_to)
        probs = np.where(w[:, None] > 0, wp / np.where(w > 0, w, 1.0)[:, None], 0.0)
        self.settled = settle_to
        self._w.discard_before(settle_to)
        self._wp.discard_before(settle_to)
        return first, probs

    def unsettled(self, start: int, end: int) -> np.ndarray:
        """Current (not final) averaged probs for frames [start, end) (0 where not yet covered)."""
        start, end = max(start, self._w.start), min(end, self._w.end)
        if end <= start:
            return np.zeros((0, self.num_channels))
        w = self._w.view(start, end)
        return np.where(w[:, None] > 0, self._wp.view(start, end) / np.where(w > 0, w, 1.0)[:, None], 0.0)

    def settle_all(self) -> tuple[int, np.ndarray]:
        """Settle every frame seen so far (end of stream)."""
        return self._settle(self._w.end)
