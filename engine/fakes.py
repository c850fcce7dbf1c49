"""Scripted fake models and the audio they read, for tests and benchmarks without checkpoints.

The fake audio carries its own ground truth: in every 20 ms frame, the first 160 samples hold a
CTC token id and the last 160 a bit set of active speakers. `ScriptedModels` reads these back the
way a perfect model would, except that it (a) garbles the last `garble_right_frames` frames of
every window, as a real encoder with too little right context might, and (b) puts the speakers of
each window in a window-dependent order, as a real diarization head does. Its x-vector is a fixed
unit vector per speaker plus a little noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from engine.model_side import Vocab, WindowOutputs
from engine.timebase import FRAME_SAMPLES

LIBRI_TOKENS = (
    "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
    "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
)  # fmt: skip
LIBRI_VOCAB = Vocab(tokens=LIBRI_TOKENS, blank_id=0, delimiter_id=4)

_TOKEN_SCALE = 64.0
_SPEAKER_SCALE = 32.0
_HALF = FRAME_SAMPLES // 2


@dataclass(frozen=True, slots=True)
class ScriptedFrame:
    """Ground truth for one 20 ms frame: a token id and the set of active speakers (bits)."""

    token_id: int
    speakers: int = 0


def frames_to_audio(frames: list[ScriptedFrame]) -> np.ndarray:
    """Fake audio whose frames encode `frames` (float32, 320 samples per frame, + 80 of tail)."""
    out = np.zeros(len(frames) * FRAME_SAMPLES + 80, dtype=np.float32)
    for i, f in enumerate(frames):
        out[i * FRAME_SAMPLES : i * FRAME_SAMPLES + _HALF] = f.token_id / _TOKEN_SCALE
        out[i * FRAME_SAMPLES + _HALF : (i + 1) * FRAME_SAMPLES] = f.speakers / _SPEAKER_SCALE
    return out


def script(
    turns: list[tuple[int | None, str]],
    vocab: Vocab = LIBRI_VOCAB,
    char_frames: int = 2,
    gap_frames: int = 25,
) -> list[ScriptedFrame]:
    """Frames for a conversation: (speaker index or None for silence, text) per turn.

    Each character lasts `char_frames` frames followed by a blank; doubled letters are thus
    separated by a blank, as CTC needs; words are separated by a delimiter frame; turns by
    `gap_frames` of silence. A turn with speaker None and text "" is just silence.
    """
    index = {t: i for i, t in enumerate(vocab.tokens)}
    frames: list[ScriptedFrame] = []
    for speaker, text in turns:
        bits = 0 if speaker is None else 1 << speaker
        for w, word in enumerate(text.split()):
            if w:
                frames.append(ScriptedFrame(vocab.delimiter_id or 0, bits))
            for ch in word.upper():
                if ch not in index:
                    raise ValueError(f"character {ch!r} is not in the vocabulary")
                frames.extend([ScriptedFrame(index[ch], bits)] * char_frames)
                frames.append(ScriptedFrame(vocab.blank_id, bits))
        frames.extend([ScriptedFrame(vocab.blank_id, 0)] * gap_frames)
    return frames


def _read_frames(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = 0 if len(window) < 400 else (len(window) - 400) // FRAME_SAMPLES + 1
    body = window[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
    tokens = np.rint(body[:, :_HALF].mean(axis=1) * _TOKEN_SCALE).astype(np.int64)
    speakers = np.rint(body[:, _HALF:].mean(axis=1) * _SPEAKER_SCALE).astype(np.int64)
    return tokens, speakers


def _digest(a: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=8).digest(), "little")


class ScriptedModels:
    """A `ModelSide` that reads scripted fake audio (see module docstring)."""

    def __init__(
        self,
        heads: frozenset[str] = frozenset({"ctc", "diar", "sv"}),
        vocab: Vocab = LIBRI_VOCAB,
        num_speakers: int = 3,
        garble_right_frames: int = 0,
        permute: bool = True,
        embedding_dim: int = 16,
        shared: bool = False,
        noise: float = 0.05,
    ) -> None:
        self.heads = frozenset(heads)
        self.shared = shared
        self.vocab = vocab if "ctc" in heads else None
        self.num_speakers = num_speakers
        self.fingerprint = f"scripted-{embedding_dim}"
        self.garble_right_frames = garble_right_frames
        self.permute = permute
        self.noise = noise
        rng = np.random.default_rng(1234)
        basis = rng.standard_normal((8, embedding_dim))
        self.speaker_vectors = basis / np.linalg.norm(basis, axis=1, keepdims=True)
        self.calls: list[tuple[int, int, frozenset[str]]] = []  # (batch, samples, want) per call
        self.embed_calls = 0

    def run_windows(self, batch: np.ndarray, want: frozenset[str]) -> WindowOutputs:
        if batch.ndim != 2 or batch.dtype != np.float32:
            raise ValueError(f"batch must be (B, N) float32, got {batch.shape} {batch.dtype}")
        self.calls.append((batch.shape[0], batch.shape[1], frozenset(want)))
        if "xvec" in want:
            self.embed_calls += len(batch) - 1
            return WindowOutputs(embeddings=np.stack([self.embed(w) for w in batch]))
        ctc, act, speech = [], [], []
        for window in batch:
            tokens, speakers = _read_frames(window)
            if "ctc" in want:
                ctc.append(self._ctc(tokens))
            if "diar" in want:
                act.append(self._activity(speakers, _digest(window)))
            if "vad" in want:  # a perfect detector: speech wherever a speaker is active
                speech.append(np.where(speakers != 0, 0.95, 0.02).astype(np.float32))
        return WindowOutputs(
            ctc_log_probs=np.stack(ctc) if ctc else None,
            activity_probs=np.stack(act) if act else None,
            speech_probs=np.stack(speech) if speech else None,
        )

    def _ctc(self, tokens: np.ndarray) -> np.ndarray:
        v = len(self.vocab.tokens)  # type: ignore[union-attr]
        tokens = np.clip(tokens, 0, v - 1).copy()
        g = min(self.garble_right_frames, len(tokens))
        if g:
            tail = tokens[len(tokens) - g :]  # letters turn into other letters; silence stays
            tokens[len(tokens) - g :] = np.where(tail > 4, (tail * 7 + 5) % (v - 5) + 5, tail)
        logits = np.full((len(tokens), v), -8.0, dtype=np.float32)
        logits[np.arange(len(tokens)), tokens] = 8.0
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)

    def _activity(self, speakers: np.ndarray, seed: int) -> np.ndarray:
        present = [s for s in range(8) if np.any(speakers & (1 << s))][: self.num_speakers]
        slots = list(range(self.num_speakers))
        if self.permute:
            slots = list(np.random.default_rng(seed).permutation(self.num_speakers))
        probs = np.full((len(speakers), self.num_speakers), 0.03, dtype=np.float32)
        for k, s in enumerate(present):
            probs[(speakers & (1 << s)) != 0, slots[k]] = 0.97
        return probs

    def embed(self, samples: np.ndarray) -> np.ndarray:
        self.embed_calls += 1
        _, speakers = _read_frames(np.asarray(samples, dtype=np.float32))
        counts = [int(np.sum((speakers & (1 << s)) != 0)) for s in range(8)]
        rng = np.random.default_rng(_digest(np.asarray(samples, dtype=np.float32)))
        if max(counts) == 0:
            vec = rng.standard_normal(self.speaker_vectors.shape[1])
        else:
            vec = self.speaker_vectors[int(np.argmax(counts))] + self.noise * rng.standard_normal(
                self.speaker_vectors.shape[1]
            )
        return (vec / np.linalg.norm(vec)).astype(np.float32)
