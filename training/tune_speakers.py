"""Choose the span speaker tracker's thresholds on real meetings and synthetic conversations together.

    python -m training.tune_speakers --real ../shared/real/ami-dev --corpus /work/runs/corpus \
        [--conversations 20] [--model models/embedded] [--out tuning.json]

The streaming engine (default settings, no language model: captions do not move DER) runs every
file of a real folder (WAV + RTTM) and `--conversations` synthetic *validation* conversations
(seed tag 78; the test conversations use 77 and 79) once per candidate setting. Model outputs do
not depend on the thresholds, so each window and span x-vector is computed once and reused
(`CachedModels`). DER: 0.25 s collar, overlap scored, the whole file scored.

The choice minimises the mean of the two pooled DERs, so neither data set can trade off silently:
both figures are printed for every candidate. Because the real folder is small (ami-dev: 5
minutes), a leave-one-file-out figure is reported too: for each real file, the setting that is best
on the other files (and the synthetic set) scores that file; the errors are pooled.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.scoring import DerResult, diarization_error, read_rttm
from training.evaluate_stream import _run_stream, turn_segments
from training.tune_clustering import VAL_SEED_TAG, CachedModels

GRID = {  # the grid behind models/embedded/speaker_tuning.json (session 13)
    "span_threshold": (0.3, 0.35, 0.4),
    "new_speaker_min_speech": (0.5, 0.7),
    "new_speaker_spans": (1, 2),
    "span_merge_threshold": (0.4, 0.5, 0.6),
    "speech_threshold": (0.3, 0.5),
}


def load_real(folder: Path) -> list[tuple[str, np.ndarray, list]]:
    """(name, audio, reference segments) for each WAV with an RTTM beside it."""
    import soundfile as sf

    out = []
    for wav in sorted(folder.glob("*.wav")):
        rttm = wav.with_suffix(".rttm")
        if not rttm.is_file():
            continue
        audio, sr = sf.read(wav, dtype="float32", always_2d=False)
        if sr != 16000 or audio.ndim != 1:
            raise ValueError(f"{wav}: need 16 kHz mono, got {sr} Hz, shape {audio.shape}")
        refs = read_rttm(rttm.read_text(encoding="utf-8"))
        out.append((wav.stem, audio, [seg for segs in refs.values() for seg in segs]))
    if not out:
        raise FileNotFoundError(f"{folder}: no WAV with an RTTM beside it")
    return out


def candidates(grid: dict[str, tuple]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def engine_config(candidate: dict):
    from engine.config import EngineConfig, SpeakerConfig, SpeechConfig

    speech = {k[len("speech_"):]: v for k, v in candidate.items() if k.startswith("speech_")}
    speakers = {k: v for k, v in candidate.items() if k in {f.name for f in dataclasses.fields(SpeakerConfig)}}
    return EngineConfig(speakers=SpeakerConfig(**speakers), speech=SpeechConfig(**speech))


def score_all(models, candidate: dict, items: list[tuple[str, np.ndarray, list]]) -> dict[str, DerResult]:
    """DER per item for one candidate setting."""
    from engine import Engine

    engine = Engine(models, engine_config(candidate), voiceprint_threshold=models.sv_threshold)
    out = {}
    for name, audio, ref in items:
        hyp = turn_segments(_run_stream(engine.new_stream(), audio))
        out[name] = diarization_error(ref, hyp)
    return out


def pooled(results: dict[str, DerResult], names) -> DerResult:
    total = DerResult(0, 0, 0, 0)
    for n in names:
        total = total + results[n]
    return total


def split(d: DerResult) -> str:
    return (f"miss {d.miss_s / d.scored_s:.3f} fa {d.false_alarm_s / d.scored_s:.3f} "
            f"conf {d.confusion_s / d.scored_s:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="folder of WAV + RTTM (real recordings)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--conversations", type=int, default=20, help="synthetic validation conversations (0: none)")
    parser.add_argument("--model", type=Path, default=Path("models/embedded"))
    parser.add_argument("--out", type=Path, help="write every candidate's figures as JSON")
    parser.add_argument("--cache", type=Path, help="keep model outputs in this file across runs (same models only)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="replace the grid: one line per setting (SpeakerConfig fields, speech_threshold, "
                             "speech_pad_frames), e.g. --grid span_frames=75,100")
    args = parser.parse_args(argv)
    grid_spec = dict(GRID)
    if args.grid:
        grid_spec = {}
        for item in args.grid:
            name, _, values = item.partition("=")
            if not values:
                parser.error(f"--grid takes NAME=V1,V2,..., got {item!r}")
            grid_spec[name] = tuple(float(v) if "." in v else int(v) for v in values.split(","))
    import torch

    torch.set_num_threads(args.threads)

    from engine.torch_models import TorchModels
    from training.corpus import Corpus, build_conversations

    real = load_real(args.real)
    synth = []
    if args.conversations:
        convs = build_conversations(Corpus(args.corpus), "val", args.conversations, VAL_SEED_TAG)
        synth = [(f"val-{i}", mix.audio.astype(np.float32), list(mix.segments)) for i, (_, mix) in enumerate(convs)]
    models = CachedModels(TorchModels.load(asr=str(args.model / "ctc"), diar=str(args.model / "sd"),
                                           sv=str(args.model / "sv")))
    if args.cache:
        models.load(args.cache)
    real_names, synth_names = [n for n, _, _ in real], [n for n, _, _ in synth]
    table = []
    grid = candidates(grid_spec)
    for i, cand in enumerate(grid, 1):
        t0 = time.monotonic()
        res = score_all(models, cand, real + synth)
        r = pooled(res, real_names)
        s = pooled(res, synth_names) if synth else None
        table.append((cand, res))
        if args.cache and i == 1:
            models.save(args.cache)
        print(f"[tune_speakers] {i}/{len(grid)} {cand}: real DER {r.der:.4f} ({split(r)})"
              + (f", synthetic DER {s.der:.4f} ({split(s)})" if s else "") + f" [{time.monotonic() - t0:.0f} s]",
              file=sys.stderr, flush=True)
    if args.cache:
        models.save(args.cache)

    def objective(res: dict[str, DerResult], real_subset: list[str]) -> float:
        r = pooled(res, real_subset).der
        return (r + pooled(res, synth_names).der) / 2 if synth else r

    best_cand, best_res = min(table, key=lambda cr: objective(cr[1], real_names))
    loo = DerResult(0, 0, 0, 0)
    loo_choice = {}
    for held in real_names:
        rest = [n for n in real_names if n != held]
        cand, res = min(table, key=lambda cr: objective(cr[1], rest))
        loo = loo + res[held]
        loo_choice[held] = cand
    r, s = pooled(best_res, real_names), pooled(best_res, synth_names) if synth else None
    report = {
        "best": best_cand,
        "real_der": round(r.der, 4),
        "real_split": {k: round(v / r.scored_s, 4) for k, v in
                       (("miss", r.miss_s), ("false_alarm", r.false_alarm_s), ("confusion", r.confusion_s))},
        "synthetic_der": round(s.der, 4) if s else None,
        "synthetic_split": split(s) if s else None,
        "real_leave_one_file_out_der": round(loo.der, 4),
        "real_per_file": {n: round(best_res[n].der, 4) for n in real_names},
        "candidates": [{**c, "real_der": round(pooled(res, real_names).der, 4),
                        "synthetic_der": round(pooled(res, synth_names).der, 4) if synth else None} for c, res in table],
        "leave_one_out_choice": loo_choice,
        "real_folder": str(args.real), "conversations": len(synth),
        "command": " ".join(["python -m training.tune_speakers"] + (argv if argv is not None else sys.argv[1:])),
    }
    print(json.dumps({k: v for k, v in report.items() if k not in ("candidates", "leave_one_out_choice")}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
