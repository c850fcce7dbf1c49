"""How many voices a recording seems to hold: the mixed-voice check of enrollment and scoring.

Enrolling or scoring a recording of several people would describe their mixture, not a person;
this groups x-vectors of the recording's short speech spans by voice to tell (bench/voice_mix.py
measures it on real-model spans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.timebase import samples_to_seconds, seconds_to_samples
from voiceprints.embedding import Embedder


@dataclass(frozen=True, slots=True)
class VoiceMix:
    """How many voices a recording seems to hold, from pairwise x-vectors of its short speech spans.

    `voices` lists the speech (samples) of each group of mutually similar spans, largest first;
    `mixed` when at least two groups each hold `MIXED_MIN_SHARE` of the speech. With fewer than
    two spans (under 2 x `MIXED_SPAN_S` of speech) nothing can be told and `mixed` is False.
    """

    n_spans: int
    voices: tuple[int, ...]
    mixed: bool

    def describe(self) -> str:
        """E.g. `2 voices (10.7 s, 8.5 s of speech; 10.7 s more in smaller groups)`."""
        total = sum(self.voices)
        big = [v for v in self.voices if v >= MIXED_MIN_SHARE * total]
        rest = total - sum(big)
        shares = ", ".join(f"{samples_to_seconds(v):.1f} s" for v in big)
        more = f"; {samples_to_seconds(rest):.1f} s more in smaller groups" if rest else ""
        return f"{len(big)} voice{'s' if len(big) != 1 else ''} ({shares} of speech{more})"


MIXED_SPAN_S = 2.0  # speech per span compared (the engine's first x-vector of a run needs as much)
MIXED_MAX_SPANS = 30  # longer recordings get longer spans, so the check costs at most this many embeddings
MIXED_MIN_SHARE = 0.2  # a second voice must hold this share of the speech to count


def voice_mix(embedder: Embedder, speech: np.ndarray, same_voice: float) -> VoiceMix:
    """Group the 2 s spans of `speech` (speech-only samples) by voice: average-linkage clustering
    of their cosine similarities, merging while the groups' mean similarity is >= `same_voice`.

    A stand-in for the engine's speaker tracking (issue 21) until that can run on a recording:
    a single voice gives one group plus at most a few stray spans; a conversation gives one group
    per speaker with enough speech.
    """
    span = seconds_to_samples(MIXED_SPAN_S)
    n = min(len(speech) // span, MIXED_MAX_SPANS)
    if n < 2:
        return VoiceMix(n, (int(len(speech)),), False)
    length = len(speech) // n
    pieces = [np.asarray(speech[k * length:(k + 1) * length], dtype=np.float32) for k in range(n)]
    batch = getattr(embedder, "embed_batch", None)  # equal lengths: one forward pass, no padding
    vectors = np.asarray(batch(np.stack(pieces)) if batch is not None else [embedder.embed(p) for p in pieces],
                         dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = vectors @ vectors.T
    groups = [[i] for i in range(n)]
    while len(groups) > 1:
        best, pair = -2.0, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                mean = float(sim[np.ix_(groups[a], groups[b])].mean())
                if mean > best:
                    best, pair = mean, (a, b)
        if best < same_voice:
            break
        a, b = pair
        groups[a] += groups.pop(b)
    sizes = sorted((sum(len(pieces[i]) for i in g) for g in groups), reverse=True)
    total = sum(sizes)
    big = [s for s in sizes if s >= MIXED_MIN_SHARE * total]
    return VoiceMix(n, tuple(int(s) for s in sizes), len(big) >= 2)



__all__ = ["MIXED_MAX_SPANS", "MIXED_MIN_SHARE", "MIXED_SPAN_S", "VoiceMix", "voice_mix"]
