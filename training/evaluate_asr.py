"""Caption accuracy offline: CER/WER of greedy CTC and of beam search with the word LM, per set and per
voice family, and the LM weights tuned on validation utterances (never test).

Part of `python -m training.evaluate`; `ctc_log_probs` is also what the LM benches decode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from engine.timebase import SAMPLE_RATE
from models import FeatureExtractor, UniSpeechSatForCTC
from training.corpus import Corpus
from training.scoring import char_error_rate, word_error_rate
from training.train import greedy_decode


def _batches(audios: list[np.ndarray], size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (less padding)."""
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    for k in range(0, len(order), size):
        yield order[k:k + size]


@torch.no_grad()
def ctc_log_probs(model: UniSpeechSatForCTC, fe: FeatureExtractor, audios: list[np.ndarray],
                  batch: int = 8) -> list[np.ndarray]:
    """Per-utterance (frames, vocab) log-probabilities."""
    out: list[np.ndarray | None] = [None] * len(audios)
    for idx in _batches(audios, batch):
        x, m = fe([audios[i] for i in idx], sampling_rate=SAMPLE_RATE)
        logits = model(x, m).logits
        lengths = model.feat_extract_output_lengths(m.sum(-1)) if m is not None else [logits.shape[1]] * len(idx)
        lp = torch.log_softmax(logits.float(), -1)
        for k, i in enumerate(idx):
            out[i] = lp[k, : int(lengths[k])].numpy()
    return out  # type: ignore[return-value]


def by_voice_family(families: list[str], refs: list[str], hyps: dict[str, list[str]]) -> dict[str, dict]:
    """CER of each voice family (`training.voices.voice_family`) for each named list of hypotheses,
    worst first by the first list: where a model's errors come from (synthesizers differ a lot)."""
    out: dict[str, dict] = {}
    for fam in sorted(set(families)):
        idx = [k for k, f in enumerate(families) if f == fam]
        r = [refs[k] for k in idx]
        out[fam] = {"utterances": len(idx), **{f"cer_{name}": round(char_error_rate(r, [h[k] for k in idx]), 4)
                                                for name, h in hyps.items()}}
    first = f"cer_{next(iter(hyps))}"
    return dict(sorted(out.items(), key=lambda kv: -kv[1][first]))


def evaluate_asr(model_dir: Path, sets: dict[str, tuple[list[np.ndarray], list[str]]], lm: Path | None,
                 families: dict[str, list[str]] | None = None) -> dict:
    """CER/WER greedy and with the LM for each named set of (audios, transcripts); per voice family
    too for the sets that `families` labels (one family per utterance)."""
    model = UniSpeechSatForCTC.from_pretrained(model_dir / "ctc")
    fe = FeatureExtractor.from_pretrained(model_dir / "ctc")
    decoder = None
    if lm is not None:
        from models import CTCVocab
        from models.lm import CTCBeamDecoder

        vocab = CTCVocab.from_pretrained(model_dir / "ctc")
        decoder = CTCBeamDecoder(list(vocab.tokens), vocab.blank_id, "|", lm=lm)  # tuned weights if written
    results = {}
    for name, (audios, refs) in sets.items():
        t0 = time.monotonic()
        lps = ctc_log_probs(model, fe, audios)
        greedy = [greedy_decode(lp.argmax(-1).tolist()) for lp in lps]
        r = {"utterances": len(refs), "cer_greedy": char_error_rate(refs, greedy),
             "wer_greedy": word_error_rate(refs, greedy), "examples": []}
        if decoder is not None:
            with_lm = [" ".join(w.text for w in decoder.decode(lp)).upper() for lp in lps]
            r.update(cer_lm=char_error_rate(refs, with_lm), wer_lm=word_error_rate(refs, with_lm))
        if families and name in families:
            hyps = {"lm": with_lm, "greedy": greedy} if decoder is not None else {"greedy": greedy}
            r["by_family"] = by_voice_family(families[name], refs, hyps)
        for k in range(min(3, len(refs))):
            r["examples"].append({"ref": refs[k], "greedy": greedy[k], **({"lm": with_lm[k]} if decoder else {})})
        r["seconds"] = round(time.monotonic() - t0, 1)
        results[name] = r
    return results


LM_BEAM_WIDTHS = (32, 128, 256, 512)


LM_ALPHAS = (0.6, 1.0, 1.5, 2.2)
LM_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)
LM_BLANK_PENALTIES = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0)


def tune_lm(model_dir: Path, corpus: Corpus, lm: Path, utterances: int = 120,
            alphas: tuple[float, ...] = LM_ALPHAS, betas: tuple[float, ...] = LM_BETAS,
            blank_penalties: tuple[float, ...] = LM_BLANK_PENALTIES) -> dict:
    """Grid-search the LM weight, word bonus and blank penalty on validation utterances (never test) and write
    them beside the LM as `lm_weights.json`, where the decoder finds them."""
    from models import CTCVocab
    from models.lm import CTCBeamDecoder
    from models.lm.tune import corpus_wer, tune_weights, write_lm_weights

    rows = corpus.rows["val"]
    idx = np.random.default_rng(0).permutation(len(rows))[:utterances]
    model = UniSpeechSatForCTC.from_pretrained(model_dir / "ctc")
    fe = FeatureExtractor.from_pretrained(model_dir / "ctc")
    lps = ctc_log_probs(model, fe, [corpus.audio("val", int(i)) for i in idx])
    vocab = CTCVocab.from_pretrained(model_dir / "ctc")
    decoder = CTCBeamDecoder(list(vocab.tokens), vocab.blank_id, "|", lm=lm, alpha=1.0, beta=1.0, blank_penalty=0.0)
    samples = [(lp, rows[int(i)]["text"]) for lp, i in zip(lps, idx)]
    result = tune_weights(decoder, samples, alphas=alphas, betas=betas, blank_penalties=blank_penalties)
    path = write_lm_weights(lm, result, tuned_on=f"{len(idx)} validation utterances of {corpus.root}",
                            log_add=decoder.log_add)
    # what the beam buys with the weights as written, read back the way the engine reads them
    tuned = CTCBeamDecoder(list(vocab.tokens), vocab.blank_id, "|", lm=lm)
    assert (tuned.alpha, tuned.beta, tuned.blank_penalty) == (result.alpha, result.beta, result.blank_penalty)
    beams = {}
    for width in LM_BEAM_WIDTHS:  # what the beam buys at the tuned weights (CTCBeamDecoder's default: docs/lm.md)
        t0 = time.monotonic()
        beams[str(width)] = {"val_wer": round(corpus_wer(tuned.with_beam_width(width), samples), 4),
                             "seconds": round(time.monotonic() - t0, 1)}
    return {"alpha": result.alpha, "beta": result.beta, "blank_penalty": result.blank_penalty,
            "val_wer": round(result.wer, 4),
            "val_wer_greedy": round(result.greedy_wer, 4), "beam_width": decoder.beam_width,
            "val_wer_by_beam": beams, "written": str(path)}

