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
import sys
from typing import Any, Sequence

from app.errors import AppError
from app.model_paths import HUB_ID, embedded_dir, resolve_model, speakers_db  # noqa: F401  (re-exported)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_KINDS = ("transcript", "srt", "vtt", "rttm")

DESCRIPTION = """\
Live captions, speaker activity and enrolled-speaker matching with UniSpeech-SAT models.

With no subcommand: the terminal UI on the default microphone (or the bundled demo when there is
no microphone; headless when stdout is not a terminal). Subcommands manage voiceprints and print
JSON: enroll, verify, identify, speakers list|export|remove|reembed. `COMMAND --help` lists the options
each subcommand takes; an option a command does not take is refused."""

EPILOG = """\
examples:
  run_live.py                                   TUI on the default microphone (demo without one)
  run_live.py --input talk.wav --fast --headless --transcript talk.txt --srt talk.srt
  run_live.py --serve 8765 --token SECRET       serve audio that websocket clients send
  run_live.py enroll alice --input a1.wav a2.wav
  run_live.py verify alice --input test.wav     last stdout line: {"name","score","threshold","accepted"}
  run_live.py identify --input who.wav
  run_live.py speakers list | speakers export alice --to alice-vp | speakers remove alice
  run_live.py speakers reembed                  voiceprints for a new x-vector model, from kept audio

models: --asr-model/--diar-model/--sv-model take a checkpoint folder (config.json + weights) or a
hub id owner/name (e.g. microsoft/unispeech-sat-base-100h-libri-ft), or `none` to switch a head
off; the default is the embedded model in models/embedded/{ctc,sd,sv}.
exit status: 0 done (verify: whatever the decision), 1 runtime error, 2 bad input or usage,
130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: output files are still written and feed
clients closed with 1001; a second signal exits at once."""


# Every option once: (group, flags, argparse keywords). Which command takes which is in COMMAND_OPTIONS.
_OPTIONS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("input", ("--input",), {"metavar": "PATH", "action": "extend",
                             "help": "audio file(s) (any format libsndfile reads; any rate/channels)"}),
    ("input", ("--mic",), {"metavar": "NAME|INDEX", "help": "microphone to use (see --list-mics)"}),
    ("input", ("--list-mics",), {"action": "store_true", "help": "list input devices and exit"}),
    ("input", ("--speed",), {"type": float, "metavar": "X", "help": "play a file X times real time"}),
    ("input", ("--fast",), {"action": "store_true", "help": "play a file as fast as compute allows"}),
    ("enroll", ("--seconds",), {"type": float, "metavar": "N", "help": "record N s from the microphone"}),
    ("enroll", ("--replace",), {"action": "store_true", "help": "replace the voiceprint instead of adding to it"}),
    ("enroll", ("--allow-mixed",), {"action": "store_true",
                                    "help": "enroll even when the audio seems to hold several voices"}),
    ("enroll", ("--keep-outliers",), {"action": "store_true",
                                      "help": "keep recordings that do not match the others (left out by default)"}),
    ("enroll", ("--same-voice-ok",), {"action": "store_true",
                                      "help": "enroll a new name whose voice matches someone already enrolled"}),
    ("output", ("--headless",), {"action": "store_true", "help": "no TUI: events as JSON lines on stdout"}),
    ("output", ("--jsonl",), {"metavar": "PATH", "help": "write the JSON-lines events to PATH (as they happen)"}),
    ("output", ("--transcript",), {"metavar": "PATH", "help": "final words, one line per speaker turn"}),
    ("output", ("--srt",), {"metavar": "PATH", "help": "SubRip captions with speaker labels"}),
    ("output", ("--vtt",), {"metavar": "PATH", "help": "WebVTT captions with speaker voice tags"}),
    ("output", ("--rttm",), {"metavar": "PATH", "help": "RTTM speaker turns (diarization)"}),
    ("output", ("--save-dir",), {"metavar": "DIR", "help": "where the TUI's `s` saves a transcript "
                                 "(default <user data dir>/unispeech-live/transcripts)"}),
    ("output", ("--serve",), {"metavar": "[HOST:]PORT", "help": "websocket feed (default host 127.0.0.1)"}),
    ("output", ("--token",), {"metavar": "TOKEN", "help": "require this bearer token from feed clients"}),
    ("output", ("--max-clients",), {"type": int, "metavar": "N",
                                    "help": "feed: refuse connections beyond N with close code 1013 (default 100)"}),
    ("output", ("--replay-grace",), {"type": float, "metavar": "S",
                                     "help": "feed: keep serving replay and exports S seconds after the input ends "
                                             "(default 10 with --input, 0 to exit at once)"}),
    ("output", ("--tls-cert",), {"metavar": "PEM", "help": "feed: serve https/wss with this certificate (with --tls-key)"}),
    ("output", ("--tls-key",), {"metavar": "PEM", "help": "feed: the certificate's private key"}),
    ("output", ("--to",), {"metavar": "DIR", "dest": "export_to",
                           "help": "speakers export: the folder to create (default ./NAME-voiceprint)"}),
    ("models", ("--asr-model",), {"metavar": "DIR|OWNER/NAME", "help": "CTC caption checkpoint"}),
    ("models", ("--diar-model",), {"metavar": "DIR|OWNER/NAME", "help": "frame speaker-activity checkpoint"}),
    ("models", ("--sv-model",), {"metavar": "DIR|OWNER/NAME", "help": "x-vector voiceprint checkpoint"}),
    ("models", ("--device",), {"metavar": "DEV", "help": "auto (default), cpu, cuda, cuda:N"}),
    ("models", ("--dtype",), {"choices": ("fp32", "bf16", "fp16"),
                              "help": "compute precision (default fp32; fp16 only on CUDA)"}),
    ("models", ("--lm-beam",), {"type": int, "metavar": "N",
                                "help": "beam width of the language-model decoder (default 512; smaller is faster)"}),
    ("models", ("--lm",), {"metavar": "PATH", "help": "ARPA word language model for final captions "
                           "(default: the one beside the caption model)"}),
    ("models", ("--lm-text",), {"metavar": "PATH", "nargs": "+", "help": "your own text, one sentence a line: "
                                "mixed into the language model (built once, cached)"}),
    ("models", ("--vad",), {"choices": ("silero", "energy", "off"),
                            "help": "speech detector: silero (default; trained on real speech), energy (a level "
                                    "threshold, the fallback), off (captions and speakers from every frame)"}),
    ("models", ("--speaker-tracking",), {"choices": ("spans", "activity"),
                                         "help": "who speaks when: spans (default: x-vectors of detected speech, "
                                                 "clustered online) or activity (the frame-activity head's channels)"}),
    ("models", ("--speakers-db",), {"metavar": "PATH", "help": "speaker store (default in the user data dir)"}),
]


