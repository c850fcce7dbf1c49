"""XVectorEmbedder on tiny random checkpoints: fingerprints, verification.json, embedding, calibration CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from engine.calibration import FALLBACK_THRESHOLD  # noqa: E402
from engine.timebase import SAMPLE_RATE  # noqa: E402
from voiceprints.calibrate import main as calibration_main  # noqa: E402
from voiceprints.service import VoiceprintService  # noqa: E402
from voiceprints.store import SpeakerStore  # noqa: E402
from voiceprints.xvector import XVectorEmbedder, checkpoint_fingerprint  # noqa: E402
from tests.test_voiceprints import speaker_audio  # noqa: E402
from tests.tiny_checkpoints import tiny_config_dict, write_preprocessor  # noqa: E402


@pytest.fixture(autouse=True)
def energy_detector(monkeypatch):
    """The audio here is synthetic tones, which Silero rightly calls no speech: these tests are
    about the x-vector checkpoint, so the energy detector stands in as the default."""
    import engine.speech_model
    from engine.speech_detect import EnergySpeechDetector

    monkeypatch.setattr(engine.speech_model, "_default", EnergySpeechDetector())

REPO = Path(__file__).resolve().parents[1]


def write_tiny_xvector(directory: Path, seed: int = 0) -> Path:
    """A tiny random x-vector checkpoint saved by models/ (no transformers import needed)."""
    from models import UniSpeechSatConfig, UniSpeechSatForXVector

    torch.manual_seed(seed)
    model = UniSpeechSatForXVector(UniSpeechSatConfig.from_dict(tiny_config_dict(head="xvector")))
    model.save_pretrained(directory)
    write_preprocessor(directory, do_normalize=False, return_attention_mask=True)
    return directory


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run ~50x faster on one thread when the 2 shared cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_sv(tmp_path_factory) -> Path:
    return write_tiny_xvector(tmp_path_factory.mktemp("sv"))


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_fingerprint_follows_weights_and_preprocessing_not_bookkeeping(tiny_sv, tmp_path):
    fp = checkpoint_fingerprint(tiny_sv)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 16
    # bookkeeping keys in config.json do not count
    renamed = copy_ckpt(tiny_sv, tmp_path / "renamed")
    cfg = json.loads((renamed / "config.json").read_text())
    cfg["_name_or_path"] = "somewhere/else"
    (renamed / "config.json").write_text(json.dumps(cfg))
    assert checkpoint_fingerprint(renamed) == fp
    # the same weights saved again (tensor order may differ) keep the fingerprint
    from models import UniSpeechSatForXVector

    resaved = UniSpeechSatForXVector.from_pretrained(tiny_sv).save_pretrained(tmp_path / "resaved")
    shutil.copy(tiny_sv / "preprocessor_config.json", resaved)
    assert checkpoint_fingerprint(resaved) == fp
    # other weights, or other input normalisation, give another embedding space
    assert checkpoint_fingerprint(write_tiny_xvector(tmp_path / "seed1", seed=1)) != fp
    normalised = copy_ckpt(tiny_sv, tmp_path / "normalised")
    pre = json.loads((normalised / "preprocessor_config.json").read_text())
    pre["do_normalize"] = True
    (normalised / "preprocessor_config.json").write_text(json.dumps(pre))
    assert checkpoint_fingerprint(normalised) != fp


def test_fingerprint_refuses_folders_without_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        checkpoint_fingerprint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no model.safetensors"):
        checkpoint_fingerprint(tmp_path)


def test_embedder_embeds_and_reports_an_uncalibrated_fallback(tiny_sv):
    emb = XVectorEmbedder(tiny_sv)
    assert emb.fingerprint == checkpoint_fingerprint(tiny_sv)
    assert emb.threshold == FALLBACK_THRESHOLD and not emb.calibration.calibrated
    x = speaker_audio(1, 2.0)
    v = emb.embed(x)
    assert v.shape == (16,) and v.dtype == np.float32 and np.all(np.isfinite(v))
    np.testing.assert_array_equal(v, emb.embed(x))  # deterministic
    # the same as the model run directly on the whole input
    from models import FeatureExtractor, UniSpeechSatForXVector

    model, fe = UniSpeechSatForXVector.from_pretrained(tiny_sv), FeatureExtractor.from_pretrained(tiny_sv)
    values, mask = fe([x], sampling_rate=SAMPLE_RATE)
    with torch.inference_mode():
        direct = model(values, attention_mask=mask).embeddings[0].numpy()
    np.testing.assert_allclose(v, direct, rtol=1e-5, atol=1e-6)
    # long input is embedded in chunks whose unit vectors are averaged
    emb.max_chunk_samples = SAMPLE_RATE
    chunked = emb.embed(x)
    halves = [emb.embed(x[:SAMPLE_RATE]), emb.embed(x[SAMPLE_RATE:])]
    mean = sum(h / np.linalg.norm(h) for h in halves)
    np.testing.assert_allclose(chunked, mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(ValueError, match="at least 8000"):
        emb.embed(x[:4000])


def test_service_over_a_tiny_checkpoint(tiny_sv, tmp_path):
    with SpeakerStore(tmp_path / "s.db") as store:
        service = VoiceprintService(XVectorEmbedder(tiny_sv), store)
        result = service.enroll("Alice", [speaker_audio(1, 4.0, seed=1), speaker_audio(1, 4.0, seed=2)])
        assert result.total_recordings == 2 and result.checks[0].score is not None
        v = service.verify("Alice", speaker_audio(1, 2.0, seed=3))
        assert -1.0 <= v.score <= 1.0 and v.threshold == FALLBACK_THRESHOLD and not v.calibrated
        assert store.models() == {service.fingerprint: str(tiny_sv)}


def test_calibration_cli_writes_a_verification_json_the_embedder_loads(tiny_sv, tmp_path, capsys):
    ckpt = copy_ckpt(tiny_sv, tmp_path / "sv")
    trials = tmp_path / "trials"
    trials.mkdir()
    for k in (1, 2):
        for c in range(3):
            sf.write(trials / f"spk{k}__{c}.wav", speaker_audio(k, 3.0, seed=c), SAMPLE_RATE)
    assert calibration_main(["--sv-model", str(ckpt), "--trials", str(trials), "--far", "0.1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((ckpt / "verification.json").read_text())
    assert summary["threshold"] == written["threshold"] == written["eer_threshold"]
    assert written["fingerprint"] == checkpoint_fingerprint(ckpt)
    assert written["n_target"] == 2 * 1 and written["n_impostor"] == 2 * 1 * 1  # 2 clips enroll, 1 tests
    assert written["far_thresholds"][0]["far"] == 0.1
    emb = XVectorEmbedder(ckpt)
    assert emb.calibration.calibrated and emb.threshold == written["threshold"]
    # errors are one line on stderr and a non-zero exit
    assert calibration_main(["--sv-model", str(ckpt), "--trials", str(tmp_path / "nope")]) == 2
    assert "no trials at" in capsys.readouterr().err


@pytest.mark.slow  # a timing check: kept out of the default run on shared, busy cores
def test_verify_path_cost_without_torch_model_work_is_small(tiny_sv):
    """Importing the service and opening a store takes well under a second (torch excluded)."""
    code = ("import time; t = time.perf_counter(); import voiceprints.service, voiceprints.store; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1.5
    t = time.perf_counter()
    XVectorEmbedder(tiny_sv)
    assert time.perf_counter() - t < 2.0


def test_bf16_embeddings_stay_in_the_same_space(tiny_sv):
    x = speaker_audio(2, 2.0)
    fp32, bf16 = XVectorEmbedder(tiny_sv), XVectorEmbedder(tiny_sv, dtype="bf16")
    assert bf16.fingerprint == fp32.fingerprint  # same checkpoint, same voiceprints
    a, b = fp32.embed(x), bf16.embed(x)
    assert b.dtype == np.float32
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99
    with pytest.raises(ValueError, match="dtype must be"):
        XVectorEmbedder(tiny_sv, dtype="fp8")
    with pytest.raises(ValueError, match="fp16 runs only on a CUDA device"):
        XVectorEmbedder(tiny_sv, dtype="fp16")  # device cpu
    defaults = XVectorEmbedder(tiny_sv, device=None, dtype=None)  # what a CLI passes when not told
    assert defaults.device.type == "cpu"
    np.testing.assert_array_equal(defaults.embed(x), a)
