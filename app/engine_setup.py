"""Build the engine and the voiceprint service from the command line's model options.

Model options resolve to checkpoint folders or hub ids (app.model_paths.resolve_model); the default is
the embedded model in models/embedded/{ctc,sd,sv}. Every loading failure (a wrong folder, a
broken checkpoint, a hub id while offline) becomes one `AppError` line naming the option.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.model_paths import embedded_dir, resolve_model
from app.errors import AppError


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The checkpoint (folder or hub id) of each head, None where the head is off."""

    asr: str | None
    diar: str | None
    sv: str | None
    lm: str | None = None  # the ARPA language model final captions are re-decoded with

    def describe(self) -> dict[str, str | None]:
        return {"asr": self.asr, "diar": self.diar, "sv": self.sv, "lm": self.lm}


def choose_models(args: argparse.Namespace) -> ModelChoice:
    """Resolve --asr-model/--diar-model/--sv-model (default: the embedded model's folders)."""
    asr = resolve_model(args.asr_model, "--asr-model", embedded_dir("ctc"))
    diar = resolve_model(args.diar_model, "--diar-model", embedded_dir("sd"))
    sv = resolve_model(args.sv_model, "--sv-model", embedded_dir("sv"))
    if asr is None and diar is None and sv is None:
        raise AppError(
            "no model: the embedded model (models/embedded/) is missing and no --asr-model, "
            "--diar-model or --sv-model was given"
        )
    return ModelChoice(asr=asr, diar=diar, sv=sv, lm=choose_language_model(args, asr))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def language_model_for(asr: str | None) -> str | None:
    """The ARPA language model shipped beside a local CTC checkpoint (`lm.arpa`...), if any."""
    if asr is None or not os.path.isdir(asr):
        return None
    from models.lm import find_language_model

    found = find_language_model(asr)
    return str(found) if found is not None else None


