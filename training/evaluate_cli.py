"""Speaker verification measured through the command line a user runs: `run_live.py enroll`,
`identify` and `verify` subprocesses on held-out test speakers (issue 5: "measured through the
CLI's own enroll and verify").

    python -m training.evaluate_cli --model models/embedded [--speakers 16] [--tests 2]

Each chosen test speaker is enrolled with `enroll NAME --input clip...` from their first clips of
at least 1.6 s (6 s of audio in all, so >= 5 s of net speech) into a fresh store; each of their next `--tests`
clips is scored against everyone with `identify --input clip` (one target and N-1 impostor scores
per call; impostors are voices of the same synthesizers). `verify NAME --input clip` is called for
one target and one impostor per speaker and must print the same score as `identify`. Reported:
EER over all scores, and the false accept / false reject rates at the threshold the CLI applies
(`sv/verification.json`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.timebase import SAMPLE_RATE
from training.corpus import Corpus
from training.scoring import equal_error_rate

ROOT = Path(__file__).resolve().parents[1]
ENROLL_AUDIO_S = 6.0
MIN_CLIP_S = 1.6


def run_cli(*args: str) -> dict:
    """Run `run_live.py ARGS` and return its JSON output (raise with its stderr on failure)."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_live.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"run_live.py {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def choose_speakers(corpus: Corpus, n: int, tests: int) -> dict[str, tuple[list[int], list[int]]]:
    """Up to `n` test speakers (every k-th in sorted order, both synthesizers) with their
    enrollment clip indices (>= ENROLL_AUDIO_S of audio) and `tests` later clip indices."""
    rows = corpus.rows["test"]
    out = {}
    names = corpus.speakers("test")
    step = max(1, len(names) // max(1, n))
    for name in names[::step][:n]:
        # each recording must hold >= 1 s of net speech (enroll refuses shorter ones)
        idx = [i for i in corpus.by_speaker("test")[name] if rows[i]["length"] >= MIN_CLIP_S * SAMPLE_RATE]
        enroll, total = [], 0
        for i in idx:
            if total >= ENROLL_AUDIO_S * SAMPLE_RATE:
                break
            enroll.append(i)
            total += rows[i]["length"]
        rest = [i for i in idx if i not in enroll][:tests]
        if total >= ENROLL_AUDIO_S * SAMPLE_RATE and len(rest) == tests:
            out[name] = (enroll, rest)
    return out


def evaluate_cli(model_dir: Path, corpus: Corpus, n_speakers: int = 16, tests: int = 2, log=print) -> dict:
    """Enroll, identify and verify through `run_live.py`; return EER and the CLI's FAR/FRR."""
    chosen = choose_speakers(corpus, n_speakers, tests)
    if len(chosen) < 2:
        raise ValueError(f"need at least 2 test speakers with enough clips, found {len(chosen)}")
    model = ["--sv-model", str(model_dir / "sv")]
    threshold = json.loads((model_dir / "sv" / "verification.json").read_text())["threshold"]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = ["--speakers-db", str(folder / "speakers.db")]

        def wav(i: int) -> str:
            path = folder / f"test{i}.wav"
            if not path.exists():
                sf.write(path, corpus.audio("test", i), SAMPLE_RATE)
            return str(path)

        alias = {name: f"spk{k:02d}" for k, name in enumerate(chosen)}  # names the CLI accepts as typed
        for name, (enroll, _) in chosen.items():
            run_cli("enroll", alias[name], "--input", *[wav(i) for i in enroll], *db, *model)
        log(f"[cli] enrolled {len(chosen)} speakers in {time.monotonic() - t0:.0f} s")
        target, impostor, mismatches = [], [], []
        for k, (name, (_, tests_idx)) in enumerate(chosen.items()):
            for n, i in enumerate(tests_idx):
                scores = {c["name"]: c["score"] for c in run_cli("identify", "--input", wav(i), *db, *model)["candidates"]}
                target.append(scores[alias[name]])
                impostor += [s for who, s in scores.items() if who != alias[name]]
                if n == 0:  # verify must agree with identify, for the true and for a wrong name
                    other = alias[list(chosen)[(k + 1) % len(chosen)]]
                    for claim in (alias[name], other):
                        v = run_cli("verify", claim, "--input", wav(i), *db, *model)
                        if abs(v["score"] - scores[claim]) > 1e-6 or v["accepted"] != (v["score"] >= threshold):
                            mismatches.append({"clip": i, "claim": claim, "verify": v, "identify": scores[claim]})
        log(f"[cli] scored {len(target)} target and {len(impostor)} impostor trials in {time.monotonic() - t0:.0f} s")
    eer, eer_threshold = equal_error_rate(target, impostor)
    t, imp = np.asarray(target), np.asarray(impostor)
    return {"speakers": len(chosen), "target_trials": len(target), "impostor_trials": len(impostor),
            "eer": eer, "eer_threshold": eer_threshold, "cli_threshold": threshold,
            "far_at_cli_threshold": float(np.mean(imp >= threshold)),
            "frr_at_cli_threshold": float(np.mean(t < threshold)),
            "verify_identify_mismatches": mismatches, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/embedded"))
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--speakers", type=int, default=16)
    parser.add_argument("--tests", type=int, default=2, help="held-out clips per speaker")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = evaluate_cli(args.model.resolve(), Corpus(args.corpus), args.speakers, args.tests,
                          log=lambda s: print(s, flush=True))
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
