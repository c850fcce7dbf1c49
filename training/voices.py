"""Synthetic speaker identities and speech synthesis with espeak-ng, flite and festival.

An identity is a fixed combination of synthesizer, voice, accent, pitch and rate (espeak-ng), or a
flite or festival voice with a sox pitch shift and tempo change. Splits hold out whole espeak-ng
voice variants (and distinct flite pitch/tempo settings), so test speakers are voices the model
never heard.

A voice *family* is the recorded speaker (or espeak-ng variant) a voice is built on, across
engines: flite's kal, kal16 and festival's kal_diphone are all Kal; flite's slt and festival's HTS
slt are both SLT. `recorded_family` names it; the split rule (`held_out_families`) is stated in
families, so a test family never reaches training through another engine.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass

import numpy as np
import soxr

from engine.timebase import SAMPLE_RATE

TRIM_BLOCK_SAMPLES = 160  # 10 ms: trimmed utterances start and end on this grid (exact RTTM)

ESPEAK_ACCENTS: tuple[str, ...] = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
# espeak-ng voice variants that still sound like speech (robots, whispers and effects removed).
ESPEAK_VARIANTS: tuple[str, ...] = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2",
    "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta",
    "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike",
    "Nguyen", "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph", "steph2", "steph3",
    "Storm", "zac", "anika", "AnxiousAndy", "f1", "f2", "f3", "f4", "f5", "grandpa", "grandma",
    "klatt", "klatt2", "klatt3", "klatt4", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "norbert", "sandro", "shelby", "travis", "victor",
)
FLITE_VOICES: tuple[str, ...] = ("kal16", "awb", "rms", "slt", "kal")
FLITE_PREFIX = "fl-"  # speaker names of flite identities start with this
# festival voice -> its recorded speaker. kal and ked are diphone sets cut from real recordings
# (festvox-kallpc16k, festvox-kdlpc16k); slt is an HTS voice trained on CMU ARCTIC's SLT
# (festvox-us-slt-hts).
FESTIVAL_VOICES: dict[str, str] = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}
FESTIVAL_PREFIX = "fest-"  # speaker names of festival identities start with this
# flite voice -> its recorded speaker (kal16 is the same Kal diphones at 16 kHz; awb, rms and slt
# are CMU ARCTIC speakers).
FLITE_FAMILIES: dict[str, str] = {"kal16": "kal", "kal": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
# Held-out espeak-ng variants: never heard in training.
VAL_VARIANTS: tuple[str, ...] = ("Annie", "edward2", "iven3", "m5", "steph2", "travis")
TEST_VARIANTS: tuple[str, ...] = (
    "aunty", "Diogo", "Gene2", "Jacky", "klatt3", "f4", "m7", "marcelo", "quincy", "sandro",
    "shelby", "zac",
)


@dataclass(frozen=True, slots=True)
class SpeakerIdentity:
    """One synthetic speaker: a synthesizer voice with fixed prosody settings."""

    name: str
    engine: str  # "espeak" | "flite" | "festival"
    voice: str  # espeak accent (e.g. "en-gb"), flite voice or festival voice
    variant: str  # espeak variant, "" for flite and festival
    pitch: int  # espeak pitch 0-99, or sox pitch shift in cents for flite and festival
    rate: int  # espeak words per minute, or sox tempo in percent for flite and festival


def voice_family(name: str) -> str:
    """The timbre an identity name is built on: its espeak-ng variant (any accent, pitch, rate) or
    its flite voice (any pitch shift, tempo). Identities of one family are the hardest to tell apart
    (measured: docs/training.md, stage 2)."""
    parts = name.split("-")
    if name.startswith(FLITE_PREFIX) and len(parts) >= 2:
        return f"{FLITE_PREFIX}{parts[1]}"
    if parts[0] == "esp" and len(parts) >= 4:
        return f"esp-{parts[-3]}"
    if name.startswith(FESTIVAL_PREFIX) and len(parts) >= 2:
        return f"{FESTIVAL_PREFIX}{parts[1]}"
    raise ValueError(f"not a synthetic identity name: {name!r}")


def recorded_family(name: str) -> str:
    """The recorded speaker behind an identity name, the same across engines: "rec-kal" for flite
    kal/kal16 and festival kal_diphone, "rec-slt" for flite slt and festival's HTS slt, and so on;
    espeak-ng voices are rule-based, so their family is their variant ("esp-m5")."""
    family = voice_family(name)
    if family.startswith(FLITE_PREFIX):
        return f"rec-{FLITE_FAMILIES[family[len(FLITE_PREFIX):]]}"
    if family.startswith(FESTIVAL_PREFIX):
        voice = family[len(FESTIVAL_PREFIX):]
        if voice not in FESTIVAL_VOICES:
            raise ValueError(f"unknown festival voice in {name!r}; expected one of {sorted(FESTIVAL_VOICES)}")
        return f"rec-{FESTIVAL_VOICES[voice]}"
    return family


def held_out_families(speakers: dict[str, str]) -> set[str]:
    """Families no training speech may use, given `speakers` (name -> split) of a built corpus: those
    present in val or test but not in train. A family held out in one engine is held out in all, so
    extra speech from another engine cannot bring a test speaker into training."""
    by_split: dict[str, set[str]] = {}
    for name, split in speakers.items():
        by_split.setdefault(split, set()).add(recorded_family(name))
    return (by_split.get("val", set()) | by_split.get("test", set())) - by_split.get("train", set())


def festival_identities(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[SpeakerIdentity]:
    """`n` distinct festival identities for training: a festival voice whose recorded family is not
    in `exclude`, a sox pitch shift on the training lattice (multiples of 40 cents, as flite's
    training identities) and a tempo."""
    voices = [v for v, fam in FESTIVAL_VOICES.items() if f"rec-{fam}" not in exclude]
    if not voices:
        raise ValueError(f"every festival voice belongs to an excluded family {sorted(exclude)}")
    rng = random.Random(f"{seed}-festival")
    out: dict[str, SpeakerIdentity] = {}
    for _ in range(100 * n):
        if len(out) == n:
            break
        voice = rng.choice(voices)
        cents, tempo = 40 * rng.randrange(-8, 9), rng.randrange(85, 121, 5)
        name = f"{FESTIVAL_PREFIX}{voice}-c{cents:+d}-t{tempo}"
        out.setdefault(name, SpeakerIdentity(name, "festival", voice, "", cents, tempo))
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct festival identities exist for {voices}, asked for {n}")
    return list(out.values())


def make_identities(split: str, n_espeak: int, n_flite: int, seed: int) -> list[SpeakerIdentity]:
    """Return `n_espeak + n_flite` distinct identities for `split` ("train", "val", "test").

    espeak-ng identities use only the split's own variants; flite identities use pitch shifts
    on a split-specific lattice (train: multiples of 40 cents, val: 40k+10, test: 40k+20), so no
    two splits share an identity.
    """
    variants = {"val": VAL_VARIANTS, "test": TEST_VARIANTS}.get(split)
    if variants is None:
        if split != "train":
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        held = set(VAL_VARIANTS) | set(TEST_VARIANTS)
        variants = tuple(v for v in ESPEAK_VARIANTS if v not in held)
    cents_offset = {"train": 0, "val": 10, "test": 20}[split]
    rng = random.Random(f"{seed}-identities-{split}")
    out: dict[str, SpeakerIdentity] = {}
    while len(out) < n_espeak:
        accent, variant = rng.choice(ESPEAK_ACCENTS), rng.choice(variants)
        pitch, rate = rng.randrange(20, 81, 2), rng.randrange(135, 196, 5)
        name = f"esp-{accent}-{variant}-p{pitch}-s{rate}"
        out.setdefault(name, SpeakerIdentity(name, "espeak", accent, variant, pitch, rate))
    n_total = n_espeak + n_flite
    while len(out) < n_total:
        voice = rng.choice(FLITE_VOICES)
        cents = 40 * rng.randrange(-11, 12) + cents_offset
        tempo = rng.randrange(85, 121, 5)
        name = f"{FLITE_PREFIX}{voice}-c{cents:+d}-t{tempo}"
        out.setdefault(name, SpeakerIdentity(name, "flite", voice, "", cents, tempo))
    return list(out.values())


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout


def _wav_bytes_to_float(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a 16-bit PCM RIFF stream (espeak-ng --stdout writes a bogus length, so parse by hand)."""
    if data[:4] != b"RIFF" or data[12:16] != b"fmt ":
        raise RuntimeError("synthesizer did not return a WAV stream")
    rate = int.from_bytes(data[24:28], "little")
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"data":
            pcm = np.frombuffer(data[pos + 8:len(data) - (len(data) - pos - 8) % 2], dtype="<i2")
            return pcm.astype(np.float32) / 32768.0, rate
        pos += 8 + size
    raise RuntimeError("WAV stream has no data chunk")


