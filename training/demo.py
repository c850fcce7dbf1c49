"""Build the bundled demo (app/demo/): a scripted three-speaker conversation with overlaps, and
enrollment clips for two of the speakers, all from synthetic voices held out from training.

    python -m training.demo --out app/demo [--seed 5]

Writes conversation.wav/.rttm/.json (reference speaker turns and transcript), enroll/NAME/N.wav,
and manifest.json ({"conversation": ..., "enroll": {NAME: [...]}}) which app/engine_setup.py reads.
The third speaker is never enrolled, so the app shows an unknown speaker next to the named ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from training.corpus import write_mixture
from training.mixing import SAMPLE_RATE, place_turns
from training.text import normalize_transcript
from training.voices import TEST_VARIANTS, SpeakerIdentity, synthesize

# Voices from the held-out (test) side: espeak-ng test variants, flite on the test pitch lattice.
DEMO_SPEAKERS: dict[str, SpeakerIdentity] = {
    "Alice": SpeakerIdentity("esp-en-gb-x-rp-f4-p62-s165", "espeak", "en-gb-x-rp", "f4", 62, 165),
    "Bruno": SpeakerIdentity("esp-en-us-zac-p34-s160", "espeak", "en-us", "zac", 34, 160),
    "guest": SpeakerIdentity("fl-slt-c-100-t100", "flite", "slt", "", -100, 100),
}
ENROLLED = ("Alice", "Bruno")

SCRIPT: tuple[tuple[str, str], ...] = (
    ("Alice", "Good morning everyone, shall we start the weekly meeting?"),
    ("Bruno", "Yes, I have the numbers from the shop right here."),
    ("guest", "Sorry I am late, the train was stuck outside the station."),
    ("Alice", "No problem, we only just started."),
    ("Bruno", "Sales were good this week, mostly bread and coffee."),
    ("Alice", "That is great news, what about the new cakes?"),
    ("guest", "People liked the lemon cake the most."),
    ("Bruno", "We sold out of it on Saturday afternoon."),
    ("Alice", "Then let us bake twice as many next week."),
    ("guest", "I can come in early on Friday to help."),
    ("Bruno", "Thank you, that would really help us."),
    ("Alice", "Good, I think that is all for today."),
)

ENROLL_TEXT: dict[str, tuple[str, ...]] = {
    "Alice": ("My name is Alice and I look after the shop in the village.",
              "I usually walk to work when the weather is nice.",
              "On weekends I like to read in the garden."),
    "Bruno": ("Hello, this is Bruno speaking, I keep the accounts.",
              "Every morning I check the orders before we open.",
              "In the evening I cook dinner for my family."),
}


def build_demo(out: Path, seed: int = 5) -> dict:
    """Synthesize the demo into `out`; return the manifest."""
    if set(ENROLLED) - set(DEMO_SPEAKERS):
        raise ValueError("every enrolled demo speaker needs a voice")
    for spk in DEMO_SPEAKERS.values():
        if spk.engine == "espeak" and spk.variant not in TEST_VARIANTS:
            raise ValueError(f"demo voice {spk.name} uses a variant heard in training")
    rng = np.random.default_rng(seed)
    turns = [(name, synthesize(DEMO_SPEAKERS[name], text) * 0.8, normalize_transcript(text)) for name, text in SCRIPT]
    mix = place_turns(rng, turns, overlap_prob=0.35, gap_s=(0.2, 0.9))
    out.mkdir(parents=True, exist_ok=True)
    write_mixture(out, "conversation", mix)
    manifest: dict = {"conversation": "conversation.wav", "enroll": {}}
    for name in ENROLLED:
        paths = []
        for k, text in enumerate(ENROLL_TEXT[name], 1):
            rel = f"enroll/{name}/{k}.wav"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            audio = np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), synthesize(DEMO_SPEAKERS[name], text) * 0.8,
                                    np.zeros(SAMPLE_RATE // 4, np.float32)])
            sf.write(out / rel, audio, SAMPLE_RATE, subtype="PCM_16")
            paths.append(rel)
        manifest["enroll"][name] = paths
    manifest["speakers"] = {name: spk.name for name, spk in DEMO_SPEAKERS.items()}
    manifest["duration_s"] = round(len(mix.audio) / SAMPLE_RATE, 2)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("app/demo"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    manifest = build_demo(args.out, args.seed)
    print(f"[demo] {args.out}: {manifest['duration_s']} s conversation, enrolled {', '.join(manifest['enroll'])}")


if __name__ == "__main__":
    main()
