"""Evaluate the embedded model on the held-out synthetic test split (offline and streaming).

    python -m training.evaluate [--model models/embedded] [--corpus /work/runs/corpus]
                                [--streaming] [--out models/embedded/evaluation.json]

Offline: CER/WER of greedy CTC and of beam search with the word LM beside the CTC checkpoint
(`models.lm.CTCBeamDecoder`, default weights) on the test split and on the everyday sentences;
EER of the x-vector head over target/impostor trials of held-out speakers, scored the way
`engine.voiceprints.VoiceprintService` scores (enrollment from several clips, cosine); DER of the
speaker-activity head over the test conversations (5 s windows, hop 2.5 s, slots stitched across
windows by their agreement on the overlap, then tracks merged by x-vector cosine), scored by
`training.scoring.diarization_error` (0.25 s collar, overlap scored). With --streaming, the same
audio also goes through `engine.Engine` with default settings (captions, speaker turns).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models import (
    FeatureExtractor,
    UniSpeechSatForAudioFrameClassification,
    UniSpeechSatForCTC,
    UniSpeechSatForXVector,
)
from training.corpus import Corpus
from training.mixing import FRAME_HOP_SAMPLES, SAMPLE_RATE, Segment, read_rttm
from training.scoring import DerResult, char_error_rate, diarization_error, equal_error_rate, word_error_rate
from training.train import greedy_decode
from training.voices import voice_family

WINDOW_S, HOP_S = 5.0, 2.5
MORE_DER_SEED_TAG = 79  # freshly built test conversations beyond the corpus's 16 (seed tag 77)


def _batches(audios: list[np.ndarray], size: int):
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


@torch.no_grad()
def xvector_embeddings(model: UniSpeechSatForXVector, fe: FeatureExtractor, audios: list[np.ndarray]) -> np.ndarray:
    """(N, D) unit-length embeddings, one utterance at a time (no padding effects)."""
    out = []
    for a in audios:
        x, m = fe([a], sampling_rate=SAMPLE_RATE)
        e = model(x, m).embeddings[0].double().numpy()
        out.append(e / (np.linalg.norm(e) + 1e-12))
    return np.stack(out)


def verification_trials(corpus: Corpus, split: str, enroll_clips: int = 3) -> tuple[dict[str, list[int]], list[tuple[str, int]]]:
    """Per speaker: the first `enroll_clips` utterances enroll, the rest are test clips."""
    enroll, tests = {}, []
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        enroll[spk] = idx[:enroll_clips]
        tests += [(spk, i) for i in idx[enroll_clips:]]
    return enroll, tests


def evaluate_sv(model_dir: Path, corpus: Corpus, split: str = "test") -> dict:
    """EER over all test clips x all enrolled held-out speakers (targets: same speaker)."""
    model = UniSpeechSatForXVector.from_pretrained(model_dir / "sv")
    fe = FeatureExtractor.from_pretrained(model_dir / "sv")
    enroll, tests = verification_trials(corpus, split)
    speakers = sorted(enroll)
    cache: dict[int, np.ndarray] = {}
    needed = sorted({i for v in enroll.values() for i in v} | {i for _, i in tests})
    emb = xvector_embeddings(model, fe, [corpus.audio(split, i) for i in needed])
    cache = dict(zip(needed, emb))
    prints = {}
    for spk in speakers:
        lengths = np.array([corpus.rows[split][i]["length"] for i in enroll[spk]], dtype=np.float64)
        v = sum(w * cache[i] for w, i in zip(lengths, enroll[spk]))
        prints[spk] = v / np.linalg.norm(v)
    target, impostor = [], []
    for spk, i in tests:
        for other in speakers:
            (target if other == spk else impostor).append(float(cache[i] @ prints[other]))
    eer, threshold = equal_error_rate(target, impostor)
    return {"speakers": len(speakers), "target_trials": len(target), "impostor_trials": len(impostor),
            "eer": eer, "eer_threshold": threshold, "enroll_clips": 3}


def write_trials(corpus: Corpus, split: str, out: Path) -> Path:
    """Write `split`'s utterances as `SPEAKER__CLIP.wav` files (engine.calibration's trial folder),
    leaving out clips with under 0.5 s of detected speech (the embedder refuses those)."""
    import soundfile as sf

    from engine.speech_detect import speech_mask, speech_only
    from engine.speech_model import default_detector

    out.mkdir(parents=True, exist_ok=True)
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        for k, i in enumerate(idx):
            audio = corpus.audio(split, i)
            if speech_only(audio, speech_mask(audio, default_detector())).size < 8000:
                continue
            sf.write(out / f"{spk}__{k:02d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    return out


def evaluate_sv_service(model_dir: Path, corpus: Corpus, split: str = "test") -> dict:
    """EER with the app's own verification path: `engine.voiceprints.XVectorEmbedder` and
    `engine.calibration.score_trials` (enroll from >= 5 s of net speech, as VoiceprintService)."""
    from engine.calibration import score_trials
    from engine.voiceprints import XVectorEmbedder

    from engine.speech_detect import speech_mask, speech_only
    from engine.speech_model import default_detector

    embedder = XVectorEmbedder(model_dir / "sv")
    clips: dict[str, list[np.ndarray]] = {}
    dropped = 0
    for spk, idx in sorted(corpus.by_speaker(split).items()):
        for i in idx:
            audio = corpus.audio(split, i)
            # score_trials embeds the detected speech only; the embedder refuses < 0.5 s of it
            if speech_only(audio, speech_mask(audio, default_detector())).size >= 8000:
                clips.setdefault(spk, []).append(audio)
            else:
                dropped += 1
    scores = score_trials(embedder, clips)
    eer, threshold = equal_error_rate(scores.target, scores.impostor)
    calibrated = getattr(embedder, "threshold", None)
    out = {"eer": eer, "eer_threshold": threshold, "target_trials": len(scores.target),
           "impostor_trials": len(scores.impostor), "shipped_threshold": calibrated,
           "clips_with_under_0.5s_speech_left_out": dropped}
    if calibrated is not None:
        tgt, imp = np.asarray(scores.target), np.asarray(scores.impostor)
        out.update(frr_at_shipped=float((tgt < calibrated).mean()), far_at_shipped=float((imp >= calibrated).mean()))
    return out


# --------------------------------------------------------------------------- diarization offline
@torch.no_grad()
def window_activity(model: UniSpeechSatForAudioFrameClassification, fe: FeatureExtractor, audio: np.ndarray
                    ) -> list[tuple[int, np.ndarray]]:
    """(start frame, (T, slots) sigmoid probabilities) per 5 s window, hop 2.5 s."""
    win, hop = int(WINDOW_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE)
    starts = list(range(0, max(1, len(audio) - win + hop), hop))
    out = []
    for s in starts:
        piece = audio[s:s + win]
        if len(piece) < 8000:
            piece = np.pad(piece, (0, 8000 - len(piece)))
        x, m = fe([piece], sampling_rate=SAMPLE_RATE)
        probs = torch.sigmoid(model(x, m).logits[0]).numpy()
        out.append((s // FRAME_HOP_SAMPLES, probs))
    return out


def stitch_windows(windows: list[tuple[int, np.ndarray]], n_frames: int, min_agreement: float = 5.0) -> np.ndarray:
    """Link each window's slots to global tracks by agreement on the overlap with the previous
    window; return (tracks, n_frames) averaged probabilities."""
    sums: list[np.ndarray] = []
    counts = np.zeros(n_frames)
    prev_map: list[int | None] = []
    prev: tuple[int, np.ndarray] | None = None
    for start, probs in windows:
        slots = probs.shape[1]
        mapping: list[int | None] = [None] * slots
        if prev is not None:
            p_start, p_probs = prev
            lo, hi = start, min(p_start + len(p_probs), start + len(probs))
            if hi > lo:
                cur = probs[: hi - lo]
                old = p_probs[lo - p_start: hi - p_start]
                agree = cur.T @ old  # (slots, slots)
                best = max(itertools.permutations(range(slots)), key=lambda p: sum(agree[i, p[i]] for i in range(slots)))
                for i in range(slots):
                    if agree[i, best[i]] >= min_agreement and prev_map[best[i]] is not None:
                        mapping[i] = prev_map[best[i]]
        for i in range(slots):
            if mapping[i] is None and probs[:, i].max() > 0.5:
                sums.append(np.zeros(n_frames))
                mapping[i] = len(sums) - 1
        end = min(n_frames, start + len(probs))
        counts[start:end] += 1
        for i, track in enumerate(mapping):
            if track is not None:
                sums[track][start:end] += probs[: end - start, i]
        prev, prev_map = (start, probs), mapping
    if not sums:
        return np.zeros((0, n_frames))
    return np.stack(sums) / np.maximum(counts, 1)


def activity_segments(track_probs: np.ndarray, names: list[str], threshold: float = 0.5,
                      min_frames: int = 10, fill_frames: int = 15) -> list[Segment]:
    """Threshold per-track probabilities into segments (gaps < fill_frames filled, short runs dropped)."""
    out = []
    for row, name in zip(track_probs, names):
        active = row > threshold
        runs, t = [], 0
        while t < len(active):
            if active[t]:
                u = t
                while u < len(active) and active[u]:
                    u += 1
                runs.append([t, u])
                t = u
            else:
                t += 1
        merged: list[list[int]] = []
        for r in runs:
            if merged and r[0] - merged[-1][1] < fill_frames:
                merged[-1][1] = r[1]
            else:
                merged.append(r)
        for a, b in merged:
            if b - a >= min_frames:
                out.append(Segment(name, a * FRAME_HOP_SAMPLES, b * FRAME_HOP_SAMPLES + 80))
    return out


def merge_tracks_by_voice(track_probs: np.ndarray, audio: np.ndarray, sv: UniSpeechSatForXVector,
                          fe: FeatureExtractor, threshold: float) -> np.ndarray:
    """Merge tracks whose solo speech (>= 1 s) embeds within `threshold` cosine of each other."""
    active = track_probs > 0.5
    vecs: list[np.ndarray | None] = []
    for k in range(len(track_probs)):
        solo = active[k] & (active.sum(0) == 1)
        frames = np.flatnonzero(solo)
        if len(frames) < 50:
            vecs.append(None)
            continue
        pieces = [audio[f * FRAME_HOP_SAMPLES:(f + 1) * FRAME_HOP_SAMPLES] for f in frames]
        vecs.append(xvector_embeddings(sv, fe, [np.concatenate(pieces)])[0])
    groups = list(range(len(track_probs)))
    for a in range(len(vecs)):
        for b in range(a):
            if vecs[a] is not None and vecs[b] is not None and float(vecs[a] @ vecs[b]) >= threshold:
                old, new = groups[a], groups[b]
                groups = [new if g == old else g for g in groups]
    labels = sorted(set(groups))
    return np.stack([np.max(track_probs[[k for k, g in enumerate(groups) if g == lab]], axis=0) for lab in labels]) \
        if len(track_probs) else track_probs


def evaluate_der(model_dir: Path, conv_dir: Path, sv_threshold: float) -> dict:
    """Offline DER over the test conversations."""
    import soundfile as sf

    sd = UniSpeechSatForAudioFrameClassification.from_pretrained(model_dir / "sd")
    sv = UniSpeechSatForXVector.from_pretrained(model_dir / "sv")
    fe = FeatureExtractor.from_pretrained(model_dir / "sd")
    total = DerResult(0, 0, 0, 0)
    per_file = {}
    for wav in sorted(conv_dir.glob("*.wav")):
        audio, rate = sf.read(wav, dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{wav} has sample rate {rate}, expected {SAMPLE_RATE}")
        ref = read_rttm((conv_dir / f"{wav.stem}.rttm").read_text())[wav.stem]
        n_frames = len(audio) // FRAME_HOP_SAMPLES
        tracks = stitch_windows(window_activity(sd, fe, audio), n_frames)
        tracks = merge_tracks_by_voice(tracks, audio, sv, fe, sv_threshold)
        hyp = activity_segments(tracks, [f"T{k}" for k in range(len(tracks))])
        r = diarization_error(ref, hyp)
        per_file[wav.stem] = round(r.der, 4)
        total = total + r
    return {"files": len(per_file), "scored_s": round(total.scored_s, 1), "der": total.der,
            "miss": total.miss_s / total.scored_s, "false_alarm": total.false_alarm_s / total.scored_s,
            "confusion": total.confusion_s / total.scored_s, "per_file": per_file, "collar_s": 0.25,
            "scorer": "training.scoring.diarization_error (md-eval rules, own implementation)"}


def more_der_lines(more: dict | None) -> list[str]:
    """The report's line on the streaming DER of the extra test conversations (empty without them)."""
    if not more:
        return []
    return ["", f"Streaming DER of {more['conversations']} more test conversations (built with seed tag "
            f"{more['seed_tag']}, `training.tune_clustering --score-only --split test`): {100 * more['der']:.1f} %, "
            f"confusion {100 * more['confusion']:.1f} %, turns named right {100 * more['der_turns_named_right']:.1f} %."]


