"""The engine's view of the networks: a small protocol, so tests can pass scripted fakes.

`ModelSide` is stateless and shared by every stream. It runs equal-length windows in a batch and
returns per-frame outputs on the 20 ms grid; speaker embeddings come from a separate `embed` call
on the samples of one speaker's frames. The real adapter over models/ is in engine/hf_models.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Vocab:
    """CTC output symbols: `tokens[i]` is the text of id i; blank and word delimiter ids."""

    tokens: tuple[str, ...]
    blank_id: int
    delimiter_id: int | None

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.tokens):
            raise ValueError(f"blank_id {self.blank_id} outside vocabulary of {len(self.tokens)}")
        if self.delimiter_id is not None and not 0 <= self.delimiter_id < len(self.tokens):
            raise ValueError(f"delimiter_id {self.delimiter_id} outside vocabulary")

    def is_silent(self, token_id: int) -> bool:
        """Ids that add no character: blank and special tokens such as <s>, </s>, <unk>."""
        t = self.tokens[token_id]
        return token_id == self.blank_id or (t.startswith("<") and t.endswith(">"))


@dataclass(frozen=True, slots=True)
class WindowOutputs:
    """Per-frame outputs for a batch of windows; a field is None when that head was not asked for.

    `ctc_log_probs` (B, T, V) float32 log-softmax; `activity_probs` (B, T, S) float32 sigmoid;
    `speech_probs` (B, T) float32 speech probability of the speech detector ("vad");
    `embeddings` (B, D) float32 x-vectors, one per row, when "xvec" was asked for.
    Frame t of a window starting at sample s is global frame s // 320 + t.
    """

    ctc_log_probs: np.ndarray | None = None
    activity_probs: np.ndarray | None = None
    speech_probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None


@runtime_checkable
class ModelSide(Protocol):
    """What the engine needs from the networks.

    `heads` lists the heads present ("ctc", "diar", "sv", and "vad" for a speech detector);
    `shared` is True when "ctc" and "diar" run on one encoder pass (then they share the ctc window
    schedule). `run_windows` must accept a batch of equal-length windows and any subset of
    {"ctc", "diar", "vad"} in `want`, or {"xvec"} alone: one x-vector per row (x-vector spans).
    """

    heads: frozenset[str]
    shared: bool
    vocab: Vocab | None
    num_speakers: int
    fingerprint: str

    def run_windows(self, batch: np.ndarray, want: frozenset[str]) -> WindowOutputs: ...

    def embed(self, samples: np.ndarray) -> np.ndarray: ...