def _dest(flags: tuple[str, ...], kw: dict[str, Any]) -> str:
    return kw.get("dest") or flags[0].lstrip("-").replace("-", "_")


_SCORING = {"input", "sv_model", "device", "dtype", "speakers_db"}
_LIVE = {_dest(f, kw) for g, f, kw in _OPTIONS if g in ("input", "output", "models")} - {"export_to"}
COMMAND_OPTIONS: dict[str, set[str]] = {  # which options each command takes (the rest are refused)
    "live": _LIVE,
    "enroll": _SCORING | {"mic", "seconds", "replace", "allow_mixed", "keep_outliers", "same_voice_ok"},
    "verify": set(_SCORING),
    "identify": set(_SCORING),
    "speakers list": {"speakers_db"},
    "speakers remove": {"speakers_db"},
    "speakers export": {"speakers_db", "export_to"},
    "speakers reembed": _SCORING - {"input"},
}


def _options(dests: set[str] | None, before_command: bool) -> argparse.ArgumentParser:
    """A parent parser with the options in `dests` (all when None); defaults are filled later.

    Defaults are suppressed so that the parsed namespace holds exactly the options given, which
    is how options that do not apply to a command are found and refused.
    """
    p = argparse.ArgumentParser(add_help=False)
    groups: dict[str, Any] = {}
    for group, flags, kw in _OPTIONS:
        if dests is not None and _dest(flags, kw) not in dests:
            continue
        if group not in groups:
            title = {"enroll": "enroll options" if dests is not None else "enroll only"}.get(group, group)
            groups[group] = p.add_argument_group(title)
        kw = dict(kw, default=argparse.SUPPRESS)
        if flags == ("--input",):  # before a subcommand --input takes one path, so `--input P verify NAME` parses
            kw["nargs"] = 1 if before_command else "+"
        groups[group].add_argument(*flags, **kw)
    return p


