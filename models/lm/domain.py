"""A user's own text mixed into a language model: `run_live.py --lm-text FILE`.

The text (one sentence a line) gets its own modified Kneser-Ney 3-gram model, which is
interpolated into the base LM (the one beside the CTC checkpoint, or `--lm`) with
`models.lm.mix.interpolate`. The weight of the text's model is chosen by perplexity on every
tenth line of the text (held out from the model that chooses it; at least 20 lines needed,
else 0.3), then the model is rebuilt from all lines. The base LM's `lm_weights.json` (alpha, beta,
blank penalty tuned for the acoustic model) is copied beside the result. The result is cached under a key of the base
LM's and the text's bytes, so only the first start with new text pays for the build (about a
minute with the shipped 13 MB model on two cores: reading it dominates).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence, TextIO

from models.lm.arpa import count_ngrams, estimate, read_arpa, validate_arpa, write_arpa
from models.lm.build import read_sentences
from models.lm.decoder import LM_WEIGHTS_NAME
from models.lm.mix import interpolate, mixture_perplexities

DOMAIN_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7)
DEFAULT_DOMAIN_WEIGHT = 0.3
MIN_TUNING_LINES = 20
_VERSION = b"domain-lm-1"


def _digest(paths: Sequence[str | Path]) -> str:
    h = hashlib.sha256(_VERSION)
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def choose_domain_weight(base, sentences: list[list[str]]) -> float:
    """The weight of the text's model with the lowest perplexity on every tenth sentence, the
    model estimated from the other nine; `DEFAULT_DOMAIN_WEIGHT` for short texts."""
    held = sentences[9::10]
    rest = [s for i, s in enumerate(sentences) if i % 10 != 9]
    if len(sentences) < MIN_TUNING_LINES or not held or not rest:
        return DEFAULT_DOMAIN_WEIGHT
    domain = estimate(count_ngrams(rest, 3))
    # mixture_perplexities weighs its first model: the domain model comes first here
    scores = mixture_perplexities([domain, base], held, DOMAIN_WEIGHTS)
    return min(zip(DOMAIN_WEIGHTS, scores), key=lambda pair: pair[1][0])[0]


def domain_lm(base_lm: str | Path | None, text: Sequence[str | Path], cache_dir: str | Path,
              weight: float | None = None, progress: TextIO | None = None) -> Path:
    """The base LM with `text`'s model interpolated in (the text's model alone when `base_lm` is
    None), as an ARPA file in `cache_dir` (built on first use, then reused). Raises ValueError for
    text with no words or a broken base LM."""
    cache = Path(cache_dir)
    key = _digest([*([base_lm] if base_lm is not None else []), *text]) + (f"-w{weight:g}" if weight is not None else "")
    folder = cache / f"lm-{key}"
    out = folder / "lm.arpa.gz"
    if out.is_file():
        return out
    sentences = list(read_sentences([str(t) for t in text]))
    if not sentences:
        raise ValueError(f"no words in {', '.join(str(t) for t in text)}")
    if progress is not None:
        progress.write(f"building a language model with {len(sentences):,} lines of your text "
                       f"(once; cached in {cache})\n")
        progress.flush()
    domain = estimate(count_ngrams(sentences, 3))
    mixed = domain
    if base_lm is not None:
        base = read_arpa(base_lm)
        if weight is None:
            weight = choose_domain_weight(base, sentences)
        mixed = interpolate([domain, base], [weight, 1.0 - weight])
    folder.mkdir(parents=True, exist_ok=True)
    weights = Path(base_lm).parent / LM_WEIGHTS_NAME if base_lm is not None else None
    if weights is not None and weights.is_file():  # tuned for the acoustic model: keep them
        shutil.copyfile(weights, folder / LM_WEIGHTS_NAME)
    fd, tmp = tempfile.mkstemp(prefix=".lm-", suffix=".arpa.gz", dir=folder)
    os.close(fd)
    try:
        write_arpa(mixed, tmp)
        validate_arpa(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
