"""Engine throughput and latency vs the naive transformers loop, on base-size random checkpoints.

    .venv/bin/python bench/engine_rtf.py [--seconds 60] [--dtypes fp32,bf16] [--sched-streams 4]

Makes (once, in --ckpt-dir) base-size random checkpoints for all three heads with models/
`save_pretrained`, makes --seconds of two-voice espeak-ng speech, then runs each contender in its
own process so that its real-time factor counts everything: interpreter start, imports, model
loading and compute (RTF = process wall time / audio length).

- engine: `Engine.from_checkpoints(asr, diar, sv)` and one stream fed 100 ms blocks as fast as it
  takes them.
- live: the whole app, `run_live.py --input AUDIO --fast --headless` on the three checkpoints
  (JSON lines to a file, a throw-away speaker store): the product's own real-time factor.
- naive: what a user would write — transformers' three classes loaded once, fp32,
  `torch.inference_mode`, each input preprocessed by its own feature extractor, every 1 s on the
  last 5 s of audio.

Latency (sample arrival to caption event) is measured without sleeping: block k "arrives" when its
last sample would have been recorded, a block is processed when it has arrived and the previous
one is done, and the measured compute time is added; an event's time is the end of the call that
returned it. Engine: per final word, event time - arrival of the word's last sample. Naive: per
20 ms frame, time of the first result covering it - its arrival. Both also per committed frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.timebase import SAMPLE_RATE as SR  # noqa: E402

BLOCK = SR // 10  # 100 ms, a typical audio callback


# -- set-up -------------------------------------------------------------------------------------


def make_checkpoints(root: Path) -> dict[str, Path]:
    """Base-size random CTC, frame-classification and x-vector folders (reused when present)."""
    import torch

    import models
    from tests.tiny_checkpoints import LIBRI_VOCAB, write_preprocessor, write_vocab

    out = {}
    for head, klass, extra in (
        ("ctc", models.UniSpeechSatForCTC, {"vocab_size": 32}),
        ("sd", models.UniSpeechSatForAudioFrameClassification, {"num_labels": 2, "use_weighted_layer_sum": True}),
        ("sv", models.UniSpeechSatForXVector, {"num_labels": 1251, "use_weighted_layer_sum": True}),
    ):
        path = root / head
        out[head] = path
        if (path / "model.safetensors").is_file():
            continue
        torch.manual_seed({"ctc": 1, "sd": 2, "sv": 3}[head])
        model = klass(models.UniSpeechSatConfig.from_dict({"model_type": "unispeech-sat", **extra}))
        model.init_weights()
        model.save_pretrained(path)
        write_preprocessor(path, do_normalize=head == "ctc", return_attention_mask=head != "ctc")
        if head == "ctc":
            write_vocab(path)
        assert len(LIBRI_VOCAB) == 32
    return out


def make_audio(seconds: float, path: Path) -> Path:
    """Two espeak-ng voices taking turns (falls back to noise bursts without espeak-ng)."""
    import soundfile as sf

    if path.is_file():
        return path
    text = ("the meeting starts with the budget and the plans for next year. "
            "we should look at the numbers before we decide anything. ") * 4
    pieces, total = [], 0
    voice = 0
    try:
        while total < seconds * SR:
            wav = path.with_suffix(f".{voice}.wav")
            subprocess.run(["espeak-ng", "-v", ["en-us", "en-gb+f3"][voice % 2], "-s", "160", "-w", str(wav), text[: 90 + 30 * voice]],
                           check=True, capture_output=True)
            x, rate = sf.read(wav, dtype="float32")
            wav.unlink()
            import soxr

            x = soxr.resample(x, rate, SR).astype(np.float32)
            pieces += [x, np.zeros(SR // 2, dtype=np.float32)]
            total += len(x) + SR // 2
            voice += 1
        audio = np.concatenate(pieces)[: int(seconds * SR)]
    except (OSError, subprocess.CalledProcessError):
        rng = np.random.default_rng(0)
        audio = (0.1 * rng.standard_normal(int(seconds * SR)) * (np.sin(np.arange(int(seconds * SR)) / 8000) > 0)).astype(np.float32)
    sf.write(path, audio, SR)
    return path


def bf16_probe(ckpt: str) -> dict:
    """One 2.3 s caption window in fp32 and bf16 (for CPUs without native bf16)."""
    import torch

    from engine.torch_models import TorchModels

    x = (0.1 * np.random.default_rng(0).standard_normal((1, 36800))).astype(np.float32)
    out = {}
    for dtype in ("fp32", "bf16"):
        tm = TorchModels.load(asr=ckpt, device="cpu", dtype=dtype)
        tm.run_windows(x, frozenset({"ctc"}))
        t0 = time.perf_counter()
        tm.run_windows(x, frozenset({"ctc"}))
        out[f"{dtype}_window_s"] = round(time.perf_counter() - t0, 3)
    out["bf16_slowdown"] = round(out["bf16_window_s"] / out["fp32_window_s"], 1)
    out["threads"] = torch.get_num_threads()
    return out


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3), "n": len(a)}


# -- workers (each in its own process) ----------------------------------------------------------


def engine_config(ctc: str | None = None, diar: str | None = None):
    """EngineConfig with the caption / speaker schedules given as "left,hop,right" seconds."""
    import dataclasses

    from engine import EngineConfig
    from engine.config import HeadSchedule

    cfg = EngineConfig()
    for name, spec in (("ctc", ctc), ("diar", diar)):
        if spec:
            left, hop, right = (float(v) for v in spec.split(","))
            cfg = dataclasses.replace(cfg, **{name: HeadSchedule.from_seconds(left, hop, right)})
    return cfg


def worker_engine(ckpts: dict[str, str], audio_path: str, dtype: str, degrade: bool = False,
                  config=None) -> dict:
    import soundfile as sf

    from engine import Engine, EngineConfig
    from engine.events import CaptionFinal

    t_load = time.perf_counter()
    engine = Engine.from_checkpoints(asr=ckpts["ctc"], diar=ckpts["sd"], sv=ckpts["sv"], device="cpu", dtype=dtype,
                                     config=config or EngineConfig())
    load_s = time.perf_counter() - t_load
    audio, _ = sf.read(audio_path, dtype="float32")
    stream = engine.new_stream()
    clock, compute, word_lat, frame_lat, finals = 0.0, 0.0, [], [], 0
    committed, max_level = 0, 0
    for k in range(0, len(audio), BLOCK):
        block = audio[k : k + BLOCK]
        arrival = (k + len(block)) / SR
        if degrade:  # as the app does: tell the stream how far behind real time it is
            stream.report_load(backlog_samples=int(max(0.0, clock - arrival) * SR))
        t0 = time.perf_counter()
        events = stream.accept(block)
        dt = time.perf_counter() - t0
        compute += dt
        clock = max(clock, arrival) + dt
        for e in events:
            if isinstance(e, CaptionFinal):
                finals += 1
                word_lat += [clock - (w.end_frame * 320 + 80) / SR for w in e.words]
        max_level = max(max_level, stream.level)
        now = stream._decoder.next_frame
        frame_lat += [clock - ((f + 1) * 320 + 80) / SR for f in range(committed, now)]
        committed = now
    t0 = time.perf_counter()
    stream.flush()
    compute += time.perf_counter() - t0
    result = {
        "load_s": round(load_s, 2), "compute_s": round(compute, 2), "compute_rtf": round(compute / (len(audio) / SR), 3),
        "word_latency_s": percentiles(word_lat), "frame_latency_s": percentiles(frame_lat),
        "windows": stream.windows, "caption_finals": finals, "embed_calls": _embed_calls(stream),
        "shared_encoder": engine.models.shared, "dropped_s": round(stream.dropped_samples / SR, 2),
        "max_degrade_level": max_level,
    }
    return result


def worker_sched(ckpts: dict[str, str], audio_path: str, dtype: str, sched_streams: int, config=None) -> dict:
    """Several streams through the batching scheduler: compute per stream-second of audio."""
    import soundfile as sf

    from engine import Engine, EngineConfig

    engine = Engine.from_checkpoints(asr=ckpts["ctc"], diar=ckpts["sd"], sv=ckpts["sv"], device="cpu", dtype=dtype,
                                     config=config or EngineConfig())
    audio, _ = sf.read(audio_path, dtype="float32")
    result = {}
    if sched_streams > 1:
        n_s = min(len(audio), 20 * SR)
        sched = engine.scheduler()
        ids = [sched.add_stream().stream_id for _ in range(sched_streams)]
        t0 = time.perf_counter()
        for k in range(0, n_s, SR):
            for i, sid in enumerate(ids):  # each stream hears a different part of the clip
                off = (i * 7 * SR + k) % (len(audio) - SR)
                sched.submit(sid, audio[off : off + SR])
            sched.run_until_idle()
        for sid in ids:
            sched.flush(sid)
        total = time.perf_counter() - t0
        result["scheduler"] = {"streams": sched_streams, "audio_s_each": n_s / SR, "compute_s": round(total, 2),
                               "compute_rtf_per_stream": round(total / (sched_streams * n_s / SR), 3),
                               "forwards": sched.stats.forwards, "windows": sched.stats.windows}
    return result


def _embed_calls(stream) -> int:
    t = stream.tracker
    return sum(getattr(r, "embeddings", 0) for r in t.runs.values()) if t is not None else 0  # span turns: none


def worker_naive(ckpts: dict[str, str], audio_path: str) -> dict:
    import soundfile as sf
    import torch
    import transformers

    t_load = time.perf_counter()
    ctc = transformers.UniSpeechSatForCTC.from_pretrained(ckpts["ctc"]).eval()
    sd = transformers.UniSpeechSatForAudioFrameClassification.from_pretrained(ckpts["sd"]).eval()
    sv = transformers.UniSpeechSatForXVector.from_pretrained(ckpts["sv"]).eval()
    fes = {k: transformers.Wav2Vec2FeatureExtractor.from_pretrained(ckpts[k]) for k in ("ctc", "sd", "sv")}
    load_s = time.perf_counter() - t_load
    audio, _ = sf.read(audio_path, dtype="float32")
    clock, compute, frame_lat = 0.0, 0.0, []
    seconds = int(len(audio) // SR)
    covered = 0  # frames already shown
    for step in range(1, seconds + 1):
        arrival = float(step)
        t0 = time.perf_counter()
        window = audio[max(0, step * SR - 5 * SR) : step * SR]
        with torch.inference_mode():
            outs = []
            for key, model in (("ctc", ctc), ("sd", sd), ("sv", sv)):
                inputs = fes[key](window, sampling_rate=SR, return_tensors="pt")
                outs.append(model(**inputs))
            ids = outs[0].logits.argmax(-1)  # greedy CTC of the last 5 s, as a user would
            _ = torch.sigmoid(outs[1].logits) > 0.5
            _ = torch.nn.functional.normalize(outs[2].embeddings, dim=-1)
        dt = time.perf_counter() - t0
        compute += dt
        clock = max(clock, arrival) + dt
        now = (step * SR - 400) // 320 + 1
        frame_lat += [clock - ((f + 1) * 320 + 80) / SR for f in range(covered, now)]
        covered = now
        del ids
    return {"load_s": round(load_s, 2), "compute_s": round(compute, 2), "compute_rtf": round(compute / (len(audio) / SR), 3),
            "frame_latency_s": percentiles(frame_lat), "windows": seconds * 3}


# -- driver -------------------------------------------------------------------------------------


def run_live(ckpts: dict[str, str], audio_path: str, dtype: str, threads: int, seconds: float) -> dict:
    """`run_live.py --fast --headless` as a user runs it; RTF = process wall time / audio length."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "run_live.py"), "--input", audio_path, "--fast", "--headless",
               "--asr-model", ckpts["ctc"], "--diar-model", ckpts["sd"], "--sv-model", ckpts["sv"],
               "--dtype", dtype, "--speakers-db", os.path.join(tmp, "speakers.db"),
               "--jsonl", os.path.join(tmp, "events.jsonl")]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"run_live.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = Path(tmp, "events.jsonl").read_text(encoding="utf-8").splitlines()
    finals = sum(1 for line in lines if '"caption_final"' in line)
    return {"process_wall_s": round(wall, 2), "process_rtf": round(wall / seconds, 3), "events": len(lines),
            "caption_finals": finals}


