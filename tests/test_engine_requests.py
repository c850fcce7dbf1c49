"""The stream's request API: a stream never calls a model; the model side batches every request.

A `Stream` built over a model description that refuses to run gives, when another object runs its
requests, exactly the events of `Engine.new_stream().accept`; x-vectors (span tracking and the
activity tracker's run embeddings) are requests batched across streams like windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine, EngineConfig, Stream
from engine.config import DegradeConfig
from engine.events import SpeakerMatch, Stats
from engine.fakes import ScriptedModels, frames_to_audio, script
from engine.scheduler import run_requests

CONFIG = EngineConfig(degrade=DegradeConfig(enabled=False))
TALK = [(0, "first speaker says hello to everyone here"), (1, "and the second one answers back"),
        (0, "then the first again for a while")]


class DescriptionOnly:
    """A ModelSide's description (heads, vocabulary, speakers) whose compute raises."""

    def __init__(self, models: ScriptedModels) -> None:
        self.heads, self.shared, self.vocab = models.heads, models.shared, models.vocab
        self.num_speakers, self.fingerprint = models.num_speakers, models.fingerprint

    def run_windows(self, batch: np.ndarray, want: frozenset[str]):
        raise AssertionError("a stream ran a model")

    def embed(self, samples: np.ndarray) -> np.ndarray:
        raise AssertionError("a stream ran a model")


@pytest.mark.parametrize("heads", [frozenset({"ctc", "diar", "sv"}), frozenset({"ctc", "diar", "sv", "vad"})],
                         ids=["activity-tracker", "span-tracker"])
def test_stream_never_calls_a_model(heads):
    models = ScriptedModels(heads=heads, num_speakers=2, shared=True)
    audio = frames_to_audio(script(TALK))
    reference = Engine(models, CONFIG).new_stream()
    expected = reference.accept(audio) + reference.flush()
    stream = Stream(DescriptionOnly(models), Engine(models, CONFIG).config, stream_id=1)
    got, kinds = [], set()

    def run_all() -> None:  # the model side's part, done here by hand
        while reqs := stream.take_requests():
            results, _ = run_requests(models, reqs)
            for r in reqs:
                kinds.add(r.want)
                got.extend(stream.deliver(r, *results[(r.stream_id, r.seq)]))

    for i in range(0, len(audio), 1600):  # 100 ms blocks, each run before the next (as accept does)
        stream.submit(audio[i : i + 1600])
        run_all()
    got += stream.finish_input()
    run_all()
    assert stream.finished
    assert frozenset({"xvec"}) in kinds  # x-vectors came as requests
    assert [e for e in got if not isinstance(e, Stats)] == [e for e in expected if not isinstance(e, Stats)]
    assert any(isinstance(e, SpeakerMatch) for e in got)


def test_engine_decode_batches_x_vectors_across_streams():
    models = ScriptedModels(num_speakers=2)  # no speech detector: the activity tracker embeds runs
    engine = Engine(models, CONFIG)
    audio = frames_to_audio(script(TALK))
    streams = [engine.new_stream() for _ in range(2)]
    for s in streams:
        s.submit(audio)
    models.calls.clear()
    events = engine.decode(streams)
    xvec = [batch for batch, _, want in models.calls if want == frozenset({"xvec"})]
    assert xvec and max(xvec) == 2  # the same run of both streams: one forward
    assert max(batch for batch, _, want in models.calls if want != frozenset({"xvec"})) > 1
    assert events[streams[0].stream_id] == events[streams[1].stream_id]


def test_a_stream_without_a_decoder_says_how_to_run_it():
    models = ScriptedModels(num_speakers=2)
    stream = Stream(models, CONFIG, stream_id=3)
    with pytest.raises(RuntimeError, match="Engine.new_stream"):
        stream.accept(np.zeros(16000, dtype=np.float32))
