"""Latency vs accuracy vs compute of caption window schedules (the data behind the defaults).

    .venv/bin/python bench/engine_context.py --ctc CKPT_DIR [--audio WAV] [--seconds 20]

For each (left, hop, right) context schedule it commits frames exactly as the engine does and
compares them with one full-context forward over the whole clip: argmax agreement of the CTC
frames (the greedy decode the engine emits) and the mean absolute log-probability difference on
non-blank frames, beside the algorithmic latency (hop + right) and the compute factor (window /
hop: encoder seconds per audio second). A model with real weights (models/embedded/ctc) gives
the meaningful figures; random weights still show how far context reaches through the network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SCHEDULES = [  # (left_s, hop_s, right_s)
    (0.5, 0.8, 0.3),
    (1.0, 0.8, 0.3),
    (1.0, 0.8, 0.4),
    (1.0, 0.8, 0.5),
    (0.6, 1.0, 0.4),
    (1.0, 1.0, 0.5),
    (1.5, 0.8, 0.5),
    (1.0, 0.8, 0.8),
    (2.0, 1.0, 1.0),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ctc", required=True, help="CTC checkpoint folder")
    ap.add_argument("--audio", help="a 16 kHz wav (default: espeak-ng speech as in engine_rtf.py)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--dtype", default="fp32")
    a = ap.parse_args()

    import soundfile as sf
    import torch

    from engine.config import HeadSchedule, frames_in
    from engine.torch_models import TorchModels

    if a.audio:
        audio, rate = sf.read(a.audio, dtype="float32")
        if rate != 16000:
            raise SystemExit(f"{a.audio}: {rate} Hz, need 16000")
    else:
        from bench.engine_rtf import make_audio

        audio, _ = sf.read(make_audio(a.seconds, Path("/tmp") / f"engine_context_{int(a.seconds)}s.wav"), dtype="float32")
    audio = audio[: int(a.seconds * 16000)]
    tm = TorchModels.load(asr=a.ctc, device="cpu", dtype=a.dtype)
    want = frozenset({"ctc"})
    full = tm.run_windows(audio[None], want).ctc_log_probs[0]
    n = frames_in(len(audio))
    ref_ids = full.argmax(-1)
    speechy = ref_ids != tm.vocab.blank_id
    print(f"# {a.ctc}, {len(audio) / 16000:.1f} s, {n} frames, {speechy.mean():.0%} non-blank in the full-context pass, "
          f"torch threads {torch.get_num_threads()}")
    print("| left s | hop s | right s | window s | latency s (hop+right) | compute x (window/hop) | argmax agree % | agree % non-blank | mean abs dlogp non-blank |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for left_s, hop_s, right_s in SCHEDULES:
        s = HeadSchedule.from_seconds(left_s, hop_s, right_s)
        got = np.zeros_like(full)
        k, done = 0, 0
        while k * s.hop_samples + s.window_samples <= len(audio):  # the engine's full windows
            start = k * s.hop_samples
            lp = tm.run_windows(audio[start : start + s.window_samples][None], want).ctc_log_probs[0]
            f0 = start // 320
            hi = f0 + s.left_frames + s.hop_frames
            got[done:hi] = lp[done - f0 : hi - f0]
            done, k = hi, k + 1
        start = min(max(0, -(-(len(audio) - s.window_samples) // 320) * 320), done * 320)  # the flush window
        lp = tm.run_windows(audio[start:][None], want).ctc_log_probs[0]
        got[done:n] = lp[done - start // 320 : n - start // 320]
        ids = got.argmax(-1)
        agree = (ids == ref_ids).mean()
        agree_sp = (ids[speechy] == ref_ids[speechy]).mean() if speechy.any() else float("nan")
        dl = np.abs(got - full)[speechy].mean() if speechy.any() else float("nan")
        print(f"| {left_s} | {hop_s} | {right_s} | {s.window_samples / 16000:.2f} | {s.algorithmic_latency_samples / 16000:.2f} | "
              f"{s.window_samples / s.hop_samples:.2f} | {100 * agree:.1f} | {100 * agree_sp:.1f} | {dl:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
