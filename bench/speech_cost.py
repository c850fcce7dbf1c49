"""What speech detection and span x-vectors cost per audio second, as ratios to the encoder's cost.

    .venv/bin/python -m bench.speech_cost [--model models/embedded] [--audio WAV] [--repeats 3]

The engine's default schedule runs, per caption window (2.2 s, one every 0.8 s), the shared encoder
pass (captions + speaker activity) and Silero VAD over the same window; and per speaker span (1.5 s
of detected speech, one every 0.5 s) an x-vector. Each is timed on exactly those inputs, batch 1
as one live stream gives them, in one process, alternated, median of the repeats. Printed: CPU
milliseconds per audio second and the ratio to the encoder. Real speech by default (the bundled
demo); spans are taken wherever the detector finds speech, as the engine does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "embedded")
    ap.add_argument("--audio", type=Path, default=ROOT / "app" / "demo" / "conversation.wav")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from engine.config import EngineConfig
    from engine.speech_model import EnergyDetector
    from engine.torch_models import TorchModels

    audio, rate = sf.read(a.audio, dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        raise SystemExit(f"{a.audio}: need 16 kHz mono")
    audio = audio[: int(a.seconds * 16000)]
    seconds = len(audio) / 16000
    tm = TorchModels.load(asr=str(a.model / "ctc"), diar=str(a.model / "sd"), sv=str(a.model / "sv"), device="cpu")
    cfg = EngineConfig()
    win, hop = cfg.ctc.window_samples, cfg.ctc.hop_samples
    windows = [audio[s : s + win] for s in range(0, len(audio) - win + 1, hop)]
    span = cfg.speakers.span_frames * 320
    span_hop = cfg.speakers.span_hop_frames * 320
    speech = tm.speech.speech_frames(audio) if tm.speech is not None else np.ones(len(audio) // 320, bool)
    spans = [audio[s : s + span] for s in range(0, len(audio) - span + 1, span_hop)
             if speech[s // 320 : (s + span) // 320].mean() >= cfg.speakers.span_min_speech]
    energy = EnergyDetector()
    want = frozenset({"ctc", "diar"} if tm.shared else {"ctc"})
    jobs = {
        "encoder (captions + activity)": lambda: [tm.run_windows(w[None], want) for w in windows],
        "silero VAD": lambda: [tm.run_windows(w[None], frozenset({"vad"})) for w in windows],
        "energy VAD (fallback)": lambda: [energy.frame_probs(w[None]) for w in windows],
        f"x-vectors ({len(spans)} spans)": lambda: [tm.run_windows(s[None], frozenset({"xvec"})) for s in spans],
    }
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for name, job in jobs.items():  # warm-up
        job()
    for _ in range(a.repeats):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["encoder (captions + activity)"])
    print(f"audio: {a.audio.name}, {seconds:.1f} s; {len(windows)} windows; torch threads {torch.get_num_threads()}")
    print(f"{'job':34s} {'ms per audio s':>15s} {'ratio to encoder':>17s}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:34s} {1000 * m / seconds:15.1f} {m / base:17.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
