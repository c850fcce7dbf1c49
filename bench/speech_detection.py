"""How well each speech detector finds the speech of a folder of real recordings (WAV + RTTM).

    .venv/bin/python -m bench.speech_detection ../shared/real/ami-dev

Reference speech is the union of the RTTM's turns, on the engine's 20 ms frames, no collar. For
each detector: frame miss (reference speech not detected) and false alarm (detected, not speech),
both as a share of the reference speech, pooled over the files, as md-eval's detection error
counts them. Detectors: Silero VAD as the engine runs it (each caption window from a fresh state,
the frames it commits, threshold and padding of `SpeechConfig`), Silero over the whole file in one
pass, and the energy detector (the fallback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def engine_mask(detector, audio: np.ndarray, cfg) -> np.ndarray:
    """Speech frames as the engine decides them: window by window, committed frames only, padded."""
    from engine.config import frames_in

    s = cfg.ctc
    n = frames_in(len(audio))
    probs = np.zeros(n, np.float32)
    k = 0
    while True:
        start = k * s.hop_samples
        window = audio[start : start + s.window_samples]
        if len(window) < 400:
            break
        p = detector.frame_probs(window[None])[0]
        first = start // 320
        lo = 0 if k == 0 else first + s.left_frames
        hi = n if start + s.window_samples >= len(audio) else first + s.left_frames + s.hop_frames
        probs[lo:hi] = p[lo - first : hi - first]
        if hi >= n:
            break
        k += 1
    from engine.speech_detect import padded_speech

    return padded_speech(probs, cfg.speech.threshold, cfg.speech.pad_frames)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    a = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from engine.config import EngineConfig
    from engine.scoring import read_rttm
    from engine.speech_detect import EnergySpeechDetector
    from engine.speech_model import SileroDetector

    torch.set_num_threads(1)
    cfg = EngineConfig()
    silero, energy = SileroDetector(), EnergySpeechDetector()
    names = ("silero, as the engine runs it", "silero, one pass over the file", "energy (fallback)")
    totals = {k: np.zeros(3) for k in names}  # speech frames, missed, false alarm
    wavs = [w for w in sorted(a.folder.glob("*.wav")) if w.with_suffix(".rttm").is_file()]
    if not wavs:
        raise SystemExit(f"error: {a.folder}: no WAV with an RTTM beside it")
    for wav in wavs:
        audio, rate = sf.read(wav, dtype="float32")
        if rate != 16000 or audio.ndim != 1:
            raise SystemExit(f"error: {wav}: need 16 kHz mono")
        n = len(audio) // 320
        ref = np.zeros(n, bool)
        for segs in read_rttm(wav.with_suffix(".rttm").read_text()).values():
            for seg in segs:
                ref[seg.start // 320 : -(-seg.end // 320)] = True
        masks = {
            names[0]: engine_mask(silero, audio, cfg),
            names[1]: silero.speech_frames(audio, cfg.speech.threshold),
            names[2]: energy.speech_frames(audio),
        }
        for k, m in masks.items():
            m = np.resize(np.asarray(m, bool), n) if len(m) != n else np.asarray(m, bool)
            totals[k] += (ref.sum(), (ref & ~m).sum(), (~ref & m).sum())
    print(f"{len(wavs)} files, {sum(t for t in [totals[names[0]][0]]) * 0.02:.1f} s of reference speech")
    print(f"{'detector':34s} {'miss':>7s} {'false alarm':>12s} {'detection error':>16s}")
    for k, (speech, miss, fa) in totals.items():
        print(f"{k:34s} {miss / speech:7.1%} {fa / speech:12.1%} {(miss + fa) / speech:16.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
