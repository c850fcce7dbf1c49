"""Training batches drawn from the corpus: utterances (CTC + x-vector) and conversation windows
(speaker activity), with augmentation and utterance mixing applied on the fly; optionally
supplementary festival speech (`training.corpus_extra`), voice variation (`training.augment_voice`)
and simulated rooms and microphones (`training.rooms`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.timebase import SAMPLE_RATE
from training.augment_voice import VoiceVariation
from training.corpus import Corpus
from training.mixing import augment, build_conversation, change_speed, frame_count, frame_labels, mix_utterance
from training.rooms import Acoustics, RoomSimulator
from training.text import CTC_TOKENS

PAIR_PARTNER_S = 2.5  # longest turn-pair partner: a paired batch is at most this plus 1 s longer
MIX_ONE_VOICE_DB = 5.0  # mixed at least this far below, an utterance still trains the speaker loss
_TOKEN_ID = {t: i for i, t in enumerate(CTC_TOKENS)}


def encode_transcript(text: str) -> list[int]:
    """Token ids of a normalised transcript (spaces become `|`)."""
    try:
        return [_TOKEN_ID[c] for c in text.replace(" ", "|")]
    except KeyError as exc:
        raise ValueError(f"transcript {text!r} has a character outside the CTC vocabulary: {exc}") from None


@dataclass(frozen=True, slots=True)
class UtteranceBatch:
    """Single-speaker utterances (some with an interfering speaker mixed in)."""

    input_values: torch.Tensor  # (B,N) float32
    attention_mask: torch.Tensor  # (B,N) long
    labels: torch.Tensor  # (B,L) token ids, -100 padded
    speakers: torch.Tensor  # (B,) training speaker index
    texts: tuple[str, ...]
    speed_changed: torch.Tensor  # (B,) bool: sped up, voice-varied or extra speech: not a training speaker's voice


@dataclass(frozen=True, slots=True)
class ActivityBatch:
    """Conversation windows with per-frame speaker activity in `slots` columns."""

    input_values: torch.Tensor  # (B,N)
    labels: torch.Tensor  # (B,T,slots) float 0/1


def pad_batch(audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with zeros; return (input_values (B,N), attention_mask (B,N))."""
    n = max(len(a) for a in audios)
    x = np.zeros((len(audios), n), np.float32)
    m = np.zeros((len(audios), n), np.int64)
    for i, a in enumerate(audios):
        x[i, :len(a)] = a
        m[i, :len(a)] = 1
    return torch.from_numpy(x), torch.from_numpy(m)


