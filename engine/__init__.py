"""The streaming engine: samples in, typed events out; no I/O, threads, clock or asyncio.

`Engine` holds the shared models; `Engine.new_stream()` gives a `Stream` with
`accept(samples) -> list[Event]`, `flush()`, `reset()`, `report_load(...)`. A stream never runs a
model: it turns audio into requests (`submit`, `take_requests`) and results into events
(`deliver`); `Engine.decode(streams)` and `Engine.scheduler()` batch the requests of many
streams. See docs/engine.md.
"""

from engine.config import DegradeConfig, EngineConfig, HeadSchedule, SpeakerConfig
from engine.engine import Engine
from engine.enrolled import EnrolledVoices
from engine.model_side import ModelSide, Vocab, WindowOutputs
from engine.scheduler import Scheduler
from engine.stream import Stream

__all__ = [
    "DegradeConfig",
    "Engine",
    "EngineConfig",
    "EnrolledVoices",
    "HeadSchedule",
    "ModelSide",
    "Scheduler",
    "SpeakerConfig",
    "Stream",
    "Vocab",
    "WindowOutputs",
]
