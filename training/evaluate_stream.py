"""Streaming evaluation: the test audio through `engine.Engine` with default settings.

Captions: each test utterance is one stream (fed in 0.1 s chunks, then flushed); the transcript is
the final captions after their revisions. Speaker turns: each test conversation is one stream;
its `SpeakerTurn` events are the hypothesis RTTM scored by `training.scoring.diarization_error`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.timebase import FRAME_SAMPLES, SAMPLE_RATE
from training.mixing import Segment, read_rttm
from training.scoring import DerResult, char_error_rate, diarization_error, oracle_named, word_error_rate

CHUNK_SAMPLES = SAMPLE_RATE // 10  # 0.1 s, like a microphone callback


def _run_stream(stream, audio: np.ndarray) -> list:
    events = []
    for k in range(0, len(audio), CHUNK_SAMPLES):
        events += stream.accept(audio[k:k + CHUNK_SAMPLES])
    return events + stream.flush()


def final_transcript(events: list) -> str:
    """Text of the final captions in time order, with caption revisions applied."""
    from engine.events import CaptionFinal, CaptionRevision, apply_revision

    finals: dict[int, CaptionFinal] = {}
    for ev in events:
        if isinstance(ev, CaptionFinal):
            finals[ev.caption_id] = ev
        elif isinstance(ev, CaptionRevision) and ev.caption_id in finals:
            finals[ev.caption_id] = apply_revision(finals[ev.caption_id], ev)
    ordered = sorted(finals.values(), key=lambda c: (c.start_frame, c.text))
    return " ".join(" ".join(c.text for c in ordered).upper().split())


def turn_segments(events: list) -> list[Segment]:
    """Hypothesis segments from the stream's `SpeakerTurn` events."""
    from engine.events import SpeakerTurn

    return [Segment(ev.speaker, ev.start_frame * FRAME_SAMPLES, ev.end_frame * FRAME_SAMPLES)
            for ev in events if isinstance(ev, SpeakerTurn)]


def evaluate_streaming(model_dir: Path, sets: dict[str, tuple[list[np.ndarray], list[str]]], conv_dir: Path,
                       lm: Path | None, dtype: str = "fp32") -> dict:
    """Streaming CER/WER (greedy and with the LM re-decoder) and DER with default EngineConfig,
    the models computing in `dtype` ("fp32" or "bf16": what bf16 costs in accuracy)."""
    import soundfile as sf

    from engine import Engine

    results: dict = {}
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    engines = {"greedy": Engine.from_checkpoints(asr=str(model_dir / "ctc"), dtype=dtype)}
    if lm is not None:
        engines["lm"] = Engine.from_checkpoints(asr=str(model_dir / "ctc"), lm=str(lm), dtype=dtype)
    for name, (audios, refs) in sets.items():
        r: dict = {"utterances": len(refs)}
        for kind, engine in engines.items():
            t0 = time.monotonic()
            hyps = [final_transcript(_run_stream(engine.new_stream(), np.concatenate([pad, a, pad])))
                    for a in audios]
            r[f"cer_{kind}"] = char_error_rate(refs, hyps)
            r[f"wer_{kind}"] = word_error_rate(refs, hyps)
            r[f"seconds_{kind}"] = round(time.monotonic() - t0, 1)
        results[name] = r
    engine = Engine.from_checkpoints(asr=str(model_dir / "ctc"), diar=str(model_dir / "sd"),
                                     sv=str(model_dir / "sv"), dtype=dtype)
    total = named = DerResult(0, 0, 0, 0)
    per_file = {}
    for wav in sorted(conv_dir.glob("*.wav")):
        audio, _ = sf.read(wav, dtype="float32")
        ref = read_rttm((conv_dir / f"{wav.stem}.rttm").read_text())[wav.stem]
        hyp = turn_segments(_run_stream(engine.new_stream(), audio))
        r = diarization_error(ref, hyp)
        per_file[wav.stem] = round(r.der, 4)
        total = total + r
        named = named + diarization_error(ref, oracle_named(ref, hyp))
    if total.scored_s:
        results["der"] = {"files": len(per_file), "der": total.der, "miss": total.miss_s / total.scored_s,
                          "false_alarm": total.false_alarm_s / total.scored_s,
                          "confusion": total.confusion_s / total.scored_s, "per_file": per_file, "collar_s": 0.25,
                          "scored_s": round(total.scored_s, 3),
                          "error_s": round(total.miss_s + total.false_alarm_s + total.confusion_s, 3),
                          # the same turns, each named after the reference speaker it overlaps most:
                          # what is left is segmentation error, the rest of `der` is naming error
                          "der_turns_named_right": named.der}
    return results
