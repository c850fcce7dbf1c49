"""The speaker subcommands: enroll, verify, identify, speakers list|export|remove, each printing JSON.

They load only the speaker store and, when scoring is needed, the x-vector head (no caption model,
no language model, no TUI, no websockets), so one call stays within a few seconds. `verify` prints
one JSON object as its last stdout line and exits 0 whatever the decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import numpy as np

from app.errors import AppError


def _store(args: argparse.Namespace, create: bool) -> Any:
    import os

    from app.model_paths import speakers_db
    from voiceprints.store import SpeakerStore

    path = speakers_db(args)
    if not create and not os.path.exists(path):
        return None
    return SpeakerStore(path)  # a new store (and its folder) is created owner-only


def _sv_model(args: argparse.Namespace) -> str:
    from app.model_paths import embedded_dir, resolve_model

    sv = resolve_model(args.sv_model, "--sv-model", embedded_dir("sv"))
    if sv is None:
        raise AppError("no speaker model: pass --sv-model DIR|OWNER/NAME (models/embedded/sv is missing)")
    return sv


def _service(args: argparse.Namespace, store: Any) -> Any:
    from voiceprints.service import VoiceprintService
    from voiceprints.xvector import XVectorEmbedder

    sv = _sv_model(args)
    try:
        embedder = XVectorEmbedder(sv, device=args.device, dtype=args.dtype)
    except Exception as exc:  # a wrong folder, a broken checkpoint or an unreachable hub: one line
        raise AppError(f"--sv-model {args.sv_model or sv}: {_one_line(exc)}") from None
    return VoiceprintService(embedder, store)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _audio(path: str) -> np.ndarray:
    from app.sources import load_audio

    return load_audio(path)


def _record_microphone(args: argparse.Namespace, seconds: float) -> np.ndarray:
    """Record `seconds` from the chosen microphone (16 kHz mono), showing progress on stderr."""
    import asyncio

    from app.sources import MicrophoneSource, choose_microphone
    from engine.timebase import SAMPLE_RATE

    mic = choose_microphone(args.mic)

    async def record() -> np.ndarray:
        got: list[np.ndarray] = []
        need = int(seconds * SAMPLE_RATE)
        async with MicrophoneSource(mic) as source:
            async for block in source:
                got.append(block.samples)
                have = sum(len(b) for b in got)
                print(f"\rrecording {have / SAMPLE_RATE:4.1f}/{seconds:.1f} s", end="", file=sys.stderr)
                if have >= need:
                    break
        print(file=sys.stderr)
        return np.concatenate(got)[:need]

    return asyncio.run(record())


def _emit(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _person(info: Any) -> dict[str, Any]:
    d = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(info)
    if hasattr(info, "net_speech_s"):
        d["net_speech_s"] = info.net_speech_s
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def run_command(args: argparse.Namespace) -> int:
    """Run one speaker subcommand; errors from the store or the model become one `AppError` line."""
    from voiceprints.errors import VoiceprintError

    try:
        return _run(args)
    except VoiceprintError as exc:
        raise AppError(_one_line(exc)) from None


def _run(args: argparse.Namespace) -> int:
    command = args.command
    if command == "speakers":
        return _speakers(args)
    _sv_model(args)  # a wrong model option is reported before any work
    if command == "enroll":
        recordings = ([_audio(p) for p in args.input] if args.input
                      else [_record_microphone(args, args.seconds)])
        store = _store(args, create=True)
        result = _service(args, store).enroll(
            args.name, recordings, replace=args.replace, allow_mixed=args.allow_mixed,
            keep_outliers=args.keep_outliers, same_voice_ok=args.same_voice_ok, labels=args.input)
        _warn_outliers(result, args.input or [f"{args.seconds:g} s from the microphone"])
        _emit(result.to_dict())
        return 0
    path = args.input[0]
    audio = _audio(path)  # a bad file is reported before anything else
    store = _store(args, create=False)
    if command == "verify":
        if store is None:
            from voiceprints.errors import UnknownSpeakerError

            raise UnknownSpeakerError(args.name, [])
        verdict = _service(args, store).verify(args.name, audio, what=path)
        _emit({"name": verdict.name, "score": verdict.score, "threshold": verdict.threshold,
               "accepted": bool(verdict.accepted)})
        return 0
    if command == "identify":
        candidates = _service(args, store).identify(audio, what=path) if store is not None else []
        _emit({"candidates": [c.to_dict() for c in candidates]})
        return 0
    raise AppError(f"unknown command {command!r}")


def _warn_outliers(result: Any, sources: list[str]) -> None:
    """One stderr line per recording that disagrees with the others, saying whether it was stored."""
    for check in result.outliers:
        what = sources[check.index] if check.index < len(sources) else f"recording {check.index + 1}"
        fate = ("left out (--keep-outliers keeps it)" if check.index in result.left_out
                else "kept (--keep-outliers)")
        print(f"warning: {what} does not match {result.name}'s other recordings (score {check.score:.3f} < "
              f"threshold {result.threshold:.3f}): {fate}", file=sys.stderr)


def _speakers(args: argparse.Namespace) -> int:
    """speakers list | export NAME | remove NAME | reembed."""
    from voiceprints.errors import UnknownSpeakerError

    store = _store(args, create=False)
    if args.speakers_command == "list":
        people = store.people() if store is not None else []
        _emit({"speakers": [_person(p) for p in people]})
        return 0
    if args.speakers_command == "reembed":  # after a model change: voiceprints from the kept audio
        service = _service(args, store) if store is not None else None
        updated = service.reembed() if service is not None else []
        left = [p.name for p in store.people() if service.fingerprint not in p.fingerprints] if service else []
        _emit({"reembedded": updated, "without_audio": left,
               "model": service.fingerprint if service is not None else None})
        return 0
    if store is None:
        raise UnknownSpeakerError(args.name, [])
    if args.speakers_command == "export":
        from app.voiceprint_export import export_person

        name, folder = export_person(store, args.name, args.export_to)
        _emit({"exported": name, "folder": folder})
        return 0
    _emit({"removed": store.remove(args.name)})
    return 0
