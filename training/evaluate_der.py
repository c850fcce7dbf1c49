"""Diarization offline: DER of the speaker-activity head over the test conversations (5 s windows,
hop 2.5 s, slots stitched across windows by their agreement on the overlap, then tracks merged by
x-vector cosine), scored by `training.scoring.diarization_error` (0.25 s collar, overlap scored);
and `pooled_der`, one DER over several scored sets.

Part of `python -m training.evaluate`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE
from models import FeatureExtractor, UniSpeechSatForAudioFrameClassification, UniSpeechSatForXVector
from training.evaluate_sv import xvector_embeddings
from training.mixing import Segment, read_rttm
from training.scoring import DerResult, diarization_error

WINDOW_S, HOP_S = 5.0, 2.5
MIN_WINDOW_SAMPLES = SAMPLE_RATE // 2  # a shorter last window is zero-padded to this


@torch.no_grad()
def window_activity(model: UniSpeechSatForAudioFrameClassification, fe: FeatureExtractor, audio: np.ndarray
                    ) -> list[tuple[int, np.ndarray]]:
    """(start frame, (T, slots) sigmoid probabilities) per 5 s window, hop 2.5 s."""
    win, hop = int(WINDOW_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE)
    starts = list(range(0, max(1, len(audio) - win + hop), hop))
    out = []
    for s in starts:
        piece = audio[s:s + win]
        if len(piece) < MIN_WINDOW_SAMPLES:
            piece = np.pad(piece, (0, MIN_WINDOW_SAMPLES - len(piece)))
        x, m = fe([piece], sampling_rate=SAMPLE_RATE)
        probs = torch.sigmoid(model(x, m).logits[0]).numpy()
        out.append((s // FRAME_SAMPLES, probs))
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
                out.append(Segment(name, a * FRAME_SAMPLES, b * FRAME_SAMPLES + 80))
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
        pieces = [audio[f * FRAME_SAMPLES:(f + 1) * FRAME_SAMPLES] for f in frames]
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
        n_frames = len(audio) // FRAME_SAMPLES
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
