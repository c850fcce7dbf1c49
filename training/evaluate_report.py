"""The evaluation report (models/embedded/EVALUATION.md): `training.evaluate`'s results as Markdown."""

from __future__ import annotations


def more_der_lines(more: dict | None) -> list[str]:
    """The report's line on the streaming DER of the extra test conversations (empty without them)."""
    if not more:
        return []
    return ["", f"Streaming DER of {more['conversations']} more test conversations (built with seed tag "
            f"{more['seed_tag']}, `training.tune_clustering --score-only --split test`): {100 * more['der']:.1f} %, "
            f"confusion {100 * more['confusion']:.1f} %, turns named right {100 * more['der_turns_named_right']:.1f} %."]


def pooled_der_lines(pooled: dict | None) -> list[str]:
    """The report's line on the DER over every scored test conversation (empty without it)."""
    if not pooled:
        return []
    return ["", f"Streaming DER over all {pooled['conversations']} test conversations above, pooled "
            f"({pooled['error_s']:.0f} s of error in {pooled['scored_s']:.0f} s scored): {100 * pooled['der']:.1f} % "
            "(the figure the ship rule and the README use since session 12: 16 conversations move by several "
            "points with the draw)."]


def family_lines(by_family: dict[str, dict] | None) -> list[str]:
    """The report's per-voice-family CER paragraph (empty when the results have none)."""
    if not by_family:
        return []
    def cer(r: dict) -> str:
        return "/".join(f"{100 * r[k]:.1f}" for k in ("cer_lm", "cer_greedy") if k in r)
    keys = "with LM / greedy" if "cer_lm" in next(iter(by_family.values())) else "greedy"
    parts = [f"{fam} {cer(r)} ({r['utterances']})" for fam, r in by_family.items()]
    return ["", f"Test CER offline by voice family, % {keys} (utterances), worst first: " + ", ".join(parts) + "."]


def markdown_report(results: dict, command: str) -> str:
    """The evaluation report (models/embedded/EVALUATION.md) as a Markdown table."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = ["# Evaluation of the embedded model", "",
             f"Measured with `{command}` on the held-out synthetic test split (voices and sentences",
             "never seen in training) and the everyday sentences written for the test set.", "",
             "| measure | set | offline | streaming (engine defaults) | streaming in bf16 |", "|---|---|---|---|---|"]
    stream = results.get("streaming", {})
    bf16 = results.get("streaming_bf16", {})
    for name, r in results["asr_offline"].items():
        s, b = stream.get(name, {}), bf16.get(name, {})
        for label, key in (("CER greedy", "cer_greedy"), ("WER greedy", "wer_greedy"), ("CER with LM", "cer_lm"),
                           ("WER with LM", "wer_lm")):
            where = f"{name} ({r['utterances']} utt.)" if key == "cer_greedy" else name
            lines.append(f"| {label} | {where} | {pct(r.get(key))} | {pct(s.get(key))} | {pct(b.get(key))} |")
    der = results.get("der_offline", {})
    sder = stream.get("der", {})
    lines.append(f"| DER (0.25 s collar, overlap scored) | {der.get('files')} test conversations | "
                 f"{pct(der.get('der'))} | {pct(sder.get('der'))} | {pct(bf16.get('der', {}).get('der'))} |")
    sv = results.get("sv_service", {})
    lines.append(f"| EER (app verification path) | {sv.get('target_trials')} target / {sv.get('impostor_trials')} "
                 f"impostor trials | {pct(sv.get('eer'))} | same | |")
    cli = results.get("sv_cli")
    if cli:
        lines.append(f"| EER (`run_live.py enroll` / `identify` / `verify` subprocesses) | {cli['speakers']} test speakers, "
                     f"{cli['target_trials']} target / {cli['impostor_trials']} impostor trials | {pct(cli['eer'])} | same | |")
        lines.append(f"| FAR / FRR at the CLI's threshold {cli['cli_threshold']:.4f} | same trials | "
                     f"{pct(cli['far_at_cli_threshold'])} / {pct(cli['frr_at_cli_threshold'])} | same | |")
    off = results.get("sv_offline", {})
    lines.append(f"| EER (3-clip enrolment, cosine) | {off.get('speakers')} held-out speakers | {pct(off.get('eer'))} | | |")
    tuning = results.get("lm_tuning")
    if tuning:
        by_beam = ", ".join(f"{w}: {pct(v['val_wer'])}" for w, v in tuning.get("val_wer_by_beam", {}).items())
        lines += ["", f"LM weights (measured on validation utterances, `--tune-lm`): alpha {tuning['alpha']}, "
                  f"beta {tuning['beta']}"
                  + (f", blank penalty {tuning['blank_penalty']}" if "blank_penalty" in tuning else "")
                  + f"; validation WER {pct(tuning['val_wer'])} at beam {tuning.get('beam_width')}"
                  + (f"; by beam width {by_beam}." if by_beam else ".")]
    clustering = results.get("clustering")
    if clustering:
        change = clustering["change_threshold"]
        lines += ["", f"Speaker clustering (measured on {clustering['conversations']} validation conversations, "
                  f"`training.tune_clustering`): threshold {clustering['threshold']:.2f}, speaker-change threshold "
                  f"{'off' if change is None else f'{change:.2f}'}; validation DER {pct(clustering['der'])}."]
    lines += ["", "DER components offline: " + ", ".join(f"{k} {pct(der.get(k))}" for k in ("miss", "false_alarm", "confusion")),
              "" if not sder else "DER components streaming: " + ", ".join(
                  f"{k} {pct(sder.get(k))}" for k in ("miss", "false_alarm", "confusion"))
              + ("" if "der_turns_named_right" not in sder else
                 f"; with every streaming turn named after the reference speaker it overlaps most, DER "
                 f"{pct(sder['der_turns_named_right'])} (segmentation; the rest is naming)"),
              *more_der_lines(results.get("streaming_der_more")),
              *pooled_der_lines(results.get("streaming_der_all")),
              *family_lines(results["asr_offline"].get("test", {}).get("by_family")),
              "", "Scorers: `training/scoring.py` (own implementation; DER follows md-eval rules on a 1 ms grid).",
              "Examples (reference / greedy / with LM):", ""]
    for name, r in results["asr_offline"].items():
        for ex in r["examples"]:
            lines.append(f"* `{ex['ref']}` / `{ex['greedy']}` / `{ex.get('lm', '')}`")
    return "\n".join(lines) + "\n"