def run_worker(args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--ckpt-dir", default=os.path.join(tempfile.gettempdir(), "engine_bench_ckpts"))
    ap.add_argument("--sched-streams", type=int, default=4, help="streams for the batched scheduler run (0: skip)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-live", action="store_true", help="skip run_live.py --fast --headless")
    ap.add_argument("--degrade", action="store_true", help="also run the engine reporting its lag (degrade policy on)")
    ap.add_argument("--force-bf16", action="store_true", help="run bf16 even where the CPU emulates it")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    ap.add_argument("--ctc-schedule", help='caption windows as "left,hop,right" seconds (default: the engine\'s)')
    ap.add_argument("--diar-schedule", help='speaker windows as "left,hop,right" seconds (default: the engine\'s)')
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", choices=["engine", "naive", "sched"], help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    a = ap.parse_args()
    root = Path(a.ckpt_dir)
    if a.worker:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        ckpts = {k: str(root / k) for k in ("ctc", "sd", "sv")}
        config = engine_config(a.ctc_schedule, a.diar_schedule)
        if a.worker == "engine":
            out = worker_engine(ckpts, a.audio, a.dtype, a.degrade, config)
        elif a.worker == "sched":
            out = worker_sched(ckpts, a.audio, a.dtype, a.sched_streams, config)
        else:
            out = worker_naive(ckpts, a.audio)
        print(json.dumps(out))
        return 0
    root.mkdir(parents=True, exist_ok=True)
    make_checkpoints(root)
    audio = make_audio(a.seconds, root / f"speech_{int(a.seconds)}s.wav")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, audio {a.seconds:.0f} s, blocks of {BLOCK} samples", flush=True)
    cfg = engine_config(a.ctc_schedule, a.diar_schedule)
    sched_args = [*(["--ctc-schedule", a.ctc_schedule] if a.ctc_schedule else []),
                  *(["--diar-schedule", a.diar_schedule] if a.diar_schedule else [])]
    print(f"# caption schedule {cfg.ctc}, speaker schedule {cfg.diar}", flush=True)
    results = {}
    live: dict[str, dict] = {}
    dtypes = a.dtypes.split(",")
    from models.hardware import cpu_has_native_bf16

    if "bf16" in dtypes and not cpu_has_native_bf16() and not a.force_bf16:
        probe = bf16_probe(str(root / "ctc"))
        print(f"# this CPU has no AVX512-BF16/AMX: bf16 is emulated; one caption window: {json.dumps(probe)}; "
              "skipping the full bf16 run (--force-bf16 runs it)", flush=True)
        dtypes.remove("bf16")
    for dtype in dtypes:
        results[f"engine-{dtype}"] = run_worker(["--worker", "engine", "--dtype", dtype, "--audio", str(audio),
                                                 "--ckpt-dir", str(root), "--threads", str(a.threads), *sched_args])
        if a.degrade:
            results[f"engine-{dtype}-degrade"] = run_worker([
                "--worker", "engine", "--dtype", dtype, "--audio", str(audio), "--ckpt-dir", str(root),
                "--threads", str(a.threads), "--degrade", *sched_args])
            print(f"engine {dtype} degrade: {json.dumps(results[f'engine-{dtype}-degrade'])}", flush=True)
        if a.sched_streams > 1:
            sched = run_worker(["--worker", "sched", "--dtype", dtype, "--audio", str(audio), "--ckpt-dir", str(root),
                                "--sched-streams", str(a.sched_streams), "--threads", str(a.threads), *sched_args])
            results[f"engine-{dtype}"]["scheduler"] = sched["scheduler"]
        print(f"engine {dtype}: {json.dumps(results[f'engine-{dtype}'])}", flush=True)
        if not a.skip_live:
            ckpts = {k: str(root / k) for k in ("ctc", "sd", "sv")}
            live[dtype] = run_live(ckpts, str(audio), dtype, a.threads, a.seconds)
            print(f"run_live.py --fast --headless {dtype}: {json.dumps(live[dtype])}", flush=True)
    if not a.skip_naive:
        results["naive-fp32"] = run_worker(["--worker", "naive", "--audio", str(audio), "--ckpt-dir", str(root),
                                            "--threads", str(a.threads)])
        print(f"naive fp32: {json.dumps(results['naive-fp32'])}", flush=True)
    print("\n| run | process RTF | compute RTF | load s | word latency p50/p95 s | frame latency p50/p95 s | dropped s (level) "
          "| streams/machine* |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        rtf = r["process_wall_s"] / a.seconds
        r["process_rtf"] = round(rtf, 3)
        wl = r.get("word_latency_s", {})
        fl = r["frame_latency_s"]
        per = r.get("scheduler", {}).get("compute_rtf_per_stream", r["compute_rtf"])
        streams = round(1.0 / per, 1) if per else 0
        r["streams_per_machine"] = streams
        print(f"| {name} | {rtf:.3f} | {r['compute_rtf']:.3f} | {r['load_s']} | {wl.get('p50')}/{wl.get('p95')} | "
              f"{fl['p50']}/{fl['p95']} | {r.get('dropped_s', 0)} ({r.get('max_degrade_level', '-')}) | {streams} |")
    if "naive-fp32" in results:
        for name, r in results.items():
            if name != "naive-fp32":
                print(f"{name}: {results['naive-fp32']['process_wall_s'] / r['process_wall_s']:.2f}x faster than naive "
                      f"(whole process), {results['naive-fp32']['compute_s'] / r['compute_s']:.2f}x (compute)")
    print("* streams/machine = 1 / compute RTF per stream (batched scheduler run when --sched-streams > 1)")
    if live:
        print("\n| app | process RTF (run_live.py --fast --headless) | wall s | caption finals |")
        print("| --- | --- | --- | --- |")
        for dtype, r in live.items():
            print(f"| run_live {dtype} | {r['process_rtf']:.3f} | {r['process_wall_s']} | {r['caption_finals']} |")
        if "naive-fp32" in results:
            for dtype, r in live.items():
                print(f"run_live {dtype}: {results['naive-fp32']['process_wall_s'] / r['process_wall_s']:.2f}x faster "
                      "than the naive loop (whole process)")
    if a.json:
        Path(a.json).write_text(json.dumps({**results, **{f"run_live-{k}": v for k, v in live.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