DEFAULTS: dict[str, Any] = {
    "input": None, "mic": None, "list_mics": False, "speed": None, "fast": False, "seconds": None,
    "replace": False, "allow_mixed": False, "keep_outliers": False, "same_voice_ok": False,
    "headless": False, "jsonl": None, "transcript": None, "srt": None, "save_dir": None,
    "vtt": None, "rttm": None, "serve": None, "token": None, "export_to": None, "asr_model": None,
    "diar_model": None, "sv_model": None, "device": "auto", "dtype": "fp32", "speakers_db": None,
    "lm_beam": None, "vad": "silero", "speaker_tracking": "spans", "max_clients": None, "replay_grace": None, "tls_cert": None, "tls_key": None,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (argparse prints usage too)
        raise AppError(f"{message} (see --help)", exit_code=EXIT_USAGE)


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    from app import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The full parser; `--help` on it documents the whole command line, each subcommand its own options."""
    console = os.path.basename(sys.argv[0]) == "unispeech-live"  # the installed console script
    parser = _Parser(
        prog="unispeech-live" if console else "run_live.py", description=DESCRIPTION, epilog=EPILOG, parents=[_options(None, True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def kw(command: str) -> dict[str, Any]:
        return {"parents": [_options(COMMAND_OPTIONS[command], False)],
                "formatter_class": argparse.RawDescriptionHelpFormatter}

    enroll = sub.add_parser("enroll", help="enroll NAME from --input files or --seconds of microphone", **kw("enroll"))
    enroll.add_argument("name", metavar="NAME")
    verify = sub.add_parser("verify", help="score --input against NAME's voiceprint (JSON)", **kw("verify"))
    verify.add_argument("name", metavar="NAME")
    sub.add_parser("identify", help="rank enrolled speakers for --input (JSON)", **kw("identify"))
    speakers = sub.add_parser("speakers", help="list, export, remove or re-embed enrolled speakers (JSON)",
                              **kw("speakers list"))
    ssub = speakers.add_subparsers(dest="speakers_command", metavar="list|export|remove|reembed", required=True)
    ssub.add_parser("list", help="list enrolled speakers", **kw("speakers list"))
    export = ssub.add_parser("export", help="copy NAME's voiceprints, metadata and kept audio into a folder",
                             **kw("speakers export"))
    export.add_argument("name", metavar="NAME")
    remove = ssub.add_parser("remove", help="delete NAME's voiceprint, recordings and audio from the store",
                             **kw("speakers remove"))
    remove.add_argument("name", metavar="NAME")
    ssub.add_parser("reembed", help="make voiceprints for the current x-vector model from the kept enrollment audio "
                    "(after a model change)", **kw("speakers reembed"))
    return parser  # subparsers inherit _Parser (argparse uses the parent's class)


def _command_key(args: argparse.Namespace) -> str:
    if args.command is None:
        return "live"
    if args.command == "speakers":
        return f"speakers {args.speakers_command}"
    return str(args.command)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`, refuse options the command does not take, fill defaults, check combinations."""
    args = build_parser().parse_args(list(argv))
    command = _command_key(args)
    given = [(f, kw) for _, f, kw in _OPTIONS if hasattr(args, _dest(f, kw))]
    foreign = [f[0] for f, kw in given if _dest(f, kw) not in COMMAND_OPTIONS[command]]
    if foreign:
        what = "the live app" if command == "live" else command
        raise AppError(f"{', '.join(foreign)} does not apply to {what} (see {'' if command == 'live' else command + ' '}"
                       "--help)", exit_code=EXIT_USAGE)
    for key, value in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for _, flags, kw in _OPTIONS:  # an option without an entry in DEFAULTS: None (False for a switch)
        if not hasattr(args, _dest(flags, kw)):
            setattr(args, _dest(flags, kw), False if kw.get("action") == "store_true" else None)
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
    if args.dtype == "fp16" and args.device == "cpu":
        raise AppError(FP16_ON_CPU, exit_code=EXIT_USAGE)
    if args.serve is not None:
        args.serve_host, args.serve_port = parse_serve(args.serve)
    check_serve_options(args)
    return args


def check_serve_options(args: argparse.Namespace) -> None:
    """The feed's own options: only with --serve, sane numbers, certificate and key together."""
    given = [f"--{k.replace('_', '-')}" for k in ("max_clients", "replay_grace", "tls_cert", "tls_key")
             if getattr(args, k, None) is not None]
    if given and args.serve is None:
        raise AppError(f"{', '.join(given)} only make sense with --serve", exit_code=EXIT_USAGE)
    if args.max_clients is not None and args.max_clients < 1:
        raise AppError(f"--max-clients must be at least 1, got {args.max_clients}", exit_code=EXIT_USAGE)
    if args.replay_grace is not None and not 0 <= args.replay_grace <= 86400:
        raise AppError(f"--replay-grace must be 0..86400 seconds, got {args.replay_grace}", exit_code=EXIT_USAGE)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise AppError("--tls-cert and --tls-key go together", exit_code=EXIT_USAGE)
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not os.path.isfile(path):
            raise AppError(f"{flag} {path}: no such file", exit_code=EXIT_USAGE)


FP16_ON_CPU = ("--dtype fp16 runs only on a CUDA device, and this run is on the CPU; "
               "use --dtype fp32 (default) or bf16 on the CPU, or --device cuda")


def check_dtype_device(args: argparse.Namespace) -> None:
    """Refuse fp16 when the device (after resolving `auto`) is the CPU: one clear line, before loading."""
    if args.dtype != "fp16":
        return
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not str(device).startswith("cuda"):
        raise AppError(FP16_ON_CPU, exit_code=EXIT_USAGE)


def parse_serve(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port); the host defaults to loopback."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AppError(f"--serve {text!r}: expected [HOST:]PORT with PORT in 0..65535", exit_code=EXIT_USAGE)
    return host, int(port)


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
        if _command_key(args) in ("live", "enroll", "verify", "identify"):
            check_dtype_device(args)
        if args.command is not None:
            from app.commands import run_command

            return run_command(args)
        from app.live_app import run_live_app

        return run_live_app(args, engine_factory)
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
