"""Evaluate the embedded model on the held-out synthetic test split (offline and streaming).

    python -m training.evaluate [--model models/embedded] [--corpus /work/runs/corpus]
                                [--streaming] [--out models/embedded/evaluation.json]

Offline: CER/WER of greedy CTC and of beam search with the word LM beside the CTC checkpoint
(`models.lm.CTCBeamDecoder`, default weights) on the test split and on the everyday sentences;
EER of the x-vector head over target/impostor trials of held-out speakers, scored the way
`voiceprints.service.VoiceprintService` scores (enrollment from several clips, cosine); DER of the
speaker-activity head over the test conversations (5 s windows, hop 2.5 s, slots stitched across
windows by their agreement on the overlap, then tracks merged by x-vector cosine), scored by
`training.scoring.diarization_error` (0.25 s collar, overlap scored). With --streaming, the same
audio also goes through `engine.Engine` with default settings (captions, speaker turns).

The measures live by job: `training.evaluate_asr` (captions, LM weights), `training.evaluate_sv`
(verification), `training.evaluate_der` (diarization), `training.evaluate_stream` (the engine),
`training.evaluate_cli` (the CLI's subprocesses), `training.evaluate_report` (the Markdown report);
this module is the command that runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from training.corpus import Corpus
from training.evaluate_asr import by_voice_family, ctc_log_probs, evaluate_asr, tune_lm
from training.evaluate_der import evaluate_der, pooled_der
from training.evaluate_report import family_lines, markdown_report
from training.evaluate_sv import evaluate_sv, evaluate_sv_service, write_trials
from training.voices import voice_family

__all__ = ["by_voice_family", "ctc_log_probs", "evaluate_asr", "evaluate_der", "evaluate_sv", "evaluate_sv_service",
           "family_lines", "main", "markdown_report", "pooled_der", "tune_lm", "write_trials"]

MORE_DER_SEED_TAG = 79  # freshly built test conversations beyond the corpus's 16 (seed tag 77)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/embedded"))
    parser.add_argument("--corpus", type=Path, default=Path("/work/runs/corpus"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    parser.add_argument("--streaming", action="store_true", help="also run the streaming engine")
    parser.add_argument("--streaming-dtypes", default="fp32",
                        help="comma list of engine dtypes for --streaming (fp32 is the reported one; e.g. fp32,bf16)")
    parser.add_argument("--calibrate", action="store_true",
                        help="first write SV/verification.json from the validation speakers (voiceprints.calibrate)")
    parser.add_argument("--tune-clustering", action="store_true",
                        help="measure the engine's clustering threshold on validation conversations "
                             "(training.tune_clustering; writes clustering.threshold into sv/verification.json)")
    parser.add_argument("--tune-conversations", type=int, default=60,
                        help="validation conversations for --tune-clustering (default 60; 20 until session 11, "
                             "whose thresholds moved with the draw)")
    parser.add_argument("--tune-lm", action="store_true",
                        help="first choose the LM weights on validation utterances (writes ctc/lm_weights.json)")
    parser.add_argument("--tune-lm-only", action="store_true",
                        help="only choose the LM weights (as --tune-lm), then stop: after rebuilding the LM")
    parser.add_argument("--cli", action="store_true",
                        help="also measure EER through run_live.py enroll/identify/verify subprocesses (training.evaluate_cli)")
    parser.add_argument("--der-conversations", type=int, default=40,
                        help="with --streaming, also the streaming DER of this many more test conversations "
                             f"(seed tag {MORE_DER_SEED_TAG}; 0: none): 16 conversations move DER by several "
                             "points with the draw")
    parser.add_argument("--trials-dir", type=Path, default=Path("/work/runs/trials"))
    parser.add_argument("--limit", type=int, help="at most this many utterances per set (quick checks)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    corpus = Corpus(args.corpus)
    from models.lm import find_language_model

    lm = find_language_model(args.model / "ctc")
    sets = {}
    for name in ("test", "everyday"):
        n = len(corpus.rows[name]) if args.limit is None else min(args.limit, len(corpus.rows[name]))
        if n == 0:
            continue
        sets[name] = ([corpus.audio(name, i) for i in range(n)], [corpus.rows[name][i]["text"] for i in range(n)])
    t0 = time.monotonic()
    results: dict = {"model": str(args.model), "corpus": str(args.corpus), "lm": str(lm) if lm else None}
    if args.tune_lm:
        if lm is None:
            raise SystemExit(f"--tune-lm: {args.model / 'ctc'} has no language model")
        results["lm_tuning"] = tune_lm(args.model, corpus, lm)
        print(json.dumps(results["lm_tuning"], indent=1), flush=True)
    if args.tune_lm_only:
        if lm is None:
            raise SystemExit(f"--tune-lm-only: {args.model / 'ctc'} has no language model")
        print(json.dumps(tune_lm(args.model, corpus, lm), indent=1), flush=True)
        return
    families = {name: [voice_family(corpus.rows[name][i]["speaker"]) for i in range(len(sets[name][1]))]
                for name in sets}
    results["asr_offline"] = evaluate_asr(args.model, sets, lm, families)
    print(json.dumps(results["asr_offline"], indent=1), flush=True)
    results["sv_offline"] = evaluate_sv(args.model, corpus)
    print(json.dumps(results["sv_offline"], indent=1), flush=True)
    if args.calibrate:
        from voiceprints.calibrate import main as calibrate

        trials = write_trials(corpus, "val", args.trials_dir / "val")
        if calibrate(["--sv-model", str(args.model / "sv"), "--trials", str(trials)]) != 0:
            raise SystemExit("calibration failed (see above)")
    if args.tune_clustering:  # after --calibrate, which rewrites verification.json
        from training.tune_clustering import tune

        results["clustering"] = tune(args.model, corpus, count=args.tune_conversations)
        print(json.dumps(results["clustering"], indent=1), flush=True)
    results["sv_service"] = evaluate_sv_service(args.model, corpus)
    print(json.dumps(results["sv_service"], indent=1), flush=True)
    if args.cli:
        from training.evaluate_cli import evaluate_cli

        results["sv_cli"] = evaluate_cli(args.model.resolve(), corpus)
        print(json.dumps(results["sv_cli"], indent=1), flush=True)
    results["der_offline"] = evaluate_der(args.model, args.corpus / "conversations",
                                          results["sv_offline"]["eer_threshold"])
    print(json.dumps(results["der_offline"], indent=1), flush=True)
    if args.streaming:
        from training.evaluate_stream import evaluate_streaming

        for dtype in args.streaming_dtypes.split(","):
            key = "streaming" if dtype == "fp32" else f"streaming_{dtype}"
            results[key] = evaluate_streaming(args.model, sets, args.corpus / "conversations", lm, dtype)
            print(key, json.dumps(results[key], indent=1), flush=True)
        if args.der_conversations > 0:
            from training.tune_clustering import build_conversations, score

            more = build_conversations(corpus, "test", args.der_conversations, MORE_DER_SEED_TAG)
            results["streaming_der_more"] = {**score(args.model, more), "seed_tag": MORE_DER_SEED_TAG}
            print("streaming_der_more", json.dumps(results["streaming_der_more"], indent=1), flush=True)
            pooled = pooled_der(results["streaming"].get("der", {}), results["streaming_der_more"])
            if pooled:
                results["streaming_der_all"] = pooled
                print("streaming_der_all", json.dumps(pooled), flush=True)
    results["seconds"] = round(time.monotonic() - t0, 1)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.report:
        command = "python -m training.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
        args.report.write_text(markdown_report(results, command), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