def pooled_der(*parts: dict) -> dict | None:
    """One DER over several scored sets (error seconds over scored seconds, as md-eval pools files);
    None when a part lacks the seconds (results written before session 12)."""
    if not parts or any("scored_s" not in p or "error_s" not in p for p in parts):
        return None
    scored = sum(p["scored_s"] for p in parts)
    error = sum(p["error_s"] for p in parts)
    conversations = sum(p.get("files", p.get("conversations", 0)) for p in parts)
    return {"conversations": conversations, "der": round(error / scored, 4) if scored else 0.0,
            "scored_s": round(scored, 3), "error_s": round(error, 3)}


def pooled_der_lines(pooled: dict | None) -> list[str]:
    """The report's line on the DER over every scored test conversation (empty without it)."""
    if not pooled:
        return []
    return ["", f"Streaming DER over all {pooled['conversations']} test conversations above, pooled "
            f"({pooled['error_s']:.0f} s of error in {pooled['scored_s']:.0f} s scored): {100 * pooled['der']:.1f} % "
            "(the figure the ship rule and the README use since session 12: 16 conversations move by several "
            "points with the draw)."]


def family_lines(by_family: dict[str, dict] | None) -> list[str]:
    """The report's per-voice-family CER paragraph (empty when the results have none)."""
    if not by_family:
        return []
    def cer(r: dict) -> str:
        return "/".join(f"{100 * r[k]:.1f}" for k in ("cer_lm", "cer_greedy") if k in r)
    keys = "with LM / greedy" if "cer_lm" in next(iter(by_family.values())) else "greedy"
    parts = [f"{fam} {cer(r)} ({r['utterances']})" for fam, r in by_family.items()]
    return ["", f"Test CER offline by voice family, % {keys} (utterances), worst first: " + ", ".join(parts) + "."]


