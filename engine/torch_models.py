"""The real `ModelSide`: UniSpeech-SAT heads from models/, one encoder pass per window where possible.

Each head loads from its own Hugging Face–format folder. Heads whose encoders are identical — the
same backbone weights (compared by digest) and the same input preprocessing
(`preprocessor_config.json`: normalisation, attention mask) — are grouped, and each group runs its
backbone once per window, then every head's `forward_head` on that output. Windows in a batch are
always of equal length (the scheduler guarantees it): group-norm encoders must not see padding.
The x-vector head is wrapped by voiceprints.xvector.XVectorEmbedder, so stream clustering and the
voiceprint store use one embedding recipe, one fingerprint and one calibrated threshold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.model_side import Vocab, WindowOutputs

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # fp16: CUDA only


def pick_device(device: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def encoder_digest(backbone: torch.nn.Module, preprocessing: dict[str, Any]) -> str:
    """A digest of the backbone's weights (name, dtype, shape, bytes) and the input preprocessing."""
    h = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(repr(sorted(preprocessing.items())).encode())
    return h.hexdigest()[:16]


@dataclass
class _Group:
    """Heads sharing one backbone pass."""

    backbone: torch.nn.Module
    features: Any  # models.FeatureExtractor
    heads: dict[str, torch.nn.Module]  # "ctc" / "diar" -> head model
    hidden_states: bool


class TorchModels:
    """`ModelSide` over models/ heads; build with `TorchModels.load(asr=..., diar=..., sv=...)`."""

    def __init__(self, groups: list[_Group], vocab: Vocab | None, num_speakers: int, embedder: Any,
                 device: torch.device, dtype: torch.dtype, speech: Any = None) -> None:
        self.groups = groups
        self.speech = speech  # a engine.speech_model detector, or None
        self.vocab = vocab
        self.num_speakers = num_speakers
        self.embedder = embedder
        self.device = device
        self.dtype = dtype
        present = {name for g in groups for name in g.heads}
        self.heads = frozenset(present | ({"sv"} if embedder is not None else set())
                               | ({"vad"} if speech is not None else set()))
        self.shared = any({"ctc", "diar"} <= set(g.heads) for g in groups)
        self.fingerprint = getattr(embedder, "fingerprint", "") if embedder is not None else ""
        self.sv_threshold = float(embedder.threshold) if embedder is not None else None
        calibration = getattr(embedder, "calibration", None)
        self.sv_cluster_threshold = getattr(calibration, "cluster_threshold", None)
        self.sv_change_threshold = getattr(calibration, "change_threshold", None)

    @classmethod
    def load(cls, asr: str | Path | None = None, diar: str | Path | None = None, sv: str | Path | None = None,
             device: str = "auto", dtype: str = "fp32", vad: str = "silero") -> "TorchModels":
        """Load the given heads; at least one is needed. `vad`: the speech detector (see
        engine.speech_model.load_detector: "silero", "energy" or "off")."""
        from models import CTCVocab, FeatureExtractor, UniSpeechSatForAudioFrameClassification, UniSpeechSatForCTC

        if asr is None and diar is None and sv is None:
            raise ValueError("give at least one checkpoint: asr=, diar= or sv=")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dev, torch_dtype = pick_device(device), _DTYPES[dtype]
        if dtype == "fp16" and dev.type != "cuda":
            raise ValueError("fp16 runs only on a CUDA device; on the CPU use fp32 or bf16")
        groups: dict[str, _Group] = {}
        vocab, num_speakers = None, 0
        for name, path, klass in (("ctc", asr, UniSpeechSatForCTC), ("diar", diar, UniSpeechSatForAudioFrameClassification)):
            if path is None:
                continue
            model = klass.from_pretrained(str(path), device=dev, dtype=torch_dtype)
            fe = FeatureExtractor.from_pretrained(str(path))
            pre = {"do_normalize": fe.do_normalize, "return_attention_mask": fe.return_attention_mask,
                   "sampling_rate": fe.sampling_rate, "padding_value": fe.padding_value}
            key = encoder_digest(model.unispeech_sat, pre)
            if key in groups:  # identical encoder: keep one backbone, run it once per window
                g = groups[key]
                model.unispeech_sat = g.backbone
            else:
                g = groups[key] = _Group(model.unispeech_sat, fe, {}, False)
            g.heads[name] = model
            g.hidden_states = g.hidden_states or bool(model.needs_hidden_states)
            if name == "ctc":
                v = CTCVocab.from_pretrained(str(path))
                delim = v.tokens.index(v.delimiter) if v.delimiter in v.tokens else None
                vocab = Vocab(tuple(v.tokens), v.blank_id, delim)
            else:
                num_speakers = int(model.config.num_labels)
        embedder = None
        if sv is not None:
            from voiceprints.xvector import XVectorEmbedder  # checkpoint loading, like models/; no store

            embedder = XVectorEmbedder(str(sv), device=str(dev), dtype=dtype)
        from engine.speech_model import load_detector

        speech = load_detector(vad, device=dev)
        return cls(list(groups.values()), vocab, num_speakers, embedder, dev, torch_dtype, speech)

    @torch.inference_mode()
    def run_windows(self, batch: np.ndarray, want: frozenset[str]) -> WindowOutputs:
        """Equal-length windows (B, N) float32 -> CTC log-probs and/or speaker activity probs."""
        batch = np.asarray(batch)
        if batch.ndim != 2 or batch.dtype != np.float32:
            raise ValueError(f"batch must be (B, N) float32, got shape {batch.shape} dtype {batch.dtype}")
        if "xvec" in want:
            return WindowOutputs(embeddings=self.embed_batch(batch))
        speech = None
        if "vad" in want:
            if self.speech is None:
                raise ValueError("speech probabilities asked for, but no speech detector is loaded (--vad off)")
            speech = self.speech.frame_probs(batch)
        ctc = act = None
        for g in self.groups:
            names = [n for n in g.heads if n in want]
            if not names:
                continue
            values, mask = g.features(list(batch))
            values = values.to(self.device, dtype=self.dtype)
            mask = mask.to(self.device) if mask is not None else None
            base = g.backbone(values, mask, output_hidden_states=g.hidden_states)
            for name in names:
                logits = g.heads[name].forward_head(base, mask).logits.float()
                if name == "ctc":
                    ctc = torch.log_softmax(logits, dim=-1).cpu().numpy()
                else:
                    act = torch.sigmoid(logits).cpu().numpy()
        missing = {"ctc", "diar"} & set(want) - {n for g in self.groups for n in g.heads}
        if missing:
            raise ValueError(f"heads {sorted(missing)} asked for but not loaded")
        return WindowOutputs(ctc_log_probs=ctc, activity_probs=act, speech_probs=speech)

    @torch.inference_mode()
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, D) x-vectors of equal-length spans (B, N), in one forward."""
        e = self.embedder
        if e is None:
            raise ValueError("no x-vector checkpoint loaded (sv=)")
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or not e.min_samples <= x.shape[1] <= e.max_chunk_samples:
            raise ValueError(f"x-vector spans must be equal-length rows of 0.5-20 s, got shape {x.shape}")
        # equal lengths: one forward, and no padding reaches a group-norm front end
        values, mask = e.features(list(x))
        values = values.to(e.device, dtype=next(e.model.parameters()).dtype)
        mask = mask.to(e.device) if mask is not None else None
        return e.model(values, attention_mask=mask).embeddings.float().cpu().numpy()

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """A speaker embedding of `samples` (the x-vector head)."""
        if self.embedder is None:
            raise ValueError("no x-vector checkpoint loaded (sv=)")
        return self.embedder.embed(samples)