def synthesize(identity: SpeakerIdentity, text: str) -> np.ndarray:
    """Speak `text` with `identity`; return float32 mono 16 kHz audio, silence trimmed.

    The result starts and ends on a 10 ms grid (`TRIM_BLOCK_SAMPLES`) and its peak is 0.5.
    Deterministic: the same identity and text give the same samples.
    """
    text = text.strip().lstrip("-")  # a leading dash would be read as a command-line option
    if not text:
        raise ValueError("nothing to synthesize: empty text")
    if identity.engine == "espeak":
        wav = _run(["espeak-ng", "-v", f"{identity.voice}+{identity.variant}", "-p", str(identity.pitch),
                    "-s", str(identity.rate), "--stdout", text])
        audio, rate = _wav_bytes_to_float(wav)
        if rate != SAMPLE_RATE:
            audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    elif identity.engine in ("flite", "festival"):
        if identity.engine == "flite":
            wav = _run(["flite", "-voice", identity.voice, "-t", text, "-o", "/dev/stdout"])
            source = ["-t", "wav"]
        else:  # text2wave's streamed WAV header says 0 samples, so take raw 16 kHz PCM
            wav = _run(["text2wave", "-eval", f"(voice_{identity.voice})", "-otype", "raw", "-F", str(SAMPLE_RATE),
                        "-o", "-"], stdin=text.encode())
            source = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(SAMPLE_RATE)]
        raw = _run(["sox", "-D", *source, "-", "-t", "raw", "-e", "floating-point", "-b", "32",
                    "-c", "1", "-r", str(SAMPLE_RATE), "-", "pitch", str(identity.pitch),
                    "tempo", "-s", f"{identity.rate / 100:.2f}"], stdin=wav)
        audio = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        raise ValueError(f"unknown synthesizer {identity.engine!r}")
    return trim_and_normalize(audio)


def trim_and_normalize(audio: np.ndarray, floor_db: float = -34.0) -> np.ndarray:
    """Cut leading/trailing blocks quieter than `floor_db` below the loudest 10 ms block; peak 0.5."""
    n_blocks = len(audio) // TRIM_BLOCK_SAMPLES
    if n_blocks == 0:
        raise ValueError("synthesized audio is shorter than 10 ms")
    blocks = audio[: n_blocks * TRIM_BLOCK_SAMPLES].reshape(n_blocks, TRIM_BLOCK_SAMPLES)
    rms = np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    cut = blocks[loud[0]: loud[-1] + 1].reshape(-1)
    peak = float(np.abs(cut).max())
    if peak <= 0:
        raise ValueError("synthesized audio is silent")
    return (cut * (0.5 / peak)).astype(np.float32)
