"""Speaker tracking tests: permutation alignment, aggregation, turns, clustering, enrollment seeding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine import Engine, EngineConfig
from engine.config import SpeakerConfig
from engine.events import CaptionFinal, CaptionRevision, SpeakerMatch, SpeakerTurn, apply_revision
from engine.fakes import ScriptedModels, frames_to_audio, script
from engine.activity_alignment import ActivityAggregator, best_permutation
from engine.speaker_clusters import SpeakerClusters

CONVERSATION = [
    (0, "hello everyone this is alice speaking"),
    (1, "good morning alice this is bob here"),
    (0, "shall we start with the budget"),
    (1, "yes please go ahead"),
    (0, "the budget is fine"),
]


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_best_permutation_recovers_known_permutation(perm):
    rng = np.random.default_rng(0)
    running = (rng.random((60, 3)) > 0.6).astype(float)
    local = np.empty_like(running)
    for slot, channel in enumerate(perm):
        local[:, slot] = running[:, channel]
    local = np.clip(local + 0.1 * rng.standard_normal(local.shape), 0, 1)
    assert best_permutation(local, running, np.ones(60)) == perm


def test_best_permutation_without_overlap_keeps_order():
    local = np.random.default_rng(1).random((10, 2))
    assert best_permutation(local, np.zeros((10, 2)), np.zeros(10)) == (0, 1)


def test_aggregator_aligns_permuted_windows():
    """Two speakers; every window lists them in a random order; channels stay consistent."""
    rng = np.random.default_rng(2)
    truth = np.zeros((400, 2))
    truth[20:150, 0] = 1
    truth[120:260, 1] = 1
    truth[240:380, 0] = 1
    agg = ActivityAggregator(2, capacity_frames=1000)
    settled = []
    for start in range(0, 400 - 100 + 1, 25):
        perm = rng.permutation(2)
        window = truth[start : start + 100][:, perm]
        first, probs, _ = agg.add(start, window * 0.9 + 0.05, settle_to=start + 25)
        settled.append(probs)
    _, rest = agg.settle_all()
    out = np.concatenate(settled + [rest]) > 0.5
    agree = max((out == truth.astype(bool)).mean(), (out[:, ::-1] == truth.astype(bool)).mean())
    assert agree > 0.99


def _apply_revisions(events):
    captions = {}
    for e in events:
        if isinstance(e, CaptionFinal):
            captions[e.caption_id] = e
        elif isinstance(e, CaptionRevision):
            captions[e.caption_id] = apply_revision(captions[e.caption_id], e)
    return [w for cid in sorted(captions) for w in captions[cid].words]


def _truth_speaker_of_words():
    out = []
    for spk, text in CONVERSATION:
        out += [spk] * len(text.split())
    return out


def _run(voiceprints=None, **kw):
    models = ScriptedModels(num_speakers=2, **kw)
    if voiceprints is not None:
        voiceprints = {name: models.speaker_vectors[i] for name, i in voiceprints.items()}
    engine = Engine(models, EngineConfig(), speakers=voiceprints)
    stream = engine.new_stream()
    audio = frames_to_audio(script(CONVERSATION))
    events = []
    for i in range(0, len(audio), 3200):
        events += stream.accept(audio[i : i + 3200])
    return stream, events + stream.flush()


def test_words_get_consistent_speakers_across_windows():
    _, events = _run()
    words = _apply_revisions(events)
    truth = _truth_speaker_of_words()
    assert len(words) == len(truth)
    labels = {0: {w.speaker for w, t in zip(words, truth) if t == 0}, 1: {w.speaker for w, t in zip(words, truth) if t == 1}}
    assert len(labels[0]) == 1 and len(labels[1]) == 1 and labels[0] != labels[1], labels
    assert labels[0] | labels[1] == {"unknown-1", "unknown-2"}
    turns = [e for e in events if isinstance(e, SpeakerTurn)]
    assert [t.speaker for t in turns] == [next(iter(labels[s])) for s, _ in CONVERSATION]


def test_enrolled_voiceprint_names_speaker_others_unknown():
    _, events = _run(voiceprints={"alice": 0})
    words = _apply_revisions(events)
    truth = _truth_speaker_of_words()
    assert {w.speaker for w, t in zip(words, truth) if t == 0} == {"alice"}
    assert {w.speaker for w, t in zip(words, truth) if t == 1} == {"unknown-1"}
    matches = [e for e in events if isinstance(e, SpeakerMatch)]
    alice = [m for m in matches if m.name == "alice"]
    assert alice and all(m.accepted and m.score >= m.threshold for m in alice)
    assert alice[0].candidates[0][0] == "alice"
    # the first alice words are named once her first x-vector exists: before bob ever speaks
    first_named = next(e for e in events if isinstance(e, (CaptionFinal, CaptionRevision)) and e.speaker == "alice")
    first_bob_turn = next(e for e in events if isinstance(e, SpeakerTurn) and e.speaker == "unknown-1")
    assert events.index(first_named) < events.index(first_bob_turn)


def test_rename_unknown_after_enrolling_revises_captions():
    stream, events = _run(voiceprints={"alice": 0})
    assert "unknown-1" in stream.speakers()
    audio = stream.speaker_audio("unknown-1")
    assert len(audio) >= 16000  # enough to enroll from
    revisions = stream.rename_speaker("unknown-1", "bob")
    assert revisions and all(r.speaker in ("bob", "alice") for r in revisions)
    words = _apply_revisions(events + revisions)
    truth = _truth_speaker_of_words()
    assert {w.speaker for w, t in zip(words, truth) if t == 1} == {"bob"}
    with pytest.raises(KeyError, match="nobody"):
        stream.rename_speaker("nobody", "x")


def test_clusters_incremental_seed_and_merge():
    cfg = SpeakerConfig(new_cluster_threshold=0.55, merge_threshold=0.75)
    rng = np.random.default_rng(3)
    a, b, c = (v / np.linalg.norm(v) for v in rng.standard_normal((3, 32)))
    clusters = SpeakerClusters(cfg, enrolled={"carol": c}, enrolled_threshold=0.6)
    noisy = lambda v: v + 0.08 * rng.standard_normal(32)  # noqa: E731
    got = [clusters.assign(noisy(v))[0].label for v in (a, a, b, c, b, a)]
    assert got == ["unknown-1", "unknown-1", "unknown-2", "carol", "unknown-2", "unknown-1"]
    # a second unknown cluster that drifts onto the first is merged into the older label
    orth = b - (b @ a) * a
    orth /= np.linalg.norm(orth)
    fresh = SpeakerClusters(cfg)
    assert fresh.assign(a)[0].label == "unknown-1"
    assert fresh.assign(0.5 * a + 0.866 * orth)[0].label == "unknown-2"  # cosine 0.5: a new person
    merged = {}
    for _ in range(20):
        merged.update(fresh.assign(0.8 * a + 0.6 * orth)[2])
    assert merged == {"unknown-2": "unknown-1"}
    assert [k.label for k in fresh.clusters] == ["unknown-1"]
    with pytest.raises(ValueError, match="zero"):
        clusters.assign(np.zeros(32))


def test_speaker_config_validation():
    with pytest.raises(ValueError, match="offset"):
        SpeakerConfig(onset=0.3, offset=0.5)
    with pytest.raises(ValueError, match="embed_growth"):
        SpeakerConfig(embed_growth=1.0)
    with pytest.raises(ValueError, match="merge_threshold"):
        SpeakerConfig(merge_threshold=1.5)


def test_cluster_thresholds_default_to_the_calibrated_one():
    clusters = SpeakerClusters(SpeakerConfig(), enrolled_threshold=0.8)
    assert clusters.new_threshold == 0.8 and abs(clusters.merge_threshold - 0.85) < 1e-9


class SpeakerBlindActivity(ScriptedModels):
    """A diarization head that puts every voice on channel 0 (one channel, no pause between voices)."""

    def _activity(self, speakers, seed):
        probs = np.full((len(speakers), self.num_speakers), 0.03, dtype=np.float32)
        probs[speakers != 0, 0] = 0.97
        return probs


@pytest.mark.parametrize("change_threshold", [-1.0, 0.5])
def test_a_voice_change_inside_one_channel_splits_the_run(change_threshold):
    words = " ".join(["alpha bravo charlie delta echo foxtrot"] * 3)  # ~8 s per voice
    frames = script([(0, words), (1, words)], gap_frames=0)
    change_frame = next(i for i, f in enumerate(frames) if f.speakers == 2)
    cfg = EngineConfig(speakers=SpeakerConfig(new_cluster_threshold=0.6, change_threshold=change_threshold))
    stream = Engine(SpeakerBlindActivity(num_speakers=2, noise=0.05), cfg).new_stream()
    turns = [e for e in stream.accept(frames_to_audio(frames)) + stream.flush() if isinstance(e, SpeakerTurn)]
    if change_threshold < 0:  # off: one run, one label for both voices
        assert len(turns) == 1
        return
    assert len(turns) == 2 and turns[0].speaker != turns[1].speaker
    assert turns[0].end_frame == turns[1].start_frame  # the channel stayed on
    # split where the 1 s of speech that first sounded different began: within 1 s of the change
    assert abs(turns[1].start_frame - change_frame) <= 50
