"""Is the bundled demo still right? Who-speaks-when with names, per model, through the product's engine.

    .venv/bin/python -m bench.demo_report [--models models/embedded /work/runs/r24/export_short]

The demo (`app/demo/`, synthetic voices) is the first thing a new user runs: Alice and Bruno are
pre-enrolled from their clips and a guest nobody enrolled joins. Each model folder (`ctc/`, `sd/`,
`sv/` inside) is loaded as `run_live.py --asr-model ... --diar-model ... --sv-model ...` loads it,
the demo's speakers are enrolled in a throw-away store as the app does, and the conversation runs
through the same session code as `run_live.py --fast` (speech gate, span tracking, the folder's
calibrated threshold: a folder without `sv/verification.json` runs at the uncalibrated fallback).
The speaker turns are scored against `app/demo/conversation.rttm` on a 1 ms grid:

- `named`: the share of each reference speaker's solo speech (no other reference voice) that
  carries the right label: an enrolled speaker their name; each guest their own unknown label,
  assigned one-to-one to maximise the speech they cover (an enrolled name on a guest is wrong;
  the engine's bare `unknown`, speech not yet named, counts as an unknown label);
- `turns_right`: reference turns whose solo speech is more than half under the right label;
- `extra_labels`: hypothesis labels that are neither a reference speaker's name nor a guest's
  label (an unknown that is really Alice or Bruno, or someone enrolled who does not speak);
- `der`: the diarization error rate with the best one-to-one mapping (0.25 s collar) over the
  whole file, which sees a wrong split but not a wrong *name*.

"Right" (`ok`) is every turn right and no extra label: a short span misnamed inside a turn lowers
`named` but is not called wrong. Prints a Markdown table and, with --out, the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.scoring import MS_SAMPLES, Segment, activity_grid, diarization_error, read_rttm

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "app" / "demo"


@dataclasses.dataclass(frozen=True, slots=True)
class DemoScore:
    """How one model's speaker turns name the demo's speakers (module docstring)."""

    named: dict[str, float]  # reference speaker -> share of their solo speech under the right label
    turns_right: int
    turns: int
    guest_labels: dict[str, str]  # unenrolled reference speaker -> its hypothesis label ("" if none)
    extra_labels: list[str]
    der: float

    @property
    def ok(self) -> bool:
        return self.turns_right == self.turns and not self.extra_labels


def score(reference: list[Segment], hypothesis: list[Segment], enrolled: set[str], end_sample: int) -> DemoScore:
    """Score hypothesis speaker turns of the demo against its reference turns (module docstring)."""
    n = max([end_sample, *(s.end for s in reference + hypothesis)]) // MS_SAMPLES + 1
    ref_names, ref = activity_grid(reference, n)
    hyp_names, hyp = activity_grid(hypothesis, n)
    alone = ref.sum(0) == 1
    solo = {name: ref[i] & alone for i, name in enumerate(ref_names)}
    tracks = dict(zip(hyp_names, hyp))
    guests = [name for name in ref_names if name not in enrolled]
    unknowns = [h for h in hyp_names if h not in enrolled]
    guest_labels = {g: "" for g in guests}
    if guests and unknowns:
        cover = np.array([[int((tracks[h] & solo[g]).sum()) for h in unknowns] for g in guests])
        for gi, hi in zip(*linear_sum_assignment(-cover)):
            if cover[gi, hi] > 0:
                guest_labels[guests[gi]] = unknowns[hi]
    expected = {name: guest_labels.get(name, name) for name in ref_names}
    nothing = np.zeros(n, dtype=bool)
    named = {name: round(float((tracks.get(expected[name], nothing) & solo[name]).sum()
                               / max(int(solo[name].sum()), 1)), 3) for name in ref_names}
    turns_right = 0
    for turn in reference:
        mine = np.zeros(n, dtype=bool)
        mine[turn.start // MS_SAMPLES: turn.end // MS_SAMPLES] = True
        mine &= solo[turn.speaker]
        turns_right += 2 * int((tracks.get(expected[turn.speaker], nothing) & mine).sum()) > int(mine.sum())
    extra = sorted(set(hyp_names) - set(expected.values()))
    der = diarization_error(reference, hypothesis, end_sample=end_sample).der
    return DemoScore(named, turns_right, len(reference), guest_labels, extra, round(der, 4))


def run_demo(model: Path) -> tuple[list[Segment], int]:
    """(hypothesis speaker turns, samples) of the demo run through the app's engine with `model`'s heads."""
    from app.engine_setup import choose_models, enroll_demo_speakers, find_demo, load_engine
    from app.evaluate_folder import parse_args, run_recording
    from app.sources import load_audio
    from app.writers import rttm_text

    args = parse_args([str(DEMO), "--asr-model", str(model / "ctc"), "--diar-model", str(model / "sd"),
                       "--sv-model", str(model / "sv")])
    engine = load_engine(args, choose_models(args))
    demo = find_demo(str(DEMO))
    speakers, store = enroll_demo_speakers(engine, demo)
    try:
        samples = load_audio(demo.conversation)
        record = run_recording(engine, speakers, samples, "demo")
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return read_rttm(rttm_text(record, "hyp")).get("hyp", []), len(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", default=[ROOT / "models" / "embedded"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    models = [m.resolve() for m in args.models]
    for model in models:
        for head in ("ctc", "sd", "sv"):
            if not (model / head / "config.json").is_file():
                parser.error(f"{model} has no {head}/config.json: pass a folder with ctc/, sd/ and sv/ inside")
    from app.engine_setup import find_demo

    enrolled = set(find_demo(str(DEMO)).enroll)
    reference = read_rttm((DEMO / "conversation.rttm").read_text())["conversation"]
    results: dict[str, DemoScore] = {}
    for model in models:
        print(f"[demo_report] {model}", file=sys.stderr, flush=True)
        hypothesis, n_samples = run_demo(model)
        results[str(model)] = score(reference, hypothesis, enrolled, n_samples)
    speakers = sorted({s.speaker for s in reference})
    print("| model (demo, synthetic voices) | " + " | ".join(f"{s} named" for s in speakers)
          + " | turns right | extra labels | DER | right |")
    print("| --- " * (len(speakers) + 5) + "|")
    for model, r in results.items():
        print(f"| {model} | " + " | ".join(f"{100 * r.named[s]:.0f} %" for s in speakers)
              + f" | {r.turns_right}/{r.turns} | {', '.join(r.extra_labels) or 'none'} | {100 * r.der:.1f} % "
              f"| {'yes' if r.ok else 'no'} |")
    if args.out:
        args.out.write_text(json.dumps({m: {**dataclasses.asdict(r), "ok": r.ok} for m, r in results.items()},
                                       indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