def choose_language_model(args: argparse.Namespace, asr: str | None) -> str | None:
    """The LM for final captions: `--lm PATH` (an ARPA file), else the one beside the CTC
    checkpoint; with `--lm-text FILE...` that LM with the text's own model mixed in
    (models.lm.domain, built once and cached in the user data dir), or the text's model alone
    when there is no LM to mix into."""
    lm_path = getattr(args, "lm", None)
    texts = getattr(args, "lm_text", None) or []
    if isinstance(texts, str):
        texts = [texts]
    if (lm_path or texts) and asr is None:
        raise AppError("--lm and --lm-text need the caption model (not --asr-model none)")
    if lm_path:
        if not os.path.isfile(lm_path):
            raise AppError(f"--lm {lm_path}: no such file")
        from models.lm.arpa import read_arpa_vocabulary

        try:
            read_arpa_vocabulary(lm_path)
        except (ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
            raise AppError(f"--lm {lm_path}: not a readable ARPA language model ({_one_line(exc)})") from None
    base = lm_path or language_model_for(asr)
    if not texts:
        return base
    for text in texts:
        if not os.path.isfile(text):
            raise AppError(f"--lm-text {text}: no such file")
    import sys

    from voiceprints.store_schema import default_store_path
    from models.lm.domain import domain_lm

    try:
        return str(domain_lm(base, texts, default_store_path().parent / "language-models", progress=sys.stderr))
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise AppError(f"--lm-text: cannot build a language model ({_one_line(exc)})") from None


def load_engine(args: argparse.Namespace, models: ModelChoice) -> Any:
    """`engine.Engine.from_checkpoints` for the chosen heads; failures become one clear line.

    Final captions are re-decoded with the language model beside the CTC checkpoint when one
    ships with it; otherwise they stay greedy.
    """
    from engine import Engine, EngineConfig

    import dataclasses

    from engine import speech_model

    beam = getattr(args, "lm_beam", None)
    config = EngineConfig() if beam is None else EngineConfig(lm_beam_width=beam)
    tracking = getattr(args, "speaker_tracking", None) or "spans"
    config = dataclasses.replace(config, speakers=dataclasses.replace(config.speakers, tracking=tracking))
    try:
        engine = Engine.from_checkpoints(
            asr=models.asr, diar=models.diar, sv=models.sv, device=args.device, dtype=args.dtype,
            config=config, lm=models.lm, vad=getattr(args, "vad", None) or "silero",
        )
        if speech_model.fallback_note:
            print(f"warning: {speech_model.fallback_note}", file=sys.stderr)
        return engine
    except AppError:
        raise
    except Exception as exc:  # which head failed is in the message the loader gives
        flags = " ".join(f"{f}={v}" for f, v in (("asr", models.asr), ("diar", models.diar),
                                                ("sv", models.sv)) if v)
        raise AppError(f"cannot load the models ({flags}): {_one_line(exc)}") from None


def attach_speakers(engine: Any, db_path: str) -> Any:
    """Open the speaker store at `db_path` with the engine's embedder; its voiceprints seed new streams
    (`engine.speakers`, refreshed after each enrollment or removal).

    Returns the VoiceprintService, or None when the engine has no speaker-embedding head.
    """
    embedder = getattr(engine, "embedder", None)
    if embedder is None:
        return None
    from voiceprints.errors import VoiceprintError
    from voiceprints.service import VoiceprintService
    from voiceprints.store import SpeakerStore

    try:
        service = VoiceprintService(embedder, SpeakerStore(db_path))
        engine.speakers = service.enrolled()  # plain values: the engine never reads the store
    except (OSError, VoiceprintError, ValueError) as exc:
        raise AppError(f"speaker store {db_path}: {_one_line(exc)}") from None

    def reseed() -> None:  # an enrollment or removal: streams opened from now on know it
        engine.speakers = service.enrolled()

    service.on_change.append(reseed)
    return service


@dataclass(frozen=True, slots=True)
class Demo:
    """The bundled demo: a conversation and enrollment clips per pre-enrolled speaker."""

    conversation: str
    enroll: dict[str, list[str]]


def demo_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")


def find_demo(folder: str | None = None) -> Demo:
    """The bundled demo in app/demo/.

    Read from `manifest.json` ({"conversation": FILE, "enroll": {NAME: [FILE, ...]}}) when there
    is one; otherwise by layout: `conversation.*` (or the one audio file at the top) and
    `enroll/NAME/*` or `enroll/NAME.*` (or top-level `enroll_NAME*.*`) for each pre-enrolled name.
    """
    import glob
    import json

    folder = folder or demo_dir()
    audio_ext = (".wav", ".flac", ".ogg")
    manifest = os.path.join(folder, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            spec = json.load(f)
        conv = os.path.join(folder, spec["conversation"])
        enroll = {name: [os.path.join(folder, p) for p in (paths if isinstance(paths, list) else [paths])]
                  for name, paths in spec.get("enroll", {}).items()}
        return Demo(conv, enroll)
    if not os.path.isdir(folder):
        raise AppError(f"the bundled demo is missing ({folder}); use --input PATH")
    top = sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.endswith(audio_ext))
    named = [p for p in top if os.path.basename(p).startswith("conversation")]
    loose = [p for p in top if not os.path.basename(p).startswith("enroll")]
    if not named and len(loose) != 1:
        raise AppError(f"the bundled demo in {folder} has no conversation file; use --input PATH")
    enroll: dict[str, list[str]] = {}
    for p in sorted(glob.glob(os.path.join(folder, "enroll", "*"))):
        if os.path.isdir(p):
            enroll[os.path.basename(p)] = sorted(q for q in glob.glob(os.path.join(p, "*")) if q.endswith(audio_ext))
        elif p.endswith(audio_ext):
            enroll.setdefault(os.path.splitext(os.path.basename(p))[0].split("_")[0], []).append(p)
    for p in top:
        base = os.path.splitext(os.path.basename(p))[0]
        if base.startswith("enroll_"):
            enroll.setdefault(base[len("enroll_"):].split("_")[0], []).append(p)
    return Demo((named or loose)[0], {k: v for k, v in enroll.items() if v})


def enroll_demo_speakers(engine: Any, demo: Demo) -> tuple[Any, str]:
    """Enroll the demo's speakers into a fresh store in a temporary folder (never the user's)."""
    from app.sources import load_audio

    folder = tempfile.mkdtemp(prefix="unispeech-live-demo-")
    service = attach_speakers(engine, os.path.join(folder, "demo-speakers.db"))
    if service is not None:
        for name, paths in demo.enroll.items():
            clips: list[np.ndarray] = [load_audio(p) for p in paths]
            service.enroll(name, clips)
    return service, folder
