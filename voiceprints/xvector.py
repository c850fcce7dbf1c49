"""The UniSpeech-SAT x-vector embedder (models/ `UniSpeechSatForXVector`) and the fingerprint of a checkpoint.

The fingerprint names an embedding space: voiceprints are only compared with embeddings of the same
fingerprint. The embedder's threshold comes from `verification.json` beside the checkpoint
(`voiceprints.calibration`). Torch and models/ are imported only when an embedder is built.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from engine.timebase import SAMPLE_RATE, seconds_to_samples
from voiceprints.calibration import load_calibration
from voiceprints.errors import InvalidAudioError
from voiceprints.records import mean_voiceprint

# Keys of config.json that do not change what the network computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "architectures", "id2label", "label2id",
                         "torch_dtype", "dtype", "_commit_hash"}
_PREPROCESSOR_KEYS = ("do_normalize", "return_attention_mask", "sampling_rate", "feature_size", "padding_value")


def _hash_safetensors(path: Path, h: "hashlib._Hash") -> None:
    """Feed `h` every tensor of a safetensors file in name order: name, dtype, shape, raw bytes."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise ValueError(f"{path}: damaged safetensors header")
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for name in sorted(k for k in header if k != "__metadata__"):
                info = header[name]
                start, end = info["data_offsets"]
                h.update(f"{name}|{info['dtype']}|{info['shape']}|".encode())
                h.update(memoryview(mm)[base + start : base + end])


def checkpoint_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """`sha256:` + 16 hex digits over the weights, the architecture config and the preprocessing.

    Safetensors weights are hashed tensor by tensor in name order (the same weights saved in a
    different order give the same fingerprint); `pytorch_model.bin` is hashed as bytes. From
    config.json every key except bookkeeping (`_name_or_path`, labels, versions) counts, and
    from preprocessor_config.json the keys that change the input (normalisation, mask, rate).
    """
    root = Path(model_dir)
    h = hashlib.sha256()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{root}: no config.json, not a checkpoint folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    h.update(json.dumps({k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS},
                        sort_keys=True).encode())
    pre_path = root / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text(encoding="utf-8")) if pre_path.is_file() else {}
    h.update(json.dumps({k: pre.get(k) for k in _PREPROCESSOR_KEYS}, sort_keys=True).encode())
    shards = sorted(root.glob("*.safetensors"))
    if shards:
        for shard in shards:
            _hash_safetensors(shard, h)
    elif (root / "pytorch_model.bin").is_file():
        with open(root / "pytorch_model.bin", "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    else:
        raise ValueError(f"{root}: no model.safetensors or pytorch_model.bin")
    return "sha256:" + h.hexdigest()[:16]


class XVectorEmbedder:
    """`Embedder` over a UniSpeech-SAT x-vector checkpoint folder (models/ `UniSpeechSatForXVector`).

    `device`: "cpu" (also for None), "cuda[:N]" or "auto"; `dtype`: "fp32" (also for None), "bf16",
    or "fp16" (CUDA only).
    The threshold comes from `verification.json` beside the checkpoint when it was measured for
    these weights (see voiceprints.calibration), else the documented fallback with `calibration.calibrated`
    False. Recordings longer than `max_chunk_s` are embedded in equal chunks whose unit embeddings
    are averaged by length, which bounds memory and attention cost.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str | None = "cpu", dtype: str | None = "fp32",
                 max_chunk_s: float = 20.0) -> None:
        import torch

        from models import FeatureExtractor, UniSpeechSatForXVector
        from models.loading import resolve_pretrained

        local = resolve_pretrained(model_dir)  # a local folder, or the hub snapshot of owner/name
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype or "fp32")
        if torch_dtype is None:
            raise ValueError(f"dtype must be 'fp32', 'bf16' or 'fp16', got {dtype!r}")
        device = device or "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if torch_dtype is torch.float16 and not str(device).startswith("cuda"):
            raise ValueError("fp16 runs only on a CUDA device; on the CPU use fp32 or bf16")
        self._torch = torch
        self.device = torch.device(device)
        self.model = UniSpeechSatForXVector.from_pretrained(str(local), device=self.device, dtype=torch_dtype)
        self.features = FeatureExtractor.from_pretrained(str(local))
        self.fingerprint = checkpoint_fingerprint(local)
        self.calibration = load_calibration(local, self.fingerprint)
        self.threshold = self.calibration.threshold
        self.description = str(model_dir)
        self.max_chunk_samples = seconds_to_samples(max_chunk_s)
        self.min_samples = seconds_to_samples(0.5)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """(B, xvector_output_dim) float32 embeddings of a (B, N) batch of equal-length clips, in
        one forward pass (no padding, so group-norm front ends see what `embed` would show them)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < self.min_samples:
            raise InvalidAudioError(f"need a (clips, samples) batch of at least {self.min_samples} samples each, "
                                    f"got shape {x.shape}")
        torch = self._torch
        with torch.inference_mode():
            input_values, attention_mask = self.features(list(x), sampling_rate=SAMPLE_RATE)
            input_values = input_values.to(self.device, dtype=next(self.model.parameters()).dtype)
            if attention_mask is not None:
                attention_mask = attention_mask.to(self.device)
            out = self.model(input_values, attention_mask=attention_mask).embeddings
        return out.float().cpu().numpy()

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """(xvector_output_dim,) float32 embedding of 16 kHz mono `samples` (at least 0.5 s)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1 or x.size < self.min_samples:
            raise InvalidAudioError(f"need at least {self.min_samples} mono samples to embed, got shape {x.shape}")
        n_chunks = -(-x.size // self.max_chunk_samples)
        chunks = np.array_split(x, n_chunks)
        torch = self._torch
        with torch.inference_mode():
            vectors, weights = [], []
            for chunk in chunks:  # one at a time: group-norm front ends must not see padding
                input_values, attention_mask = self.features([chunk], sampling_rate=SAMPLE_RATE)
                input_values = input_values.to(self.device, dtype=next(self.model.parameters()).dtype)
                if attention_mask is not None:
                    attention_mask = attention_mask.to(self.device)
                emb = self.model(input_values, attention_mask=attention_mask).embeddings[0]
                vectors.append(emb.float().cpu().numpy().astype(np.float64))
                weights.append(chunk.size)
            if len(vectors) == 1:
                out = vectors[0]
            else:
                out = mean_voiceprint(np.stack(vectors), np.array(weights, dtype=np.float64))
        return out.astype(np.float32)


__all__ = ["XVectorEmbedder", "checkpoint_fingerprint"]
