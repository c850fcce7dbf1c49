"""The command line of run_live.py: the live app (TUI or headless) and the speaker subcommands.

Every option works before or after a subcommand (`run_live.py enroll NAME --input P
--speakers-db D` and `run_live.py --speakers-db D enroll NAME --input P` mean the same). Heavy
modules are imported only by the branch that needs them: the speaker subcommands never import
textual, websockets or the caption model. User errors end as one `error: ...` line on stderr and
a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Sequence

from app.errors import AppError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
OUTPUT_KINDS = ("transcript", "srt", "vtt", "rttm")

DESCRIPTION = """\
Live captions, speaker activity and enrolled-speaker matching with UniSpeech-SAT models.

With no subcommand: the terminal UI on the default microphone (or the bundled demo when there is
no microphone; headless when stdout is not a terminal). Subcommands manage voiceprints and print
JSON: enroll, verify, identify, speakers list|remove."""

EPILOG = """\
examples:
  run_live.py                                   TUI on the default microphone (demo without one)
  run_live.py --input talk.wav --fast --headless --transcript talk.txt --srt talk.srt
  run_live.py --serve 8765 --token SECRET       serve audio that websocket clients send
  run_live.py enroll alice --input a1.wav a2.wav
  run_live.py verify alice --input test.wav     last stdout line: {"name","score","threshold","accepted"}
  run_live.py identify --input who.wav
  run_live.py speakers list | speakers remove alice

models: --asr-model/--diar-model/--sv-model take a checkpoint folder (config.json + weights) or a
hub id owner/name (e.g. microsoft/unispeech-sat-base-100h-libri-ft), or `none` to switch a head
off; the default is the embedded model in models/embedded/{ctc,sd,sv}.
exit status: 0 done (verify: whatever the decision), 1 runtime error, 2 bad input or usage,
130 interrupted (output files are still written)."""


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options shared by the main parser and every subcommand (suppressed defaults in subparsers)."""
    p = argparse.ArgumentParser(add_help=False)
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    src = p.add_argument_group("input")
    # before a subcommand --input takes one path (repeatable), so `--input P verify NAME` parses
    src.add_argument("--input", metavar="PATH", nargs="+" if suppress else 1, action="extend",
                     help="audio file(s) (any format libsndfile reads; any rate/channels)", **d)
    src.add_argument("--mic", metavar="NAME|INDEX", help="microphone to use (see --list-mics)", **d)
    src.add_argument("--list-mics", action="store_true", help="list input devices and exit", **d)
    pace = src.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, metavar="X", help="play a file X times real time", **d)
    pace.add_argument("--fast", action="store_true", help="play a file as fast as compute allows", **d)
    src.add_argument("--seconds", type=float, metavar="N", help="enroll: record N s from the microphone", **d)
    src.add_argument("--replace", action="store_true", help="enroll: replace the voiceprint instead of adding", **d)
    out = p.add_argument_group("output")
    out.add_argument("--headless", action="store_true", help="no TUI: events as JSON lines on stdout", **d)
    out.add_argument("--jsonl", metavar="PATH", help="write the JSON-lines events to PATH instead of stdout", **d)
    out.add_argument("--transcript", metavar="PATH", help="final words, one line per speaker turn", **d)
    out.add_argument("--srt", metavar="PATH", help="SubRip captions with speaker labels", **d)
    out.add_argument("--vtt", metavar="PATH", help="WebVTT captions with speaker voice tags", **d)
    out.add_argument("--rttm", metavar="PATH", help="RTTM speaker turns (diarization)", **d)
    out.add_argument("--serve", metavar="[HOST:]PORT", help="websocket feed (default host 127.0.0.1)", **d)
    out.add_argument("--token", metavar="TOKEN", help="require this bearer token from feed clients", **d)
    mod = p.add_argument_group("models")
    mod.add_argument("--asr-model", metavar="DIR|OWNER/NAME", help="CTC caption checkpoint", **d)
    mod.add_argument("--diar-model", metavar="DIR|OWNER/NAME", help="frame speaker-activity checkpoint", **d)
    mod.add_argument("--sv-model", metavar="DIR|OWNER/NAME", help="x-vector voiceprint checkpoint", **d)
    mod.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:N", **d)
    mod.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="compute precision (default fp32)", **d)
    mod.add_argument("--lm-beam", type=int, metavar="N",
                     help="beam width of the language-model decoder (default 512; smaller is faster)", **d)
    mod.add_argument("--speakers-db", metavar="PATH", help="speaker store (default in the user data dir)", **d)
    return p


