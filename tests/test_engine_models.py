"""The real model adapter on tiny random checkpoints: parity, shared-encoder detection, streaming."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from engine import Engine, EngineConfig
from engine.events import CaptionFinal, SpeakerActivity, Stats
from engine.torch_models import TorchModels, pick_device
from tests.tiny_checkpoints import write_own_tiny_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ctc = write_own_tiny_checkpoint(root / "ctc", "ctc", 1)
    frame = write_own_tiny_checkpoint(root / "frame", "frame", 2)
    xvec = write_own_tiny_checkpoint(root / "xvector", "xvector", 3)
    # a frame head on exactly the CTC encoder, with the CTC preprocessing: must share the pass
    from models import UniSpeechSatForAudioFrameClassification, UniSpeechSatForCTC

    base = UniSpeechSatForCTC.from_pretrained(str(ctc))
    m = UniSpeechSatForAudioFrameClassification.from_pretrained(str(frame))
    m.unispeech_sat.load_state_dict(base.unispeech_sat.state_dict())
    shared = m.save_pretrained(root / "frame_shared")
    shutil.copy(ctc / "preprocessor_config.json", shared / "preprocessor_config.json")
    # same weights, other preprocessing: must not share
    other = m.save_pretrained(root / "frame_other_pre")
    shutil.copy(frame / "preprocessor_config.json", other / "preprocessor_config.json")
    return {"ctc": ctc, "frame": frame, "xvector": xvec, "shared": shared, "other": other}


def _audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def test_run_windows_matches_the_heads(ckpts):
    from models import FeatureExtractor, UniSpeechSatForAudioFrameClassification, UniSpeechSatForCTC

    tm = TorchModels.load(asr=ckpts["ctc"], diar=ckpts["frame"], device="cpu")
    assert not tm.shared and len(tm.groups) == 2 and tm.num_speakers == 2
    assert tm.vocab.tokens[tm.vocab.blank_id] == "<pad>" and tm.vocab.tokens[tm.vocab.delimiter_id] == "|"
    batch = np.stack([_audio(1.0, 1), _audio(1.0, 2)])
    out = tm.run_windows(batch, frozenset({"ctc", "diar"}))
    assert out.ctc_log_probs.shape == (2, 49, 32) and out.activity_probs.shape == (2, 49, 2)
    ctc = UniSpeechSatForCTC.from_pretrained(str(ckpts["ctc"]))
    fe = FeatureExtractor.from_pretrained(str(ckpts["ctc"]))
    values, _ = fe([batch[1]])
    with torch.inference_mode():
        ref = torch.log_softmax(ctc(values).logits, -1).numpy()
    np.testing.assert_allclose(out.ctc_log_probs[1], ref[0], atol=1e-5)
    frame = UniSpeechSatForAudioFrameClassification.from_pretrained(str(ckpts["frame"]))
    fe2 = FeatureExtractor.from_pretrained(str(ckpts["frame"]))
    values, mask = fe2([batch[0]])
    assert mask is not None  # the diarization checkpoint asks for an attention mask
    with torch.inference_mode():
        ref = torch.sigmoid(frame(values, mask).logits).numpy()
    np.testing.assert_allclose(out.activity_probs[0], ref[0], atol=1e-5)
    only = tm.run_windows(batch[:1], frozenset({"diar"}))
    assert only.ctc_log_probs is None
    with pytest.raises(ValueError, match="float32"):
        tm.run_windows(batch.astype(np.float64), frozenset({"ctc"}))


def test_identical_encoders_share_one_pass(ckpts):
    sep = TorchModels.load(asr=ckpts["ctc"], diar=ckpts["shared"], device="cpu")
    assert sep.shared and len(sep.groups) == 1
    calls = []
    sep.groups[0].backbone.register_forward_hook(lambda *a: calls.append(1))
    batch = _audio(1.5)[None]
    out = sep.run_windows(batch, frozenset({"ctc", "diar"}))
    assert len(calls) == 1
    alone = TorchModels.load(diar=ckpts["shared"], device="cpu").run_windows(batch, frozenset({"diar"}))
    np.testing.assert_allclose(out.activity_probs, alone.activity_probs, atol=1e-5)
    # the same weights with other preprocessing (normalise, mask) are not the same encoder
    assert not TorchModels.load(asr=ckpts["ctc"], diar=ckpts["other"], device="cpu").shared


def test_engine_streams_real_models_chunking_invariant(ckpts):
    engine = Engine.from_checkpoints(asr=str(ckpts["ctc"]), diar=str(ckpts["frame"]), sv=str(ckpts["xvector"]),
                                     device="auto", dtype="fp32", config=EngineConfig())
    assert engine.models.device == pick_device("auto")
    assert engine.embedder is not None and engine.embedder.fingerprint.startswith("sha256:")
    audio = _audio(7.3, 5)
    runs = []
    for block in (1600, 16000):
        s = engine.new_stream()
        ev = []
        for i in range(0, len(audio), block):
            ev += s.accept(audio[i : i + block])
        ev += s.flush()
        runs.append([e for e in ev if not isinstance(e, Stats)])
    assert runs[0] == runs[1]
    assert any(isinstance(e, SpeakerActivity) for e in runs[0])
    # random weights give some characters; every committed frame decodes somewhere
    assert all(isinstance(e.text, str) for e in runs[0] if isinstance(e, CaptionFinal))


def test_bf16_and_bad_arguments(ckpts):
    tm = TorchModels.load(asr=ckpts["ctc"], device="cpu", dtype="bf16")
    out = tm.run_windows(_audio(1.0)[None], frozenset({"ctc"}))
    assert out.ctc_log_probs.dtype == np.float32 and np.isfinite(out.ctc_log_probs).all()
    with pytest.raises(ValueError, match="dtype"):
        TorchModels.load(asr=ckpts["ctc"], dtype="fp8")
    with pytest.raises(ValueError, match="fp16 runs only on a CUDA device"):
        TorchModels.load(asr=ckpts["ctc"], device="cpu", dtype="fp16")
    with pytest.raises(ValueError, match="at least one"):
        TorchModels.load()
    with pytest.raises(ValueError, match="not loaded"):
        tm.run_windows(_audio(1.0)[None], frozenset({"diar"}))


def test_scheduler_batches_real_windows_like_single_streams(ckpts):
    engine = Engine.from_checkpoints(asr=str(ckpts["ctc"]), diar=str(ckpts["frame"]), device="cpu")
    audios = [_audio(4.1, 10 + i) for i in range(3)]
    sched = engine.scheduler(max_batch=8)
    streams = [sched.add_stream() for _ in audios]
    for s, a in zip(streams, audios):
        sched.submit(s.stream_id, a)
    got = sched.run_until_idle()
    assert sched.stats.forwards < sched.stats.windows  # windows of the three streams shared forwards
    for s, a in zip(streams, audios):
        batched = got.get(s.stream_id, []) + sched.flush(s.stream_id)
        alone = engine.new_stream()
        single = alone.accept(a) + alone.flush()

        def finals(ev):
            return [(e.text, e.start_frame, e.end_frame) for e in ev if isinstance(e, CaptionFinal)]

        assert finals(batched) == finals(single)
