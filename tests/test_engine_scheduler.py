"""Scheduler tests: same events as the synchronous path, batching, fairness, bounded queues, degrading."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine, EngineConfig
from engine.config import DegradeConfig
from engine.events import CaptionFinal, Stats
from engine.fakes import ScriptedModels, frames_to_audio, script
from engine.scheduler import run_requests

TURNS = [
    [(0, "first stream says hello"), (1, "and goodbye")],
    [(1, "second stream talks about the weather"), (0, "sunny")],
    [(0, "third one is short")],
    [(1, "fourth stream"), (0, "counts one two three four five")],
]
# long enough for several caption windows per stream, so windows of different streams meet in a tick
TURNS = [turns + [(0, "and then some more words to keep it going for a while")] for turns in TURNS]
NO_DEGRADE = EngineConfig(degrade=DegradeConfig(enabled=False))


def _audio(i):
    return frames_to_audio(script(TURNS[i]))


def _sync_events(cfg, audio):
    s = Engine(ScriptedModels(num_speakers=2), cfg).new_stream()
    return [e for e in s.accept(audio) + s.flush() if not isinstance(e, Stats)]


def test_scheduler_gives_each_stream_the_synchronous_events():
    models = ScriptedModels(num_speakers=2)
    sched = Engine(models, NO_DEGRADE).scheduler(max_batch=3)
    streams = [sched.add_stream() for _ in TURNS]
    audios = [_audio(i) for i in range(len(TURNS))]
    got = {s.stream_id: [] for s in streams}
    rng = np.random.default_rng(0)
    pos = [0] * len(streams)
    while any(p < len(a) for p, a in zip(pos, audios)):
        for k, (s, a) in enumerate(zip(streams, audios)):
            n = int(rng.integers(100, 9000))
            if pos[k] < len(a):
                sched.submit(s.stream_id, a[pos[k] : pos[k] + n])
                pos[k] += n
        for sid, ev in sched.tick().items():
            got[sid] += ev
    for sid, ev in sched.run_until_idle().items():
        got[sid] += ev
    for s, a in zip(streams, audios):
        got[s.stream_id] += sched.flush(s.stream_id)
        mine = [e for e in got[s.stream_id] if not isinstance(e, Stats)]
        assert mine == _sync_events(NO_DEGRADE, a)
    batched = [b for b, _, _ in models.calls]
    assert max(batched) > 1  # windows of different streams shared forwards
    assert sched.stats.forwards < sched.stats.windows


def test_only_equal_length_windows_share_a_forward():
    """Each forward gets windows of one head group at that group's own length (no padding up to
    a longer window of another group); flush windows are shorter and run alone."""
    models = ScriptedModels(num_speakers=2)
    engine = Engine(models, NO_DEGRADE)
    sched = engine.scheduler(max_batch=8)
    for i in range(3):
        s = sched.add_stream()
        sched.submit(s.stream_id, _audio(i))
    sched.run_until_idle()
    ticked, models.calls[:] = list(models.calls), []
    for s in list(sched.streams.values()):
        sched.flush(s.stream_id)
    length = {frozenset({"ctc"}): engine.config.ctc.window_samples,
              frozenset({"diar"}): engine.config.diar.window_samples}
    assert length[frozenset({"ctc"})] != length[frozenset({"diar"})]  # two lengths meet in the ticks
    xvec = frozenset({"xvec"})  # the activity tracker's x-vectors are requests too, batched by length
    assert {want for _, _, want in ticked} == set(length) | {xvec}
    for batch, samples, want in ticked:
        if want != xvec:
            assert samples == length[want], (batch, samples, want)
    assert sum(batch for batch, _, _ in ticked) == sched.stats.windows
    assert max(batch for batch, _, want in ticked if want != xvec) > 1
    assert list(sched.stats.batch_sizes) == [batch for batch, _, _ in ticked]
    flushed = [(batch, samples, want) for batch, samples, want in models.calls if want != xvec]
    assert flushed and all(batch == 1 and 0 < samples < length[want] for batch, samples, want in flushed)


def test_fair_round_robin_under_uneven_load():
    sched = Engine(ScriptedModels(num_speakers=2), NO_DEGRADE).scheduler(max_batch=2)
    streams = [sched.add_stream() for _ in range(4)]
    long_audio = frames_to_audio(script(TURNS[3] * 3))
    for s in streams:
        sched.submit(s.stream_id, long_audio)
    served = []
    for _ in range(10):
        before = dict(sched.stats.per_stream_windows)
        sched.tick()
        served.append({sid: sched.stats.per_stream_windows[sid] - before.get(sid, 0) for sid in sched.streams})
    totals = [sum(d[s.stream_id] for d in served) for s in streams]
    assert max(totals) - min(totals) <= 1, totals  # 20 windows over 4 busy streams: 5 each
    for a, b in zip(served, served[1:]):  # with batch 2 of 4 streams, consecutive ticks serve the others
        assert not ({k for k, v in a.items() if v} & {k for k, v in b.items() if v})


def test_bounded_queue_degrades_and_drops_instead_of_lagging():
    cfg = EngineConfig(max_queued_windows=6, degrade=DegradeConfig(level_samples=(16000, 32000, 48000)))
    sched = Engine(ScriptedModels(num_speakers=2), cfg).scheduler(max_batch=1)
    s = sched.add_stream()
    audio = frames_to_audio(script(TURNS[3] * 6))
    for i in range(0, len(audio), 16000):
        sched.submit(s.stream_id, audio[i : i + 16000])
        assert len(s.queue) <= 6
        sched.tick()  # one window per second of audio: compute falls behind
    assert s.level == 3 and s.dropped_samples > 0
    stats = s.stats()
    assert "drop-caption-audio" in stats.degraded and stats.dropped_samples == s.dropped_samples
    events = sched.run_until_idle().get(s.stream_id, []) + sched.flush(s.stream_id)
    assert any(isinstance(e, CaptionFinal) for e in events)  # it keeps captioning what it can


def test_clock_gives_queue_and_compute_telemetry():
    t = [0.0]

    def clock():
        t[0] += 0.01
        return t[0]

    sched = Engine(ScriptedModels(num_speakers=2), EngineConfig(stats_every_windows=1)).scheduler(clock=clock)
    s = sched.add_stream()
    sched.submit(s.stream_id, _audio(0))
    events = sched.run_until_idle()[s.stream_id]
    stats = [e for e in events if isinstance(e, Stats)]
    assert stats and {"algorithmic", "compute", "queueing"} <= set(stats[-1].latency_ms)
    assert sched.stats.compute_ms and sched.stats.queue_ms


def test_level_three_skips_caption_windows_in_the_synchronous_path_too():
    cfg = EngineConfig(degrade=DegradeConfig(level_samples=(16000, 32000, 48000)))
    models = ScriptedModels(num_speakers=2)
    stream = Engine(models, cfg).new_stream()
    audio = frames_to_audio(script(TURNS[3] * 4))
    stream.report_load(backlog_samples=10 * 16000)  # the app says it is 10 s behind
    assert stream.level == 3
    events = stream.accept(audio) + stream.flush()
    ctc_forwards = sum(1 for _, _, want in models.calls if "ctc" in want)
    full = Engine(ScriptedModels(num_speakers=2), cfg).new_stream()
    full.accept(audio)
    assert stream.dropped_samples > 0 and ctc_forwards < full.ctc_windows  # about half the caption compute
    assert any(isinstance(e, CaptionFinal) for e in events)
    assert "drop-caption-audio" in [e for e in events if isinstance(e, Stats)][-1].degraded


def test_stats_stay_bounded(monkeypatch):
    """Timings keep the latest few, per-stream figures go with the stream, and the submit times of
    windows dropped while degrading do not pile up."""
    import engine.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "STATS_KEPT", 5)
    t = [0.0]

    def clock():
        t[0] += 0.01
        return t[0]

    cfg = EngineConfig(max_queued_windows=6, degrade=DegradeConfig(level_samples=(16000, 32000, 48000)))
    sched = Engine(ScriptedModels(num_speakers=2), cfg).scheduler(max_batch=1, clock=clock)
    s = sched.add_stream()
    audio = frames_to_audio(script(TURNS[3] * 6))
    for i in range(0, len(audio), 16000):
        sched.submit(s.stream_id, audio[i : i + 16000])
        sched.tick()  # compute falls behind: windows are dropped
        oldest = s.queue[0].seq if s.queue else s._seq
        assert all(seq >= oldest - 1 for _, seq in sched._submitted_at)  # none older than the queue
    assert s.dropped_samples > 0
    assert sched.stats.ticks > 5 and len(sched.stats.compute_ms) == 5 and len(sched.stats.queue_ms) == 5
    assert sched.stats.per_stream_windows[s.stream_id] > 0
    sched.remove_stream(s.stream_id)
    assert s.stream_id not in sched.stats.per_stream_windows and not sched._submitted_at


def test_a_window_dropped_while_a_delivery_waits_for_an_x_vector_is_dropped_in_order():
    """The activity tracker pauses a window's delivery for an x-vector; results behind it wait.
    A full queue dropping a later caption window meanwhile must commit its frames as silence
    after theirs (committing at once raised 'commit at frame 170, expected frame 130')."""
    cfg = EngineConfig(max_queued_windows=4, degrade=DegradeConfig(enabled=False))
    sched = Engine(ScriptedModels(num_speakers=2), cfg).scheduler(max_batch=1)
    s = sched.add_stream()
    audio = frames_to_audio(script(TURNS[0] * 6))
    dropped_while_paused = 0
    for i in range(0, len(audio), 16000):
        paused, seq, queued = s._work is not None, s.next_seq, len(s.queue)
        sched.submit(s.stream_id, audio[i : i + 16000])
        if paused:
            dropped_while_paused += queued + (s.next_seq - seq) - len(s.queue)
        sched.tick()  # one request per second of audio: the queue overflows
    events = sched.run_until_idle().get(s.stream_id, []) + sched.flush(s.stream_id)
    assert dropped_while_paused > 0 and s.dropped_samples > 0
    assert s.finished and any(isinstance(e, CaptionFinal) for e in events)


@pytest.mark.parametrize("heads, degrade, backlog", [
    ({"ctc"}, DegradeConfig(enabled=False), 0),  # the queue limit drops caption windows
    ({"ctc", "diar", "sv"}, DegradeConfig(level_samples=(16000, 32000, 48000)), 60000),  # level 3 drops
])
def test_a_window_dropped_while_requests_are_out_is_skipped_in_order(heads, degrade, backlog):
    """A driver of its own takes requests, audio overflows the queue before it delivers them, then
    it delivers: the dropped caption window stays in the queue as a skip, committed as silence in
    its turn (committing it at once, ahead of the taken windows, raised 'commit at frame ...')."""
    models = ScriptedModels(heads=frozenset(heads), num_speakers=2)
    engine = Engine(models, EngineConfig(max_queued_windows=3, degrade=degrade))
    s = engine.new_stream()
    audio = frames_to_audio(script(TURNS[3] * 3))
    s.submit(audio[:64000])
    taken = s.take_requests()
    assert len(taken) >= 2 and not s.queue
    s.report_load(backlog_samples=backlog)
    s.submit(audio[64000:160000])  # more windows than the queue holds, while `taken` are out
    assert any(r.want == frozenset({"skip"}) for r in s.queue)
    assert sum(r.computes for r in s.queue) == 3
    results, _ = run_requests(models, taken)
    events = [e for r in taken for e in s.deliver(r, *results[(r.stream_id, r.seq)])]
    events += engine.decode([s]).get(s.stream_id, [])
    s.submit(audio[160000:])
    events += engine.decode([s]).get(s.stream_id, []) + s.flush()
    assert s.finished and s.dropped_samples > 0
    finals = [e for e in events if isinstance(e, CaptionFinal) and e.text.strip()]
    starts = [w.start_frame for c in finals for w in c.words]
    assert starts == sorted(starts) and finals[0].text.startswith("FOURTH STREAM")
