"""How the mixed-voice check of enrollment and verification (voiceprints.voice_mix) groups real-model spans.

Not a timing: the number of voices it finds in recordings whose truth is known, with the embedded
x-vector model (or `--sv-model`) and the default speech detector, at each factor of the
verification threshold given (the service uses `MIXED_SAME_VOICE_FACTOR`, 0.8). Cases: the bundled
demo's three-person conversation, Alice's and Bruno's enrollment clips joined (one voice each) and
joined to each other (two), and 24 s of one synthetic voice each from espeak-ng and flite (all
synthetic speech: these are not real-recording figures).

    .venv/bin/python -m bench.voice_mix [--factors 0.8 1.0] [--sv-model DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

import numpy as np

from app.sources import load_audio
from engine.speech_detect import speech_mask, speech_only
from engine.speech_model import default_detector
from voiceprints.voice_mix import voice_mix
from voiceprints.xvector import XVectorEmbedder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("We met yesterday to talk about the budget for next year and the plans for the new office. "
        "Everyone agreed that the schedule was tight but possible. ") * 3


def cases(tmp: str) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (audio, true number of voices)."""
    demo = os.path.join(ROOT, "app", "demo")
    alice = np.concatenate([load_audio(os.path.join(demo, "enroll", "Alice", f"{k}.wav")) for k in (1, 2, 3)])
    bruno = np.concatenate([load_audio(os.path.join(demo, "enroll", "Bruno", f"{k}.wav")) for k in (1, 2, 3)])
    out = {"demo conversation": (load_audio(os.path.join(demo, "conversation.wav")), 3),
           "Alice's clips": (alice, 1), "Bruno's clips": (bruno, 1), "Alice + Bruno": (np.concatenate([alice, bruno]), 2)}
    path = os.path.join(tmp, "voice.wav")
    for voice in ("en-us", "en-gb-x-rp+f4", "en-us+m3", "en-us+f2"):
        subprocess.run(["espeak-ng", "-v", voice, "-w", path, TEXT], check=True)
        out[f"espeak-ng {voice}"] = (load_audio(path), 1)
    for voice in ("slt", "kal", "awb"):
        subprocess.run(["flite", "-voice", voice, "-t", TEXT, "-o", path], check=True)
        out[f"flite {voice}"] = (load_audio(path), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.8, 1.0])
    parser.add_argument("--sv-model", default=os.path.join(ROOT, "models", "embedded", "sv"))
    args = parser.parse_args()
    embedder = XVectorEmbedder(args.sv_model)
    with tempfile.TemporaryDirectory() as tmp:
        table = cases(tmp)
    print(f"threshold {embedder.threshold:.3f}; a row per recording and factor of the threshold")
    for name, (audio, truth) in table.items():
        speech = speech_only(audio, speech_mask(audio, default_detector()))
        for factor in args.factors:
            mix = voice_mix(embedder, speech, factor * embedder.threshold)
            verdict = "MIXED" if mix.mixed else "one voice"
            print(f"{name:24s} truth {truth}  x{factor:<4g} {verdict:9s} {mix.describe()}")

if __name__ == "__main__":
    main()
