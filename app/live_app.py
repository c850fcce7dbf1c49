"""The command line's entry for the live app: choose the input, load the engine and speakers,
build a `LiveSession` and run it in the TUI or headless; returns the exit status.

Its own module so the session (`app.session`) does not depend on the engine set-up or the
command line (no import cycles).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
from typing import Any

from app.engine_setup import attach_speakers, choose_models, enroll_demo_speakers, find_demo, load_engine
from app.errors import AppError, NoMicrophone
from app.model_paths import speakers_db
from app.session import InputChoice, LiveSession, SessionOptions, run_headless
from app.shutdown import exit_status
from app.sources import check_samples, load_audio
from app.writers import check_writable, remove_stale_temp_files
from engine.timebase import SAMPLE_RATE


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def choose_input(args: argparse.Namespace) -> InputChoice:
    """--input, else nothing when only serving, else the microphone, else the bundled demo."""
    speed = None if args.fast else (args.speed or 1.0)
    if args.input:
        path = args.input[0]
        samples = load_audio(path)
        check = check_samples(samples, path)
        if check.silent:
            _warn(f"{path} is silent: no captions will appear")
        elif check.clipped_fraction > 0.001:
            _warn(f"{path} clips ({check.clipped_fraction:.1%} of samples at full scale); results may suffer")
        return InputChoice("file", os.path.basename(path), samples=samples, speed=speed)
    if args.serve is not None:
        return InputChoice("none", "websocket clients")
    try:
        from app.sources import choose_microphone

        mic = choose_microphone(args.mic)
        return InputChoice("mic", mic.name, mic=mic)
    except NoMicrophone as exc:
        if args.mic is not None:
            raise AppError(str(exc)) from None
        print(f"{exc}; playing the bundled demo instead", file=sys.stderr, flush=True)
        return InputChoice("demo", "demo", speed=speed)


def run_live_app(args: argparse.Namespace, engine_factory: Any = None) -> int:
    """The live app: pick input and sinks, load the engine, run TUI or headless; exit status."""
    outputs = {k: getattr(args, k) for k in ("transcript", "srt", "vtt", "rttm") if getattr(args, k)}
    for path in [*outputs.values(), *([args.jsonl] if args.jsonl else [])]:
        check_writable(path)
        remove_stale_temp_files(path)  # left by a run that was killed (kill -9) while writing
    source = choose_input(args)
    demo = find_demo() if source.kind == "demo" else None
    if demo is not None:
        source = dataclasses.replace(source, samples=load_audio(demo.conversation))
    models = None
    if engine_factory is not None:
        engine = engine_factory()
    else:
        models = choose_models(args)
        engine = load_engine(args, models)
    demo_folder = None
    if demo is not None:
        speakers, demo_folder = enroll_demo_speakers(engine, demo)
    else:
        speakers = attach_speakers(engine, speakers_db(args))
    headless = args.headless or not sys.stdout.isatty()
    options = SessionOptions(
        outputs=outputs, jsonl=args.jsonl, headless=headless,
        serve=(args.serve_host, args.serve_port) if args.serve is not None else None,
        token=args.token,
        max_clients=args.max_clients or 100,
        replay_grace_s=10.0 if args.replay_grace is None else args.replay_grace,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        config={"input": source.kind, "models": models.describe() if models else None,
                "device": args.device, "dtype": args.dtype, "sample_rate": SAMPLE_RATE, "frame_ms": 20},
        file_id=os.path.splitext(source.label)[0].replace(" ", "_") or "live",
        save_dir=args.save_dir,
    )
    session = LiveSession(engine, source, options, speakers)
    failed = True
    try:
        if headless:
            asyncio.run(run_headless(session))
        else:
            from app.tui import LiveTUI

            tui = LiveTUI(session)
            tui.run()
            if tui.error is not None:
                raise AppError(tui.error)
        failed = False
    except KeyboardInterrupt:
        session.interrupted = True
        failed = False
    finally:
        if outputs and not failed:  # a run that failed (e.g. the port is taken) writes nothing
            session.write_outputs()
        if demo_folder is not None:
            shutil.rmtree(demo_folder, ignore_errors=True)
    if session.interrupted and source.kind != "none" and outputs:
        print("interrupted: output files hold what was captioned so far", file=sys.stderr)
    if session.signal is not None:
        return exit_status(session.signal)
    return 130 if session.interrupted else 0

