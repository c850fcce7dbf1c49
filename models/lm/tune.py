"""Choose the LM weight (alpha), word bonus (beta) and blank penalty by word error rate on validation data.

The best weights depend on how sharp the acoustic model's posteriors are, so they should be
measured per checkpoint on held-out utterances (never the test split):

    from models.lm.tune import tune_weights
    result = tune_weights(decoder, [(log_probs, "REFERENCE TEXT"), ...])
    result.alpha, result.beta, result.blank_penalty, result.wer, result.greedy_wer, result.table
    write_lm_weights(lm_path, result, tuned_on="...")   # CTCBeamDecoder then uses them by default

The LM is loaded once (`CTCBeamDecoder.with_weights` shares it across the grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.lm.decoder import LM_WEIGHTS_NAME, CTCBeamDecoder
from models.lm.synthetic_check import edit_distance, greedy_words

DEFAULT_ALPHAS = (0.3, 0.5, 0.8, 1.2)
DEFAULT_BETAS = (0.0, 1.0, 2.0, 3.0)


@dataclass(frozen=True, slots=True)
class TuneResult:
    """The best (alpha, beta, blank penalty), its WER, greedy WER for comparison, and the WER of
    every grid point."""

    alpha: float
    beta: float
    wer: float
    greedy_wer: float
    table: tuple[tuple[float, ...], ...]  # (alpha, beta, wer, blank_penalty)
    blank_penalty: float = 0.0


def write_lm_weights(lm: str | Path, result: TuneResult, tuned_on: str, log_add: bool | None = None) -> Path:
    """Write `lm_weights.json` beside the LM (atomically), which `CTCBeamDecoder` reads when it is
    not given alpha and beta. `log_add` records how the tuning decoder merged hypotheses."""
    path = Path(lm).parent / LM_WEIGHTS_NAME
    data = {"alpha": result.alpha, "beta": result.beta, "tuned_on": tuned_on,
            **({} if log_add is None else {"log_add": bool(log_add)}),
            "wer": round(result.wer, 4), "greedy_wer": round(result.greedy_wer, 4),
            "blank_penalty": result.blank_penalty,
            "grid": [{"alpha": row[0], "beta": row[1], "wer": round(row[2], 4),
                      "blank_penalty": row[3] if len(row) > 3 else 0.0} for row in result.table]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def corpus_wer(decoder: CTCBeamDecoder, samples: Sequence[tuple[np.ndarray, str]]) -> float:
    """Word errors over reference words, case-insensitive, for beam decoding of every sample."""
    errors = words = 0
    for log_probs, ref in samples:
        ref_words = ref.upper().split()
        errors += edit_distance(ref_words, [w.text.upper() for w in decoder.decode(log_probs)])
        words += len(ref_words)
    return errors / max(words, 1)


def tune_weights(decoder: CTCBeamDecoder, samples: Sequence[tuple[np.ndarray, str]],
                 alphas: Sequence[float] = DEFAULT_ALPHAS,
                 betas: Sequence[float] = DEFAULT_BETAS,
                 blank_penalties: Sequence[float] | None = None) -> TuneResult:
    """Grid-search alpha x beta (x blank penalty; default: the decoder's own only) on `samples`
    ((frames, vocab) scores, reference text)."""
    if not samples:
        raise ValueError("no validation samples to tune on")
    if decoder.lexicon_free:
        raise ValueError("the decoder has no lexicon or LM: there are no weights to tune")
    table = []
    for penalty in (decoder.blank_penalty,) if blank_penalties is None else blank_penalties:
        for alpha in alphas:
            for beta in betas:
                tuned = decoder.with_weights(alpha, beta, penalty)
                table.append((float(alpha), float(beta), corpus_wer(tuned, samples), float(penalty)))
    best = min(table, key=lambda row: (row[2], abs(row[0] - decoder.alpha) + abs(row[1] - decoder.beta)
                                       + abs(row[3] - decoder.blank_penalty)))
    greedy_errors = greedy_total = 0
    for log_probs, ref in samples:
        ref_words = ref.upper().split()
        hyp = [w.upper() for w in greedy_words(np.asarray(log_probs), decoder.tokens, decoder.blank_id,
                                                decoder.delimiter)]
        greedy_errors += edit_distance(ref_words, hyp)
        greedy_total += len(ref_words)
    return TuneResult(best[0], best[1], best[2], greedy_errors / max(greedy_total, 1), tuple(table), best[3])
