"""Build the shipped word LM: CMU's general US-English 3-gram, pruned, mixed with the domain text's.

    python -m models.lm.general --text lm_text.txt extra.txt --vocab /usr/share/dict/american-english \
        --tune-text val.jsonl --out models/embedded/ctc/lm.arpa.gz

Steps: read pocketsphinx's `en-us.lm.bin` (`models.lm.sphinx`: pocketsphinx's own ARPA writer
crashes on it), keep the `--bigrams`/`--trigrams` n-grams that matter most
(`models.lm.mix.prune_weighted_difference`), estimate the domain text's modified Kneser-Ney model
(`models.lm.build`, unpruned as before), interpolate the two with weight `--weight` on the
general model (or the weight of `--weights` with the lowest perplexity on `--tune-text`, which
must be held-out validation text, never test text), write the ARPA file, check it
(`models.lm.arpa.validate_arpa`: the sections hold what the header declares, `\\end\\` is there),
and put CMU's licence notice (`LICENSE.en-us-lm.txt`) and a build record (`lm_build.json`) beside
it. See docs/lm.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence, TextIO

from models.lm.arpa import NgramModel, count_ngrams, estimate, normalize_line, validate_arpa, write_arpa
from models.lm.build import read_sentences, read_vocab
from models.lm.mix import interpolate, mixture_perplexities, perplexity, prune_weighted_difference
from models.lm.sphinx import read_sphinx_trie

NOTICE_NAME = "LICENSE.en-us-lm.txt"
BUILD_RECORD_NAME = "lm_build.json"
DEFAULT_BIGRAMS, DEFAULT_TRIGRAMS = 600_000, 400_000
DEFAULT_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def sphinx_model_path() -> Path:
    """pocketsphinx's bundled US-English LM (`pip install pocketsphinx`; BSD-style licence)."""
    try:
        import pocketsphinx
    except ImportError:
        raise FileNotFoundError("pocketsphinx is not installed: .venv/bin/pip install -c .ci/constraints.txt "
                                "pocketsphinx (or pass --sphinx PATH to an en-us.lm.bin)") from None
    return Path(pocketsphinx.get_model_path()) / "en-us" / "en-us.lm.bin"


def pocketsphinx_licence() -> str:
    """The licence text pocketsphinx's wheel ships (its models fall under it)."""
    dist = metadata.distribution("pocketsphinx")
    for f in dist.files or ():
        if f.name.upper().startswith(("LICENSE", "COPYING")):
            return f"pocketsphinx {dist.version}\n\n" + Path(dist.locate_file(f)).read_text(encoding="utf-8")
    raise FileNotFoundError("the pocketsphinx distribution lists no LICENSE file")


def write_notice(out_dir: Path, sphinx_path: Path, licence: str) -> Path:
    path = out_dir / NOTICE_NAME
    path.write_text(
        "The language model lm.arpa.gz in this folder is derived from CMU Sphinx's US-English\n"
        f"3-gram model ({sphinx_path.name}, shipped in the pocketsphinx package): pruned and\n"
        "interpolated with a model of this project's own training text (models/lm/general.py).\n"
        "CMU Sphinx's licence follows.\n\n" + licence, encoding="utf-8")
    return path


def held_out_sentences(paths: Sequence[str]) -> list[list[str]]:
    """Normalised sentences of text files, or of the distinct `text` fields of `.jsonl` files (a
    corpus split such as val.jsonl)."""
    out: list[list[str]] = []
    for path in paths:
        if str(path).endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                texts = dict.fromkeys(json.loads(line)["text"] for line in f if line.strip())
            out += [w for w in (normalize_line(t) for t in texts) if w]
        else:
            out += list(read_sentences([str(path)]))
    return out


def _log(progress: TextIO | None, message: str) -> None:
    if progress is not None:
        progress.write(message + "\n")
        progress.flush()