class BatchSampler:
    """Draws training batches from the train split, reproducibly from `seed`."""

    def __init__(self, corpus: Corpus, seed: int, max_utt_samples: int, speaker_slots: int,
                 split: str = "train", extra_prob: float = 0.0, voice: VoiceVariation | None = None,
                 voice_prob: float = 0.0, acoustics: Acoustics | None = None) -> None:
        """`extra_prob`: share of utterances taken from the corpus' supplementary "extra" speech (if
        built); `voice_prob`: share of utterances given a `voice` variation; `acoustics`: rooms and
        microphones for utterances and conversation windows (None: none)."""
        for name, p in (("extra_prob", extra_prob), ("voice_prob", voice_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        self.corpus = corpus
        self.split = split
        self.rng = np.random.default_rng(seed)
        self.slots = speaker_slots
        rows = corpus.rows[split]
        keep = [i for i, r in enumerate(rows) if 8000 <= r["length"] <= max_utt_samples]
        if len(keep) < 2:
            raise ValueError(f"the {split} split has fewer than 2 utterances between 0.5 s and "
                             f"{max_utt_samples / 16000:.1f} s")
        self.by_length = sorted(keep, key=lambda i: rows[i]["length"])
        self.short = [i for i in self.by_length if rows[i]["length"] <= PAIR_PARTNER_S * SAMPLE_RATE]  # pair partners
        self.speakers = corpus.speakers(split)
        self.speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self.by_speaker = corpus.by_speaker(split)
        extra_rows = corpus.rows.get("extra", [])
        self.extra_by_length = sorted((i for i, r in enumerate(extra_rows) if 8000 <= r["length"] <= max_utt_samples),
                                      key=lambda i: extra_rows[i]["length"])
        self.extra_lengths = np.array([extra_rows[i]["length"] for i in self.extra_by_length], np.int64)
        self.extra_prob = extra_prob if self.extra_by_length else 0.0
        self.voice = voice or VoiceVariation()
        self.voice_prob = voice_prob
        self.rooms = RoomSimulator(acoustics, seed, self._babble_voice) if acoustics and acoustics.active else None

    def _babble_voice(self, rng: np.random.Generator) -> np.ndarray:
        """A random training utterance (babble for the room simulation)."""
        return self.corpus.audio(self.split, self.by_length[int(rng.integers(len(self.by_length)))])

    def _extra_near(self, length: int) -> tuple[np.ndarray, str]:
        """A supplementary utterance about `length` samples long (audio, transcript)."""
        k = int(np.searchsorted(self.extra_lengths, length))
        k = min(len(self.extra_by_length) - 1, max(0, k + int(self.rng.integers(-8, 9))))
        i = self.extra_by_length[k]
        return self.corpus.audio("extra", i), self.corpus.rows["extra"][i]["text"]

    def _turn_pair(self, audio: np.ndarray, text: str, speaker: str) -> tuple[np.ndarray, str] | None:
        """`audio` with another speaker's short utterance before or after it, 0.1-1 s apart (None:
        no other speaker has a short utterance)."""
        rows = self.corpus.rows[self.split]
        others = [j for j in self.short if rows[j]["speaker"] != speaker]
        if not others:
            return None
        j = others[int(self.rng.integers(len(others)))]
        gap = np.zeros(int(self.rng.uniform(0.1, 1.0) * SAMPLE_RATE), np.float32)
        other, other_text = self.corpus.audio(self.split, j), rows[j]["text"]
        if self.rng.random() < 0.5:
            return np.concatenate([other, gap, audio]), f"{other_text} {text}"
        return np.concatenate([audio, gap, other]), f"{text} {other_text}"

    def utterances(self, batch_size: int, mix_prob: float, strength: float = 1.0,
                   speed_prob: float = 0.0, speed_range: float = 0.1,
                   mix_snr_db: tuple[float, float] = (5.0, 15.0), pair_prob: float = 0.0) -> UtteranceBatch:
        """`batch_size` utterances of similar length (little padding), augmented; with probability
        `mix_prob` a piece of another speaker's utterance is mixed in, `mix_snr_db` below it (the
        target stays the first).
        With probability `pair_prob` the whole batch is made of turn pairs: each utterance preceded
        or followed, after a pause of 0.1-1 s, by another speaker's short utterance, the target both
        texts in order (a turn change inside the window, as in conversations; `PAIR_PARTNER_S`).
        With probability `speed_prob` an utterance is sped up or slowed down by a factor drawn from
        1 +- `speed_range` (pitch moves with tempo), which makes voices the corpus does not have;
        such utterances, voice-varied ones, supplementary (extra) ones, turn pairs and ones mixed
        at levels reaching under `MIX_ONE_VOICE_DB` are flagged in `speed_changed` so the speaker
        loss can leave them out."""
        n = len(self.by_length)
        pool = self.by_length
        start = int(self.rng.integers(0, max(1, len(pool) - batch_size)))
        idx = pool[start:start + batch_size]
        rows = self.corpus.rows[self.split]
        if not 0.0 <= pair_prob <= 1.0:
            raise ValueError(f"pair_prob must be a probability in [0, 1], got {pair_prob}")
        if pair_prob > 0 and not self.short:
            raise ValueError(f"turn pairs need utterances of at most {PAIR_PARTNER_S} s; the {self.split} split has none")
        if mix_snr_db[0] > mix_snr_db[1]:
            raise ValueError(f"the mixing level range is empty: {mix_snr_db[0]} dB > {mix_snr_db[1]} dB")
        audios, labels, speakers, texts, changed = [], [], [], [], []
        paired = pair_prob > 0 and self.rng.random() < pair_prob
        for i in idx:
            audio, text = self.corpus.audio(self.split, i), rows[i]["text"]
            foreign = self.extra_prob > 0 and self.rng.random() < self.extra_prob  # festival speech
            if foreign:
                audio, text = self._extra_near(len(audio))
            mixed = False
            if self.rng.random() < mix_prob:
                j = self.by_length[int(self.rng.integers(n))]
                if foreign or rows[j]["speaker"] != rows[i]["speaker"]:
                    audio = mix_utterance(self.rng, audio, self.corpus.audio(self.split, j), snr_db=mix_snr_db)
                    mixed = mix_snr_db[0] < MIX_ONE_VOICE_DB  # another voice nearly as loud: not one speaker's
            sped = speed_prob > 0 and self.rng.random() < speed_prob
            if sped:
                audio = change_speed(audio, float(self.rng.uniform(1 - speed_range, 1 + speed_range)))
            varied = self.voice_prob > 0 and self.rng.random() < self.voice_prob
            if varied:
                audio = self.voice.apply(self.rng, audio)
            pair = self._turn_pair(audio, text, rows[i]["speaker"]) if paired else None
            if pair is not None:
                audio, text = pair
            changed.append(foreign or sped or varied or mixed or pair is not None)
            audio = augment(self.rng, audio, strength)
            if self.rooms is not None:
                audio = self.rooms.apply(self.rng, audio)
            audios.append(audio)
            labels.append(encode_transcript(text))
            speakers.append(0 if foreign else self.speaker_index[rows[i]["speaker"]])
            texts.append(text)
        x, m = pad_batch(audios)
        lab = torch.full((len(idx), max(len(l) for l in labels)), -100, dtype=torch.long)
        for k, l in enumerate(labels):
            lab[k, :len(l)] = torch.tensor(l)
        return UtteranceBatch(x, m, lab, torch.tensor(speakers), tuple(texts), torch.tensor(changed))

    def conversations(self, batch_size: int, window_samples: int, strength: float = 1.0) -> ActivityBatch:
        """Conversation windows of 1..slots speakers with turns, pauses and overlaps."""
        audios, labels = [], []
        n_frames = frame_count(window_samples)
        for _ in range(batch_size):
            k = int(self.rng.choice(np.arange(1, self.slots + 1), p=_speaker_count_probs(self.slots)))
            names = [self.speakers[j] for j in self.rng.choice(len(self.speakers), k, replace=False)]
            pools = {}
            for name in names:
                idx = self.rng.permutation(self.by_speaker[name])[:6]
                pools[name] = [(self.corpus.audio(self.split, int(i)), "") for i in idx]
            mix = build_conversation(self.rng, pools, window_samples, overlap_prob=0.35,
                                     gap_s=(0.05, 0.8), gain_db=(-6.0, 0.0), truncate=True)
            slots = list(self.rng.permutation(self.slots))
            order = [""] * self.slots
            for name, slot in zip(names, slots):
                order[slot] = name
            lab = np.zeros((n_frames, self.slots), np.float32)
            present = [s for s in order if s]
            cols = frame_labels(mix.segments, present, n_frames)
            for c, name in enumerate(present):
                lab[:, order.index(name)] = cols[:, c]
            audio = augment(self.rng, mix.audio, strength)
            if self.rooms is not None:  # one room and microphone for the whole conversation
                audio = self.rooms.apply(self.rng, audio)
            audios.append(audio)
            labels.append(lab)
        x, _ = pad_batch(audios)
        return ActivityBatch(x, torch.from_numpy(np.stack(labels)))


def _speaker_count_probs(slots: int) -> np.ndarray:
    p = np.array([0.15, 0.45, 0.4] + [0.2] * max(0, slots - 3))[:slots]
    return p / p.sum()


def pit_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant BCE: per item, the speaker-slot permutation of the labels with the
    lowest sigmoid BCE against `logits` (B,T,S); mean over items."""
    import itertools

    import torch.nn.functional as F

    s = labels.shape[-1]
    losses = []
    for perm in itertools.permutations(range(s)):
        per = F.binary_cross_entropy_with_logits(logits, labels[:, :, list(perm)], reduction="none")
        losses.append(per.mean(dim=(1, 2)))
    return torch.stack(losses, dim=1).min(dim=1).values.mean()