def markdown_report(results: dict, command: str) -> str:
    """The evaluation report (models/embedded/EVALUATION.md) as a Markdown table."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = ["# Evaluation of the embedded model", "",
             f"Measured with `{command}` on the held-out synthetic test split (voices and sentences",
             "never seen in training) and the everyday sentences written for the test set.", "",
             "| measure | set | offline | streaming (engine defaults) | streaming in bf16 |", "|---|---|---|---|---|"]
    stream = results.get("streaming", {})
    bf16 = results.get("streaming_bf16", {})
    for name, r in results["asr_offline"].items():
        s, b = stream.get(name, {}), bf16.get(name, {})
        for label, key in (("CER greedy", "cer_greedy"), ("WER greedy", "wer_greedy"), ("CER with LM", "cer_lm"),
                           ("WER with LM", "wer_lm")):
            where = f"{name} ({r['utterances']} utt.)" if key == "cer_greedy" else name
            lines.append(f"| {label} | {where} | {pct(r.get(key))} | {pct(s.get(key))} | {pct(b.get(key))} |")
    der = results.get("der_offline", {})
    sder = stream.get("der", {})
    lines.append(f"| DER (0.25 s collar, overlap scored) | {der.get('files')} test conversations | "
                 f"{pct(der.get('der'))} | {pct(sder.get('der'))} | {pct(bf16.get('der', {}).get('der'))} |")
    sv = results.get("sv_service", {})
    lines.append(f"| EER (app verification path) | {sv.get('target_trials')} target / {sv.get('impostor_trials')} "
                 f"impostor trials | {pct(sv.get('eer'))} | same | |")
    cli = results.get("sv_cli")
    if cli:
        lines.append(f"| EER (`run_live.py enroll` / `identify` / `verify` subprocesses) | {cli['speakers']} test speakers, "
                     f"{cli['target_trials']} target / {cli['impostor_trials']} impostor trials | {pct(cli['eer'])} | same | |")
        lines.append(f"| FAR / FRR at the CLI's threshold {cli['cli_threshold']:.4f} | same trials | "
                     f"{pct(cli['far_at_cli_threshold'])} / {pct(cli['frr_at_cli_threshold'])} | same | |")
    off = results.get("sv_offline", {})
    lines.append(f"| EER (3-clip enrolment, cosine) | {off.get('speakers')} held-out speakers | {pct(off.get('eer'))} | | |")
    tuning = results.get("lm_tuning")
    if tuning:
        by_beam = ", ".join(f"{w}: {pct(v['val_wer'])}" for w, v in tuning.get("val_wer_by_beam", {}).items())
        lines += ["", f"LM weights (measured on validation utterances, `--tune-lm`): alpha {tuning['alpha']}, "
                  f"beta {tuning['beta']}"
                  + (f", blank penalty {tuning['blank_penalty']}" if "blank_penalty" in tuning else "")
                  + f"; validation WER {pct(tuning['val_wer'])} at beam {tuning.get('beam_width')}"
                  + (f"; by beam width {by_beam}." if by_beam else ".")]
    clustering = results.get("clustering")
    if clustering:
        change = clustering["change_threshold"]
        lines += ["", f"Speaker clustering (measured on {clustering['conversations']} validation conversations, "
                  f"`training.tune_clustering`): threshold {clustering['threshold']:.2f}, speaker-change threshold "
                  f"{'off' if change is None else f'{change:.2f}'}; validation DER {pct(clustering['der'])}."]
    lines += ["", "DER components offline: " + ", ".join(f"{k} {pct(der.get(k))}" for k in ("miss", "false_alarm", "confusion")),
              "" if not sder else "DER components streaming: " + ", ".join(
                  f"{k} {pct(sder.get(k))}" for k in ("miss", "false_alarm", "confusion"))
              + ("" if "der_turns_named_right" not in sder else
                 f"; with every streaming turn named after the reference speaker it overlaps most, DER "
                 f"{pct(sder['der_turns_named_right'])} (segmentation; the rest is naming)"),
              *more_der_lines(results.get("streaming_der_more")),
              *pooled_der_lines(results.get("streaming_der_all")),
              *family_lines(results["asr_offline"].get("test", {}).get("by_family")),
              "", "Scorers: `training/scoring.py` (own implementation; DER follows md-eval rules on a 1 ms grid).",
              "Examples (reference / greedy / with LM):", ""]
    for name, r in results["asr_offline"].items():
        for ex in r["examples"]:
            lines.append(f"* `{ex['ref']}` / `{ex['greedy']}` / `{ex.get('lm', '')}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/embedded"))
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    parser.add_argument("--streaming", action="store_true", help="also run the streaming engine")
    parser.add_argument("--streaming-dtypes", default="fp32",
                        help="comma list of engine dtypes for --streaming (fp32 is the reported one; e.g. fp32,bf16)")
    parser.add_argument("--calibrate", action="store_true",
                        help="first write SV/verification.json from the validation speakers (engine.calibration)")
    parser.add_argument("--tune-clustering", action="store_true",
                        help="measure the engine's clustering threshold on validation conversations "
                             "(training.tune_clustering; writes clustering.threshold into sv/verification.json)")
    parser.add_argument("--tune-conversations", type=int, default=60,
                        help="validation conversations for --tune-clustering (default 60; 20 until session 11, "
                             "whose thresholds moved with the draw)")
    parser.add_argument("--tune-lm", action="store_true",
                        help="first choose the LM weights on validation utterances (writes ctc/lm_weights.json)")
    parser.add_argument("--tune-lm-only", action="store_true",
                        help="only choose the LM weights (as --tune-lm), then stop: after rebuilding the LM")
    parser.add_argument("--cli", action="store_true",
                        help="also measure EER through run_live.py enroll/identify/verify subprocesses (training.evaluate_cli)")
    parser.add_argument("--der-conversations", type=int, default=40,
                        help="with --streaming, also the streaming DER of this many more test conversations "
                             f"(seed tag {MORE_DER_SEED_TAG}; 0: none): 16 conversations move DER by several "
                             "points with the draw")
    parser.add_argument("--trials-dir", type=Path, default=Path("/work/runs/trials"))
    parser.add_argument("--limit", type=int, help="at most this many utterances per set (quick checks)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    corpus = Corpus(args.corpus)
    from models.lm import find_language_model

    lm = find_language_model(args.model / "ctc")
    sets = {}
    for name in ("test", "everyday"):
        n = len(corpus.rows[name]) if args.limit is None else min(args.limit, len(corpus.rows[name]))
        if n == 0:
            continue
        sets[name] = ([corpus.audio(name, i) for i in range(n)], [corpus.rows[name][i]["text"] for i in range(n)])
    t0 = time.monotonic()
    results: dict = {"model": str(args.model), "corpus": str(args.corpus), "lm": str(lm) if lm else None}
    if args.tune_lm:
        if lm is None:
            raise SystemExit(f"--tune-lm: {args.model / 'ctc'} has no language model")
        results["lm_tuning"] = tune_lm(args.model, corpus, lm)
        print(json.dumps(results["lm_tuning"], indent=1), flush=True)
    if args.tune_lm_only:
        if lm is None:
            raise SystemExit(f"--tune-lm-only: {args.model / 'ctc'} has no language model")
        print(json.dumps(tune_lm(args.model, corpus, lm), indent=1), flush=True)
        return
    families = {name: [voice_family(corpus.rows[name][i]["speaker"]) for i in range(len(sets[name][1]))]
                for name in sets}
    results["asr_offline"] = evaluate_asr(args.model, sets, lm, families)
    print(json.dumps(results["asr_offline"], indent=1), flush=True)
    results["sv_offline"] = evaluate_sv(args.model, corpus)
    print(json.dumps(results["sv_offline"], indent=1), flush=True)
    if args.calibrate:
        from engine.calibration import main as calibrate

        trials = write_trials(corpus, "val", args.trials_dir / "val")
        if calibrate(["--sv-model", str(args.model / "sv"), "--trials", str(trials)]) != 0:
            raise SystemExit("calibration failed (see above)")
    if args.tune_clustering:  # after --calibrate, which rewrites verification.json
        from training.tune_clustering import tune

        results["clustering"] = tune(args.model, corpus, count=args.tune_conversations)
        print(json.dumps(results["clustering"], indent=1), flush=True)
    results["sv_service"] = evaluate_sv_service(args.model, corpus)
    print(json.dumps(results["sv_service"], indent=1), flush=True)
    if args.cli:
        from training.evaluate_cli import evaluate_cli

        results["sv_cli"] = evaluate_cli(args.model.resolve(), corpus)
        print(json.dumps(results["sv_cli"], indent=1), flush=True)
    results["der_offline"] = evaluate_der(args.model, args.corpus / "conversations",
                                          results["sv_offline"]["eer_threshold"])
    print(json.dumps(results["der_offline"], indent=1), flush=True)
    if args.streaming:
        from training.evaluate_stream import evaluate_streaming

        for dtype in args.streaming_dtypes.split(","):
            key = "streaming" if dtype == "fp32" else f"streaming_{dtype}"
            results[key] = evaluate_streaming(args.model, sets, args.corpus / "conversations", lm, dtype)
            print(key, json.dumps(results[key], indent=1), flush=True)
        if args.der_conversations > 0:
            from training.tune_clustering import build_conversations, score

            more = build_conversations(corpus, "test", args.der_conversations, MORE_DER_SEED_TAG)
            results["streaming_der_more"] = {**score(args.model, more), "seed_tag": MORE_DER_SEED_TAG}
            print("streaming_der_more", json.dumps(results["streaming_der_more"], indent=1), flush=True)
            pooled = pooled_der(results["streaming"].get("der", {}), results["streaming_der_more"])
            if pooled:
                results["streaming_der_all"] = pooled
                print("streaming_der_all", json.dumps(pooled), flush=True)
    results["seconds"] = round(time.monotonic() - t0, 1)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.report:
        command = "python -m training.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
        args.report.write_text(markdown_report(results, command), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
