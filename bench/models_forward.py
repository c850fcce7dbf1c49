"""Forward time of our UniSpeech-SAT backbone against transformers' on the same weights.

Base-size config (or `--variant large`), random weights, fp32 CPU, timed alternately in one
process (median of `--repeats`), printing ours/transformers time ratios; max|diff| <= 1e-4 is
asserted on the very outputs that were timed. Then the bfloat16 CPU path (and fp16/bf16 on CUDA
when a GPU is present) with its max difference against our fp32 output.

    .venv/bin/python -m bench.models_forward                 # 1/4/8/16 s, batch 1 and 8
    .venv/bin/python -m bench.models_forward --quick         # 1 and 8 s, batch 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

import models
from engine.timebase import SAMPLE_RATE

FP32_ATOL = 1e-4


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def build_pair(variant: str, seed: int = 0):
    """transformers' model with random weights, and ours loaded from its save_pretrained folder."""
    import transformers

    overrides = {} if variant == "base" else dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(seed)
    ref = transformers.UniSpeechSatModel(transformers.UniSpeechSatConfig(**overrides)).eval()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        ours = models.UniSpeechSatModel.from_pretrained(folder)
    return ref, ours


def compare_fp32(ref, ours, durations, batches, repeats) -> list[tuple]:
    rows = []
    print(f"{'batch':>5} {'audio_s':>7} {'transformers_s':>14} {'ours_s':>8} {'ratio':>6} {'max|diff|':>10}  load")
    for batch in batches:
        for seconds in durations:
            x = torch.randn(batch, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                ref(x), ours(x)  # warm-up
                t_ref, t_ours, worst = [], [], 0.0
                for r in range(repeats):
                    runs = [("ref", ref), ("ours", ours)]
                    outs = {}
                    for name, model in (runs if r % 2 == 0 else runs[::-1]):
                        elapsed, out = _timed(lambda m=model: m(x).last_hidden_state)
                        (t_ref if name == "ref" else t_ours).append(elapsed)
                        outs[name] = out
                    diff = (outs["ref"] - outs["ours"]).abs().max().item()
                    assert diff <= FP32_ATOL, f"batch {batch}, {seconds} s: max|diff| {diff:.3g} > {FP32_ATOL}"
                    worst = max(worst, diff)
            mr, mo = statistics.median(t_ref), statistics.median(t_ours)
            rows.append((batch, seconds, mr, mo, mo / mr, worst))
            print(f"{batch:>5} {seconds:>7g} {mr:>14.3f} {mo:>8.3f} {mo / mr:>6.2f} {worst:>10.2e}  {_load()}",
                  flush=True)
    return rows


def compare_low_precision(ref, ours, durations, repeats, device: str, dtypes) -> None:
    """Time ours (and transformers) in lower precision; max|diff| against our fp32 output."""
    for dtype in dtypes:
        low = models.UniSpeechSatModel(ours.config).eval()
        low.load_state_dict(ours.state_dict())
        low.to(device=device, dtype=dtype)
        ref_low = type(ref)(ref.config).eval()
        ref_low.load_state_dict(ref.state_dict())
        ref_low.to(device=device, dtype=dtype)
        name = str(dtype).replace("torch.", "")
        for seconds in durations:
            x = torch.randn(1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                exact = ours(x).last_hidden_state
                xl = x.to(device=device, dtype=dtype)
                low(xl), ref_low(xl)
                t_low, t_ref = [], []
                for _ in range(repeats):
                    elapsed, out = _timed(lambda: _sync(low(xl).last_hidden_state))
                    t_low.append(elapsed)
                    elapsed, _ = _timed(lambda: _sync(ref_low(xl).last_hidden_state))
                    t_ref.append(elapsed)
                diff = (out.float().cpu() - exact).abs()
            print(f"{device} {name:>8} {seconds:>4g} s: ours {statistics.median(t_low):.3f} s, transformers "
                  f"{statistics.median(t_ref):.3f} s; vs our fp32: max|diff| {diff.max().item():.3g}, "
                  f"mean|diff| {diff.mean().item():.3g} (|fp32| mean {exact.abs().mean().item():.3g})  load {_load()}",
                  flush=True)


def _sync(t: torch.Tensor) -> torch.Tensor:
    if t.is_cuda:
        torch.cuda.synchronize()
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("base", "large"), default="base")
    parser.add_argument("--durations", type=float, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 and 8 s, batch 1, 3 repeats")
    parser.add_argument("--no-low-precision", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.durations, args.batches, args.repeats = [1, 8], [1], 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, variant {args.variant}, "
          f"load average {_load()} (other processes on this machine distort timings)")
    ref, ours = build_pair(args.variant)
    compare_fp32(ref, ours, args.durations, args.batches, args.repeats)
    if not args.no_low_precision:
        compare_low_precision(ref, ours, [1, 8], 3, "cpu", [torch.bfloat16])
        if torch.cuda.is_available():
            compare_low_precision(ref, ours, [1, 8], 5, "cuda", [torch.float16, torch.bfloat16])
        else:
            print("cuda: not measured (no GPU on this machine)")


if __name__ == "__main__":
    main()
