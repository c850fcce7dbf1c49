"""Is the bundled demo still right? Who-speaks-when with names, per model, through the whole app.

    .venv/bin/python -m bench.demo_report [--models models/embedded /work/runs/r24/export_short]

The demo (`app/demo/`, synthetic voices) is the first thing a new user runs: Alice and Bruno are
pre-enrolled from three clips each and a guest nobody enrolled joins. Each model folder (`ctc/`,
`sd/`, `sv/` inside) runs `run_live.py --fast --headless --rttm` on it, the product's own path
(demo enrolment, speech gate, span tracking, default thresholds), and the RTTM it writes is scored
against `app/demo/conversation.rttm`:

- `named`: the share of each reference speaker's speech (outside overlaps) that carries the right
  label: Alice and Bruno their names; the guest one unknown label (the one covering most of the
  guest's speech; an enrolled name on the guest is wrong);
- `turns_right`: reference turns whose speech (outside overlaps) mostly carries the right label;
- `extra_labels`: hypothesis labels beyond the three (an unknown that is really Alice or Bruno);
- `der`: the diarization error rate with the best one-to-one label mapping (0.25 s collar), so
  it does not see a wrong *name*, only a wrong split.

"Right" (`ok`) is every turn right and no extra label: a short span misnamed inside a turn is
counted in `named`, not called wrong. Prints a Markdown table
and, with --out, the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.scoring import Segment, diarization_error, read_rttm

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "app" / "demo"
RATE = 16000


def _frames(segments: list[Segment], n: int) -> dict[str, np.ndarray]:
    """Per label, a boolean activity track in 10 ms frames."""
    out: dict[str, np.ndarray] = {}
    for s in segments:
        track = out.setdefault(s.speaker, np.zeros(n, dtype=bool))
        track[s.start // 160: s.end // 160] = True
    return out


def score(reference: list[Segment], hypothesis: list[Segment], enrolled: set[str]) -> dict:
    """Naming and DER of one demo run (module docstring)."""
    n = max([s.end for s in reference + hypothesis], default=0) // 160 + 1
    ref, hyp = _frames(reference, n), _frames(hypothesis, n)
    alone = sum(t.astype(int) for t in ref.values()) == 1
    named: dict[str, float] = {}
    unknown_of: dict[str, str] = {}
    for speaker, track in ref.items():
        mine = track & alone
        if speaker in enrolled:
            label = speaker
        else:
            cover = {h: int((t & mine).sum()) for h, t in hyp.items() if h not in enrolled}
            label = max(cover, key=cover.get) if cover and max(cover.values()) > 0 else ""
            unknown_of[speaker] = label
        right = hyp.get(label, np.zeros(n, dtype=bool))
        named[speaker] = round(float((right & mine).sum() / max(int(mine.sum()), 1)), 3)
    expected = enrolled | {v for v in unknown_of.values() if v}
    extra = sorted(set(hyp) - expected)
    right_turns = 0
    for turn in reference:
        mine = np.zeros(n, dtype=bool)
        mine[turn.start // 160: turn.end // 160] = True
        mine &= alone
        cover = {h: int((t & mine).sum()) for h, t in hyp.items()}
        best = max(cover, key=cover.get) if cover and max(cover.values()) > 0 else None
        right_turns += best == (turn.speaker if turn.speaker in enrolled else unknown_of[turn.speaker])
    der = diarization_error(reference, hypothesis, end_sample=n * 160).der
    return {"named": named, "turns_right": f"{right_turns}/{len(reference)}", "guest_label": unknown_of,
            "extra_labels": extra, "der": round(der, 4), "ok": right_turns == len(reference) and not extra}


def run_demo(model: Path, workdir: Path) -> list[Segment]:
    """The hypothesis turns `run_live.py` writes for the demo with `model`'s three heads."""
    rttm = workdir / "demo.rttm"
    cmd = [sys.executable, str(ROOT / "run_live.py"), "--fast", "--headless", "--rttm", str(rttm),
           "--jsonl", str(workdir / "demo.jsonl"), "--asr-model", str(model / "ctc"),
           "--diar-model", str(model / "sd"), "--sv-model", str(model / "sv")]
    done = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"run_live.py failed on {model} (rc {done.returncode}): {done.stderr.strip()[-800:]}")
    turns = read_rttm(rttm.read_text())
    return [s for segments in turns.values() for s in segments]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", default=[ROOT / "models" / "embedded"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    reference = read_rttm((DEMO / "conversation.rttm").read_text())["conversation"]
    enrolled = set(manifest["enroll"])
    results = {}
    for model in args.models:
        for head in ("ctc", "sd", "sv"):
            if not (model / head / "config.json").is_file():
                parser.error(f"{model} has no {head}/config.json: pass a folder with ctc/, sd/ and sv/ inside")
        with tempfile.TemporaryDirectory() as tmp:
            results[str(model)] = score(reference, run_demo(model, Path(tmp)), enrolled)
    speakers = sorted({s.speaker for s in reference})
    print("| model (demo, synthetic voices) | " + " | ".join(f"{s} named" for s in speakers)
          + " | turns right | extra labels | DER | right |")
    print("| --- " * (len(speakers) + 5) + "|")
    for model, r in results.items():
        print(f"| {model} | " + " | ".join(f"{100 * r['named'][s]:.0f} %" for s in speakers)
              + f" | {r['turns_right']} | {', '.join(r['extra_labels']) or 'none'} | {100 * r['der']:.1f} % | {'yes' if r['ok'] else 'no'} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
