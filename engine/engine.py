"""The `Engine`: shared, stateless models plus configuration; it makes streams and runs their requests.

    engine = Engine.from_checkpoints(asr="models/embedded/ctc", diar="models/embedded/sd",
                                     sv="models/embedded/sv", device="auto", dtype="fp32")
    stream = engine.new_stream()
    events = stream.accept(samples)   # float32 mono 16 kHz, any block size
    events += stream.flush()
    # many streams: submit to each, then one batched decode over all of them
    for s, block in zip(streams, blocks): s.submit(block)
    events_by_stream = engine.decode(streams)

Voiceprints are plain values: pass `speakers=` an `engine.enrolled.EnrolledVoices` ({name: vector},
threshold, model fingerprint; `voiceprints.VoiceprintService.enrolled()` makes one from the store)
or a {name: vector} dict, or assign `engine.speakers` later; they seed every new stream. The
engine never reads the speaker store.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from engine.config import EngineConfig
from engine.events import Event
from engine.enrolled import EnrolledVoices
from engine.model_side import ModelSide
from engine.scheduler import Scheduler
from engine.stream import Stream


def _enrolled(speakers: Any) -> EnrolledVoices | dict[str, np.ndarray] | None:
    """`speakers` checked: EnrolledVoices, a {name: vector} dict (as float32 vectors), or None."""
    if speakers is None or isinstance(speakers, EnrolledVoices):
        return speakers
    if isinstance(speakers, dict):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in speakers.items()}
    raise TypeError(f"speakers must be engine.enrolled.EnrolledVoices (VoiceprintService.enrolled() gives one) "
                    f"or a {{name: vector}} dict, got {type(speakers).__name__}")


def _lm_factory(lm: Any, models: ModelSide, config: EngineConfig) -> Callable[[], Any] | None:
    """Per-stream LM re-decoders over one shared beam decoder (an ARPA path builds one)."""
    if lm is None:
        return None
    from engine.lm_redecode import LMRedecoder, RedecodeConfig

    if models.vocab is None:
        raise ValueError("a language model needs the CTC head (asr=)")
    if isinstance(lm, (str, bytes)) or hasattr(lm, "__fspath__"):
        from models.lm import CTCBeamDecoder

        v = models.vocab
        delimiter = v.tokens[v.delimiter_id] if v.delimiter_id is not None else "|"
        lm = CTCBeamDecoder(list(v.tokens), v.blank_id, delimiter, lm=lm, beam_width=config.lm_beam_width,
                             log_add=config.lm_log_add)
    if not hasattr(lm, "decode"):
        raise TypeError(f"lm must be an ARPA path or a beam decoder with decode(), got {type(lm).__name__}")
    cfg = RedecodeConfig(max_lookback_frames=config.lm_lookback_frames)
    vocab_size = len(models.vocab.tokens)
    return lambda: LMRedecoder(lm, cfg, vocab_size=vocab_size)


def _with_measured_clustering(config: EngineConfig, models: Any) -> EngineConfig:
    """Use the x-vector model's measured clustering and speaker-change thresholds (its
    verification.json) where the configuration leaves them unset."""
    sc = config.speakers
    cluster = getattr(models, "sv_cluster_threshold", None)
    change = getattr(models, "sv_change_threshold", None)
    changes: dict[str, float] = {}
    if cluster is not None and sc.new_cluster_threshold is None:
        changes["new_cluster_threshold"] = cluster
        if sc.merge_threshold is None:
            changes["merge_threshold"] = min(1.0, cluster + 0.05)
    if change is not None and sc.change_threshold is None:
        changes["change_threshold"] = change
    if not changes:
        return config
    return dataclasses.replace(config, speakers=dataclasses.replace(sc, **changes))


class Engine:
    """Holds the shared `ModelSide`, the configuration and the enrolled voiceprints."""

    def __init__(self, models: ModelSide, config: EngineConfig | None = None, speakers: Any = None,
                 lm: Any = None, voiceprint_threshold: float | None = None) -> None:
        if not isinstance(models, ModelSide):
            raise TypeError(f"models must implement engine.model_side.ModelSide, got {type(models).__name__}")
        self.models = models
        self.config = _with_measured_clustering(config or EngineConfig(), models)
        self._speakers: EnrolledVoices | dict[str, np.ndarray] | None = None
        self.speakers = speakers
        self.lm_factory = _lm_factory(lm, models, self.config)
        self._voiceprint_threshold = voiceprint_threshold
        self._next_id = 1

    @classmethod
    def from_checkpoints(cls, asr: str | None = None, diar: str | None = None, sv: str | None = None,
                         device: str = "auto", dtype: str = "fp32", config: EngineConfig | None = None,
                         speakers: Any = None, lm: Any = None, vad: str = "silero") -> "Engine":
        """Load each head from its Hugging Face–format folder; heads with identical encoders share one pass.

        `lm`: an optional language-model decoder for engine/lm_redecode.py (see docs/engine.md).
        `vad`: the speech detector, "silero" (default), "energy" or "off" (engine/speech_model.py).
        """
        from engine.torch_models import TorchModels

        models = TorchModels.load(asr=asr, diar=diar, sv=sv, device=device, dtype=dtype, vad=vad)
        return cls(models, config, speakers, lm=lm, voiceprint_threshold=models.sv_threshold)

    @property
    def speakers(self) -> EnrolledVoices | dict[str, np.ndarray] | None:
        """The enrolled voices new streams are seeded with (see the module docstring)."""
        return self._speakers

    @speakers.setter
    def speakers(self, speakers: EnrolledVoices | dict[str, np.ndarray] | None) -> None:
        voices = _enrolled(speakers)
        model = getattr(self.models, "fingerprint", "")
        if isinstance(voices, EnrolledVoices) and voices.vectors and voices.fingerprint and model \
                and voices.fingerprint != model:
            raise ValueError(f"the enrolled voiceprints were made with model {voices.fingerprint}, but the engine's "
                             f"x-vector model is {model}: embeddings of different checkpoints do not compare")
        self._speakers = voices

    @property
    def embedder(self) -> Any:
        """The x-vector embedder (`embed(samples)`, `fingerprint`, `threshold`) for voiceprints."""
        return getattr(self.models, "embedder", None)

    def new_stream(self) -> Stream:
        """A fresh stream seeded with the current voiceprints."""
        voices = self._speakers
        if isinstance(voices, EnrolledVoices):
            prints, threshold = dict(voices.vectors), voices.threshold
        else:
            prints, threshold = dict(voices or {}), self._voiceprint_threshold
        stream = Stream(
            self.models, self.config, stream_id=self._next_id, voiceprints=prints,
            voiceprint_threshold=threshold if threshold is not None else 0.5,
            lm=self.lm_factory() if self.lm_factory is not None else None, decode=self.decode,
        )
        self._next_id += 1
        return stream

    def decode(self, streams: Sequence[Stream]) -> dict[int, list[Event]]:
        """Run every pending request of `streams` (windows and x-vectors), batched across them,
        until none waits; returns each stream's new events. The streams' own state is all there is."""
        return Scheduler(self.models, self.config.max_batch, streams=streams).run_until_idle()

    def scheduler(self, max_batch: int | None = None, clock: Callable[[], float] | None = None) -> Scheduler:
        """A long-lived scheduler that makes streams and batches their requests round by round."""
        return Scheduler(self.models, max_batch or self.config.max_batch, clock=clock, new_stream=self.new_stream)