DEFAULTS: dict[str, Any] = {
    "input": None, "mic": None, "list_mics": False, "speed": None, "fast": False, "seconds": None,
    "replace": False, "headless": False, "jsonl": None, "transcript": None, "srt": None,
    "vtt": None, "rttm": None, "serve": None, "token": None, "asr_model": None,
    "diar_model": None, "sv_model": None, "device": "auto", "dtype": "fp32", "speakers_db": None,
    "lm_beam": None,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (argparse prints usage too)
        raise AppError(f"{message} (see --help)", exit_code=EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; `--help` on it documents the whole command line."""
    common = _common_options(suppress=True)
    parser = _Parser(
        prog="run_live.py", description=DESCRIPTION, epilog=EPILOG, parents=[_common_options(False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    kw = {"parents": [common], "formatter_class": argparse.RawDescriptionHelpFormatter}
    enroll = sub.add_parser("enroll", help="enroll NAME from --input files or --seconds of microphone", **kw)
    enroll.add_argument("name", metavar="NAME")
    verify = sub.add_parser("verify", help="score --input against NAME's voiceprint (JSON)", **kw)
    verify.add_argument("name", metavar="NAME")
    sub.add_parser("identify", help="rank enrolled speakers for --input (JSON)", **kw)
    speakers = sub.add_parser("speakers", help="list or remove enrolled speakers (JSON)", **kw)
    ssub = speakers.add_subparsers(dest="speakers_command", metavar="list|remove", required=True)
    ssub.add_parser("list", help="list enrolled speakers", **kw)
    remove = ssub.add_parser("remove", help="remove NAME's voiceprint", **kw)
    remove.add_argument("name", metavar="NAME")
    return parser  # subparsers inherit _Parser (argparse uses the parent's class)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`, fill defaults and check the combinations argparse cannot express."""
    args = build_parser().parse_args(list(argv))
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.command in ("verify", "identify") and (not args.input or len(args.input) != 1):
        raise AppError(f"{args.command} needs exactly one --input PATH", exit_code=EXIT_USAGE)
    if args.command == "enroll":
        if bool(args.input) == (args.seconds is not None):
            raise AppError("enroll needs either --input PATH... or --seconds N", exit_code=EXIT_USAGE)
        if args.seconds is not None and not args.seconds > 0:
            raise AppError(f"--seconds must be positive, got {args.seconds}", exit_code=EXIT_USAGE)
    if args.command is None and args.input and len(args.input) != 1:
        raise AppError("the live app takes one --input PATH", exit_code=EXIT_USAGE)
    if args.lm_beam is not None and args.lm_beam < 1:
        raise AppError(f"--lm-beam must be at least 1, got {args.lm_beam}", exit_code=EXIT_USAGE)
    if args.speed is not None and args.fast:
        raise AppError("--speed and --fast exclude each other", exit_code=EXIT_USAGE)
    if args.speed is not None and not args.speed > 0:
        raise AppError(f"--speed must be positive, got {args.speed}", exit_code=EXIT_USAGE)
    if args.token is not None and args.serve is None:
        raise AppError("--token only makes sense with --serve", exit_code=EXIT_USAGE)
    if args.serve is not None:
        args.serve_host, args.serve_port = parse_serve(args.serve)
    return args


def parse_serve(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port); the host defaults to loopback."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AppError(f"--serve {text!r}: expected [HOST:]PORT with PORT in 0..65535", exit_code=EXIT_USAGE)
    return host, int(port)


def resolve_model(spec: str | None, flag: str, default_dir: str | None) -> str | None:
    """A model option -> a checkpoint folder, a hub id, or None (head switched off).

    An existing folder is a checkpoint folder; anything else shaped `owner/name` is a hub id;
    `none` switches the head off; anything else is an error naming the flag.
    """
    if spec is None:
        return default_dir if default_dir and os.path.isdir(default_dir) else None
    if spec.lower() == "none":
        return None
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise AppError(f"{flag} {spec}: the folder has no config.json, so it is not a checkpoint folder")
        return os.path.abspath(spec)
    if os.path.exists(spec):
        raise AppError(f"{flag} {spec}: is a file; give the checkpoint folder (config.json + weights)")
    if HUB_ID.fullmatch(spec) and not spec.startswith((".", "/")):
        return spec
    raise AppError(f"{flag} {spec}: no such folder, and not a hub id of the form owner/name")


def embedded_dir(head: str) -> str:
    """models/embedded/<head> in this checkout (the shipped default model)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, "models", "embedded", head)


def speakers_db(args: argparse.Namespace) -> str:
    """The speaker store path: --speakers-db, else the per-user default."""
    if args.speakers_db:
        return args.speakers_db
    from engine.speaker_store import default_store_path

    return str(default_store_path())


def main(argv: Sequence[str] | None = None, engine_factory: Any = None) -> int:
    """Run the command line; returns the exit status (`engine_factory` replaces model loading)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.list_mics:
            from app.sources import list_microphones

            mics = list_microphones()
            if not mics:
                raise AppError("no microphone: PortAudio lists no input device", exit_code=EXIT_ERROR)
            for m in mics:
                mark = "*" if m.is_default else " "
                print(f"{mark} {m.index:3d}  {m.name}  ({m.channels} ch, {m.default_rate:.0f} Hz)")
            return EXIT_OK
        if args.command is not None:
            from app.commands import run_command

            return run_command(args)
        from app.session import run_live_app

        return run_live_app(args, engine_factory)
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