def build_general(
    out: str | Path,
    text: Sequence[str],
    sphinx: str | Path | None = None,
    vocab: str | None = None,
    domain_prune: Sequence[int] = (),
    keep: tuple[int | None, int | None] = (DEFAULT_BIGRAMS, DEFAULT_TRIGRAMS),
    weight: float | None = None,
    tune_text: Sequence[str] = (),
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    licence: str | None = None,
    progress: TextIO | None = None,
) -> dict:
    """Build, write and validate the mixed LM; returns the build record (also written as JSON)."""
    start = time.monotonic()
    sphinx_path = Path(sphinx) if sphinx is not None else sphinx_model_path()
    raw = read_sphinx_trie(sphinx_path)
    _log(progress, f"read {sphinx_path}: {', '.join(f'{c:,}' for c in raw.counts)} n-grams "
                   f"(header: {', '.join(f'{c:,}' for c in raw.header_counts)})")
    general = prune_weighted_difference(raw, keep[: raw.order - 1])
    _log(progress, "pruned: " + ", ".join(f"{len(t):,}" for t in general.orders))
    domain = estimate(count_ngrams(read_sentences(text), 3),
                      extra_vocab=read_vocab(vocab) if vocab else [], prune=domain_prune)
    _log(progress, "domain model: " + ", ".join(f"{len(t):,}" for t in domain.orders))
    tuning: list[dict] = []
    if weight is None:
        if not tune_text:
            raise ValueError("give --weight or --tune-text (held-out validation text) to choose it")
        held = held_out_sentences(tune_text)
        for lam, (ppl, n, oov) in zip(weights, mixture_perplexities([general, domain], held, weights)):
            tuning.append({"weight": lam, "perplexity": round(ppl, 2), "words": n, "oov": oov})
            _log(progress, f"  weight {lam:.2f}: perplexity {ppl:.1f} ({n:,} words, {oov} OOV)")
        weight = min(tuning, key=lambda r: r["perplexity"])["weight"]
        alone = perplexity(domain, held)
        tuning.append({"weight": 0.0, "model": "domain text alone", "perplexity": round(alone[0], 2),
                       "words": alone[1], "oov": alone[2]})
        _log(progress, f"  domain model alone: perplexity {alone[0]:.1f} ({alone[1]:,} words, {alone[2]} OOV)")
    mixed: NgramModel = interpolate([general, domain], [weight, 1 - weight])
    out = Path(out)
    write_arpa(mixed, out)
    counts = validate_arpa(out)
    notice = write_notice(out.parent, sphinx_path, licence if licence is not None else pocketsphinx_licence())
    record = {
        "general_model": str(sphinx_path.name),
        "general_counts": list(raw.counts),
        "general_header_counts": list(raw.header_counts),
        "general_kept": [len(t) for t in general.orders],
        "domain_text": [Path(t).name for t in text],
        "domain_vocab": Path(vocab).name if vocab else None,
        "domain_counts": [len(t) for t in domain.orders],
        "weight_general": weight,
        "tuning": tuning,
        "tune_text": [Path(t).name for t in tune_text],
        "counts": counts,
        "bytes": out.stat().st_size,
        "notice": notice.name,
        "seconds": round(time.monotonic() - start, 1),
    }
    (out.parent / BUILD_RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _log(progress, f"wrote {out} ({record['bytes'] / 1e6:.1f} MB: {', '.join(f'{c:,}' for c in counts)}), "
                   f"general weight {weight}, {record['seconds']} s")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.lm.general", description=__doc__.split("\n")[0])
    p.add_argument("--text", nargs="+", required=True, help="domain text files, one sentence a line")
    p.add_argument("--out", required=True, help="output ARPA file (.gz compresses)")
    p.add_argument("--sphinx", help="a Sphinx trie-binary LM (default: pocketsphinx's en-us.lm.bin)")
    p.add_argument("--vocab", help="extra words for the domain model, one a line")
    p.add_argument("--prune", type=int, nargs="+", default=[], help="domain model count pruning, e.g. 0 1 (default: none)")
    p.add_argument("--bigrams", type=int, default=DEFAULT_BIGRAMS, help="general bigrams kept")
    p.add_argument("--trigrams", type=int, default=DEFAULT_TRIGRAMS, help="general trigrams kept")
    p.add_argument("--weight", type=float, help="weight of the general model (0..1)")
    p.add_argument("--tune-text", nargs="+", default=[], help="held-out text (or a corpus split's .jsonl): pick the weight by perplexity")
    p.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_WEIGHTS), help="weights tried")
    args = p.parse_args(argv)
    for path in [*args.text, *args.tune_text, *([args.vocab] if args.vocab else []),
                 *([args.sphinx] if args.sphinx else [])]:
        if not Path(path).is_file():
            p.error(f"no such file: {path}")
    if args.weight is not None and not 0.0 <= args.weight <= 1.0:
        p.error(f"--weight must be within 0..1, got {args.weight}")
    try:
        build_general(args.out, args.text, args.sphinx, args.vocab, args.prune,
                      (args.bigrams, args.trigrams), args.weight, args.tune_text, args.weights,
                      progress=sys.stderr)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
