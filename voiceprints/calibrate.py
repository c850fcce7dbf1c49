"""Measure a checkpoint's verification threshold from labelled clips and write its verification.json.

    python -m voiceprints.calibrate --sv-model models/embedded/sv --trials DIR_OR_JSON [--far 0.01]

Trials: a folder of `SPEAKER__CLIP.wav` (or `SPEAKER/CLIP.wav`) or a JSON list (voiceprints.trials).
Format of verification.json: docs/voiceprints.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voiceprints.calibration import VERIFICATION_FILE, measure, write_verification_json
from voiceprints.trials import list_trials, read_clip, score_trials


def _is_rate(text: str) -> bool:
    try:
        return 0.0 <= float(text) < 1.0
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """CLI: measure a checkpoint's verification threshold and write its verification.json."""
    ap = argparse.ArgumentParser(prog="python -m voiceprints.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sv-model", required=True, help="x-vector checkpoint folder")
    ap.add_argument("--trials", required=True, help="folder of SPEAKER__CLIP.wav, or a JSON list")
    ap.add_argument("--protocol", choices=["enroll", "pairs"], default="enroll")
    ap.add_argument("--far", type=float, action="append", help="also report a threshold at this FAR (repeatable)")
    ap.add_argument("--operating-point", default="eer", help="'eer' (default) or 'far=X': which threshold to use")
    ap.add_argument("--out", help="where to write (default: SV_MODEL/verification.json)")
    ap.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args(argv)
    point = args.operating_point
    if point != "eer" and not (point.startswith("far=") and _is_rate(point[4:])):
        ap.error(f"--operating-point must be 'eer' or 'far=X' with 0 <= X < 1, got {point!r}")
    try:
        from voiceprints.xvector import XVectorEmbedder  # imports torch: only when measuring

        embedder = XVectorEmbedder(args.sv_model, device=args.device, dtype=args.dtype)
        paths = list_trials(args.trials)
        clips = {s: [read_clip(p) for p in ps] for s, ps in paths.items()}
        scores = score_trials(embedder, clips, protocol=args.protocol)
        fars = tuple(args.far) if args.far else (0.01, 0.001)
        content = measure(scores, embedder.fingerprint, fars=fars, operating_point=args.operating_point,
                          extra={"trials": str(args.trials), "model": str(args.sv_model), "dtype": args.dtype,
                                 "command": "python -m voiceprints.calibrate " + " ".join(argv or sys.argv[1:])})
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"calibration: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        write_verification_json(args.out or Path(args.sv_model) / VERIFICATION_FILE, content)
    print(json.dumps({k: content[k] for k in ("fingerprint", "threshold", "operating_point", "eer",
                                              "n_target", "n_impostor", "n_speakers", "n_clips")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
