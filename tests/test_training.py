"""Training package: corpus reproducibility and disjointness, exact labels/RTTM, losses, scorers,
and a few-step smoke run of the recipe with export to Hugging Face folders (CI never trains)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None or shutil.which("sox") is None
    or not Path("/usr/share/games/fortunes").is_dir() or not Path("/usr/share/dict/american-english").is_file(),
    reason="needs espeak-ng, flite, sox, fortunes and wamerican (installed by .ci/setup)",
)

from training.corpus import Corpus, CorpusSpec, build, corpus_fingerprint  # noqa: E402
from training.mixing import (  # noqa: E402
    FRAME_HOP_SAMPLES, Segment, build_conversation, frame_count, frame_labels, read_rttm, rttm_lines,
)
from training.scoring import (  # noqa: E402
    char_error_rate, diarization_error, equal_error_rate, oracle_named, word_error_rate)
from training.text import EVERYDAY_SENTENCES, normalize_transcript  # noqa: E402


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "c"
    build(root, dataclasses.replace(CorpusSpec.tiny(seed=11), workers=2), progress=False)
    return root


def test_corpus_is_reproducible_from_seed_whatever_the_worker_count(tiny_corpus, tmp_path):
    again = tmp_path / "again"
    build(again, dataclasses.replace(CorpusSpec.tiny(seed=11), workers=1), progress=False)
    assert corpus_fingerprint(again) == corpus_fingerprint(tiny_corpus)
    from training.corpus import plan_jobs, split_sentences
    from training.text import dictionary_words, fortune_sentences

    sentences, words = fortune_sentences(), dictionary_words()
    plans = [plan_jobs(spec, split_sentences(sentences, spec), words)
             for spec in (CorpusSpec.tiny(seed=11), CorpusSpec.tiny(seed=12))]
    assert [(j.speaker, j.text) for j in plans[0]] != [(j.speaker, j.text) for j in plans[1]]


def test_splits_share_neither_speakers_nor_sentences(tiny_corpus):
    corpus = Corpus(tiny_corpus)
    speakers = {s: set(corpus.speakers(s)) for s in ("train", "val", "test")}
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    texts = {s: {r["text"] for r in corpus.rows[s]} for s in ("train", "val", "test")}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"] and not texts["val"] & texts["test"]
    lm_text = set((tiny_corpus / "lm_text.txt").read_text().splitlines())
    assert not lm_text & (texts["test"] | texts["val"])
    everyday = {normalize_transcript(s) for s in EVERYDAY_SENTENCES}
    assert not everyday & (lm_text | texts["train"])


def test_utterances_are_on_the_10ms_grid_and_transcripts_in_the_alphabet(tiny_corpus):
    corpus = Corpus(tiny_corpus)
    for split in ("train", "val", "test"):
        for i, row in enumerate(corpus.rows[split]):
            assert row["length"] % 160 == 0 and row["length"] > 0
            assert set(row["text"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
            assert np.abs(corpus.audio(split, i)).max() > 0.1


def test_frame_labels_follow_the_frame_centre_rule():
    segs = [Segment("a", 0, 16000), Segment("b", 12000, 20000), Segment("a", 24160, 30000)]
    n = frame_count(32000)
    assert n == 99
    labels = frame_labels(segs, ["a", "b"], n)
    for t in range(n):
        centre = t * FRAME_HOP_SAMPLES + 200
        for k, name in enumerate(["a", "b"]):
            expected = any(s.speaker == name and s.start <= centre < s.end for s in segs)
            assert labels[t, k] == float(expected)
    assert labels[:, 0].sum() > 0 and (labels.sum(1) == 2).any()  # overlap is labelled


def test_conversation_rttm_matches_the_mixture_exactly(tiny_corpus):
    for rttm in sorted((tiny_corpus / "conversations").glob("*.rttm")):
        data = json.loads(rttm.with_suffix(".json").read_text())
        ref = [Segment(s["speaker"], s["start_sample"], s["end_sample"]) for s in data["segments"]]
        parsed = read_rttm(rttm.read_text())[rttm.stem]
        assert sorted(parsed, key=lambda s: (s.start, s.speaker)) == sorted(ref, key=lambda s: (s.start, s.speaker))
    rng = np.random.default_rng(3)
    pools = {name: [(np.full(4800 + 1600 * k, 0.1 * (j + 1), np.float32), f"{name}{k}") for k in range(4)]
             for j, name in enumerate(["x", "y", "z"])}
    mix = build_conversation(rng, pools, 48000, overlap_prob=0.5)
    rebuilt = np.zeros_like(mix.audio)
    for s in mix.segments:
        rebuilt[s.start:s.end] += 1
    assert np.array_equal(rebuilt > 0, np.abs(mix.audio) > 0)
    for a in mix.segments:  # a speaker never overlaps itself
        for b in mix.segments:
            if a is not b and a.speaker == b.speaker:
                assert a.end <= b.start or b.end <= a.start
    assert rttm_lines("f", mix.segments)[0].startswith("SPEAKER f 1 ")


def test_pit_bce_is_invariant_to_speaker_order():
    from training.batches import pit_bce

    torch.manual_seed(0)
    logits = torch.randn(2, 50, 3)
    labels = (torch.rand(2, 50, 3) > 0.5).float()
    base = pit_bce(logits, labels)
    assert torch.allclose(base, pit_bce(logits, labels[:, :, [2, 0, 1]]))
    assert pit_bce(labels * 20 - 10, labels[:, :, [1, 2, 0]]) < 1e-3  # right up to a permutation


def test_scorers():
    assert char_error_rate(["ABC"], ["ABC"]) == 0 and char_error_rate(["ABCD"], ["ABD"]) == 0.25
    assert word_error_rate(["A B C D"], ["A X C"]) == 0.5
    ref = [Segment("a", 0, 160000), Segment("b", 160000, 320000)]
    assert diarization_error(ref, [Segment("q", 0, 160000), Segment("r", 160000, 320000)]).der == 0.0
    miss = diarization_error(ref, [Segment("q", 0, 160000)])
    assert miss.der == pytest.approx(miss.miss_s / miss.scored_s) and 0.45 < miss.der < 0.55
    confused = diarization_error(ref, [Segment("q", 0, 320000)])
    assert confused.confusion_s > 9 and confused.miss_s == 0 and confused.false_alarm_s == 0
    # boundary errors inside the 0.25 s collar are not scored
    assert diarization_error(ref, [Segment("q", 0, 162000), Segment("r", 162000, 320000)]).der == 0.0
    # naming every turn right leaves only the segmentation error
    named = oracle_named(ref, [Segment("q", 0, 100000), Segment("q", 100000, 320000), Segment("z", 400000, 410000)])
    assert [s.speaker for s in named] == ["a", "b", "z"]
    assert diarization_error(ref, named).confusion_s < confused.confusion_s
    assert equal_error_rate([0.9, 0.8], [0.1, 0.2])[0] == 0.0
    assert equal_error_rate([0.1, 0.2], [0.9, 0.8])[0] == 1.0


def test_smoke_training_resume_and_export(tiny_corpus, tmp_path):
    from training.export import export, load_checkpoint
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    cfg = dataclasses.replace(TrainConfig.smoke(), minutes=10.0, val_every=2)
    run = tmp_path / "run"
    run.mkdir()
    trainer = Trainer(run, Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(2):
        losses = trainer.train_step()
        trainer.step += 1
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.save()
    resumed = Trainer(run, Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    resumed.load()
    assert resumed.step == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    assert 0.0 <= resumed.validate()

    from training.finetune_sv import finetune

    model = load_checkpoint(run / "checkpoint.pt")
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    tdnn = model.sv.tdnn[0].kernel.weight.clone()
    finetune(model, Corpus(tiny_corpus), resumed.sampler.speakers, per_speaker=2, steps=3, batch_speakers=2,
             crop_frames=(20, 40), log=lambda s: None)
    logged: list[str] = []
    history = finetune(model, Corpus(tiny_corpus), resumed.sampler.speakers, per_speaker=2, steps=2,
                       batch_speakers=4, crop_frames=(20, 40), val_conversations=2, log=logged.append)
    assert re.search(r"[1-9]\d* validation turns", logged[0]), logged[0]
    assert 0.0 <= history[-1]["val_pair_eer"] <= 1.0
    from training.finetune_sv import layer_features, pair_cosines

    model.eval()
    feats = layer_features(model, [Corpus(tiny_corpus).audio("val", k) for k in range(2)])
    assert pair_cosines(model, feats).shape == (2, 2)
    assert not model.encoder.training  # validation must not leave the shared encoder in train mode
    with pytest.raises(ValueError, match="crop_frames"):
        finetune(model, Corpus(tiny_corpus), resumed.sampler.speakers, per_speaker=2, steps=1, crop_frames=(50, 50))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert not torch.equal(tdnn, model.sv.tdnn[0].kernel.weight)

    out = tmp_path / "embedded"
    sizes = export(model, out)
    assert set(sizes) == {"ctc", "sd", "sv"}
    from safetensors.torch import load_file

    tensors = {h: load_file(str(out / h / "model.safetensors")) for h in sizes}
    enc = {k: v for k, v in tensors["ctc"].items() if k.startswith("unispeech_sat.")}
    assert enc and all(v.dtype == torch.float16 for v in enc.values())
    for head in ("sd", "sv"):
        assert all(torch.equal(tensors[head][k], v) for k, v in enc.items())
        assert (out / head / "preprocessor_config.json").read_bytes() == (out / "ctc" / "preprocessor_config.json").read_bytes()
    assert json.loads((out / "ctc" / "vocab.json").read_text())["<pad>"] == 0
    assert json.loads((out / "sd" / "config.json").read_text())["architectures"] == ["UniSpeechSatForAudioFrameClassification"]

    import transformers

    from models import UniSpeechSatForCTC

    ours = UniSpeechSatForCTC.from_pretrained(out / "ctc")
    theirs = transformers.UniSpeechSatForCTC.from_pretrained(str(out / "ctc")).float().eval()
    x = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.allclose(ours(x).logits, theirs(x).logits, atol=1e-4)
    sv = transformers.UniSpeechSatForXVector.from_pretrained(str(out / "sv")).eval()
    assert sv.config.xvector_output_dim == ArchConfig.tiny().xvector_dim


def test_cli_evaluation_picks_disjoint_enrollment_and_test_clips(tiny_corpus):
    from training.evaluate_cli import ENROLL_AUDIO_S, MIN_CLIP_S, choose_speakers

    corpus = Corpus(tiny_corpus)
    rows = corpus.rows["test"]
    chosen = choose_speakers(corpus, n=10, tests=1)
    assert chosen
    for name, (enroll, tests) in chosen.items():
        assert len(tests) == 1 and not set(enroll) & set(tests)
        assert all(rows[i]["speaker"] == name and rows[i]["length"] >= MIN_CLIP_S * 16000 for i in enroll + tests)
        assert sum(rows[i]["length"] for i in enroll) >= ENROLL_AUDIO_S * 16000


def test_warm_start_from_an_export_and_a_bf16_step(tiny_corpus, tmp_path):
    from training.export import export
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    cfg = dataclasses.replace(TrainConfig.smoke(), bf16=True)
    first = Trainer(tmp_path / "a", Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    export(first.model.eval(), tmp_path / "embedded")
    second = Trainer(tmp_path / "b", Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    second.init_from_export(tmp_path / "embedded")
    exported = first.model.state_dict()
    for k, v in second.model.state_dict().items():
        if k != "sv.objective.weight":  # AM-softmax classes are not exported: they start fresh
            assert torch.equal(v, exported[k].half().float()), k
    losses = second.train_step()  # under bfloat16 autocast
    assert all(np.isfinite(v) for v in losses.values())
    wrong = ArchConfig(**{**dataclasses.asdict(ArchConfig.tiny()), "hidden_size": 48})
    with pytest.raises(ValueError, match="does not fit this architecture"):
        Trainer(tmp_path / "c", Corpus(tiny_corpus), wrong, cfg).init_from_export(tmp_path / "embedded")


def test_training_waits_while_the_pause_file_exists(tiny_corpus, tmp_path):
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    run = tmp_path / "run"
    run.mkdir()
    trainer = Trainer(run, Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    (run / "PAUSE").touch()
    logs: list[str] = []
    naps: list[float] = []

    def fake_sleep(seconds: float) -> None:  # a fake clock: the file goes on the third nap
        naps.append(seconds)
        assert logs == [f"[train] paused at step 0 (remove {run / 'PAUSE'} to continue)"]
        if len(naps) == 3:
            (run / "PAUSE").unlink()
        assert len(naps) <= 3, "still waiting after the pause file was removed"

    trainer._wait_while_paused(logs.append, sleep=fake_sleep)
    assert naps == [0.5, 0.5, 0.5] and logs[-1] == "[train] resumed at step 0" and len(logs) == 2
    trainer._wait_while_paused(logs.append, sleep=fake_sleep)  # no pause file: no wait, no log
    assert len(naps) == 3 and len(logs) == 2


def test_clustering_threshold_is_tuned_on_validation_conversations(tiny_corpus, tmp_path):
    from engine import Engine
    from voiceprints.calibration import load_calibration
    from voiceprints.xvector import XVectorEmbedder
    from training.export import export
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer
    from training.tune_clustering import VAL_SEED_TAG, best_threshold, build_conversations, score, sweep, tune
    from training.scoring import DerResult

    trainer = Trainer(tmp_path / "run", Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    export(trainer.model.eval(), tmp_path / "m")
    sv = tmp_path / "m" / "sv"
    with pytest.raises(FileNotFoundError, match="calibrate the verification threshold first"):
        tune(tmp_path / "m", Corpus(tiny_corpus), count=1, grid=(0.5,), change_grid=(None,), log=lambda s: None)
    fingerprint = XVectorEmbedder(str(sv)).fingerprint
    (sv / "verification.json").write_text(json.dumps({"threshold": 0.9, "fingerprint": fingerprint}))
    written = tune(tmp_path / "m", Corpus(tiny_corpus), count=2, grid=(0.3, 0.9), change_grid=(None, 0.4),
                   log=lambda s: None)
    assert written["threshold"] in (0.3, 0.9) and written["change_threshold"] in (None, 0.4)
    assert set(written["der_by_threshold"]) == {"0.30/off", "0.90/off", "0.30/0.40", "0.90/0.40"}
    assert written["der"] == min(written["der_by_threshold"].values())
    data = json.loads((sv / "verification.json").read_text())
    assert data["threshold"] == 0.9 and data["clustering"]["conversations"] == 2  # the rest is kept
    cal = load_calibration(sv, fingerprint)
    assert (cal.cluster_threshold, cal.change_threshold) == (written["threshold"], written["change_threshold"])
    engine = Engine.from_checkpoints(asr=str(tmp_path / "m" / "ctc"), diar=str(tmp_path / "m" / "sd"), sv=str(sv))
    assert engine.config.speakers.new_cluster_threshold == written["threshold"]
    # scoring at the measured thresholds reproduces the tuned DER on the same conversations
    scored = score(tmp_path / "m", build_conversations(Corpus(tiny_corpus), "val", 2, VAL_SEED_TAG))
    assert scored["der"] == written["der"] and scored["thresholds"]["clustering"] == written["threshold"]
    assert 0.0 <= scored["der_turns_named_right"] <= 1.0
    # ties go to no splitting, then to the clustering threshold nearest the verification threshold
    same = DerResult(10.0, 1.0, 1.0, 1.0)
    assert best_threshold({(0.3, None): same, (0.8, None): same, (0.8, 0.4): same,
                           (0.95, None): DerResult(10.0, 5.0, 0.0, 0.0)}, 0.9) == (0.8, None)


def test_clean_turns_keep_only_the_samples_no_other_turn_overlaps():
    from training.finetune_sv import clean_turns
    from training.mixing import Mixture, Segment

    audio = np.arange(48000, dtype=np.float32)
    mix = Mixture(audio, (Segment("a", 0, 24000), Segment("b", 20000, 44000), Segment("c", 46000, 47000)))
    turns = clean_turns(mix, min_s=0.5, max_s=8.0)
    assert [name for name, _ in turns] == ["a", "b"]  # c: 1000 samples, under 0.5 s
    np.testing.assert_array_equal(turns[0][1], audio[:20000])
    np.testing.assert_array_equal(turns[1][1], audio[24000:44000])
    assert len(clean_turns(mix, min_s=0.5, max_s=1.0)[0][1]) == 16000


def test_voice_family_groups_identities_by_timbre():
    from training.voices import voice_family

    assert voice_family("esp-en-gb-x-rp-iven3-p58-s160") == voice_family("esp-en-us-nyc-iven3-p58-s180") == "esp-iven3"
    assert voice_family("fl-rms-c+10-t85") == voice_family("fl-rms-c-110-t115") == "fl-rms"
    with pytest.raises(ValueError, match="synthetic identity"):
        voice_family("alice")


def test_report_renders_the_shipped_evaluation_and_the_lm_beam_table():
    from training.evaluate import markdown_report

    results = json.loads((Path(__file__).parents[1] / "models/embedded/evaluation.json").read_text())
    results.pop("streaming_der_more", None)  # a report without the extra conversations (before session 8)
    results.pop("streaming_der_all", None)
    results["lm_tuning"] = {"alpha": 0.6, "beta": 0.0, "val_wer": 0.298, "beam_width": 128,
                            "val_wer_by_beam": {"32": {"val_wer": 0.328}, "128": {"val_wer": 0.298}}}
    text = markdown_report(results, "python -m training.evaluate ...")
    assert "| CER greedy | test" in text
    assert "validation WER 29.8 % at beam 128; by beam width 32: 32.8 %, 128: 29.8 %." in text
    assert "more test conversations" not in text
    results["streaming_der_more"] = {"conversations": 40, "der": 0.135, "confusion": 0.107,
                                     "der_turns_named_right": 0.0442, "seed_tag": 79}
    text = markdown_report(results, "python -m training.evaluate ...")
    assert ("Streaming DER of 40 more test conversations (built with seed tag 79, `training.tune_clustering "
            "--score-only --split test`): 13.5 %, confusion 10.7 %, turns named right 4.4 %.") in text
    assert "over all" not in text  # no pooled figure without the seconds behind each DER


def test_pooled_der_weighs_each_set_by_its_scored_time():
    from training.evaluate import markdown_report, pooled_der
    from training.scoring import DerResult
    from training.tune_clustering import der_seconds

    sixteen = {"files": 16, "der": 0.2, **der_seconds(DerResult(300.0, 10.0, 5.0, 45.0))}
    forty = {"conversations": 40, "der": 0.1, **der_seconds(DerResult(900.0, 20.0, 10.0, 60.0))}
    pooled = pooled_der(sixteen, forty)
    # (60 + 90) s of error in 1200 s: not the mean of 20 % and 10 %, nor weighted by count (12.9 %)
    assert pooled == {"conversations": 56, "der": 0.125, "scored_s": 1200.0, "error_s": 150.0}
    assert pooled_der(sixteen, {"conversations": 40, "der": 0.1}) is None  # results from before the seconds
    results = json.loads((Path(__file__).parents[1] / "models/embedded/evaluation.json").read_text())
    results["streaming_der_all"] = pooled
    text = markdown_report(results, "python -m training.evaluate ...")
    assert "Streaming DER over all 56 test conversations above, pooled (150 s of error in 1200 s scored): 12.5 %" in text


def test_growing_an_exported_encoder_by_one_layer_keeps_its_outputs(tiny_corpus, tmp_path):
    from training.export import export
    from training.grow import grow_state
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    cfg = TrainConfig.smoke()
    two = dataclasses.replace(ArchConfig.tiny(), num_layers=2)
    first = Trainer(tmp_path / "a", Corpus(tiny_corpus), two, cfg)
    with torch.no_grad():  # uneven layer mixtures, so a wrong split of the duplicated entry would show
        first.model.sd.layer_weights.copy_(torch.tensor([0.3, -0.2, 0.5]))
        first.model.sv.layer_weights.copy_(torch.tensor([-0.4, 0.9, 0.1]))
    export(first.model.eval(), tmp_path / "embedded")
    same = Trainer(tmp_path / "b", Corpus(tiny_corpus), two, cfg)
    same.init_from_export(tmp_path / "embedded")
    deeper = Trainer(tmp_path / "c", Corpus(tiny_corpus), dataclasses.replace(two, num_layers=3), cfg)
    deeper.init_from_export(tmp_path / "embedded", grow_at=1)
    assert len(deeper.model.encoder.encoder.layers) == 3

    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    outputs = []
    for trainer in (same, deeper):
        model = trainer.model.eval()
        with torch.no_grad():
            outputs.append((model.ctc(audio).logits, model.sd(audio).logits, model.sv(audio).embeddings))
    for before, after in zip(*outputs):
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # the new layer is not a dead copy: its input projections hold the next layer's weights
    layers = deeper.model.encoder.encoder.layers
    assert torch.equal(layers[1].attention.q_proj.weight, layers[2].attention.q_proj.weight)
    assert not layers[1].attention.out_proj.weight.any()
    with pytest.raises(ValueError, match="outside 0..1"):
        grow_state(first.model.ctc.state_dict(), 2)

    # the command line takes the depth from the export (the recipe default is 1 layer for --smoke)
    from training.train import main
    for extra, depth in (([], 2), (["--grow-layer", "1"], 3)):
        out = tmp_path / f"cli{depth}"
        main(["--out", str(out), "--corpus", str(tiny_corpus), "--smoke", "--minutes", "0.01",
              "--init-export", str(tmp_path / "embedded"), *extra])
        assert json.loads((out / "run.json").read_text())["arch"]["num_layers"] == depth


def test_progress_line_leaves_out_heads_that_did_not_train():
    from training.train import _loss_summary

    assert _loss_summary({"ctc": 0.5, "sv": 1.25, "lr": 1e-4}) == "ctc 0.500 sv 1.250"
    assert _loss_summary({"sd": 0.1, "ctc": 0.5, "sv": 1.0}) == "ctc 0.500 sd 0.100 sv 1.000"


def test_asr_errors_are_broken_down_by_voice_family_worst_first():
    from training.evaluate import by_voice_family, family_lines

    refs = ["THE CAT", "A DOG", "THE CAT", "A DOG"]
    families = ["fl-rms", "fl-rms", "esp-m3", "esp-m3"]
    greedy = ["THE CAT", "A DOG", "THE KAT", "A DOG"]  # one error in 12 espeak-ng characters
    with_lm = ["THE CAT", "A DOG", "THE CAT", "A DOG"]
    table = by_voice_family(families, refs, {"greedy": greedy, "lm": with_lm})
    assert list(table) == ["esp-m3", "fl-rms"]
    assert table["esp-m3"] == {"utterances": 2, "cer_greedy": round(1 / 12, 4), "cer_lm": 0.0}
    assert table["fl-rms"]["cer_greedy"] == 0.0
    line = family_lines(table)[1]
    assert "esp-m3 0.0/8.3 (2)" in line and line.index("esp-m3") < line.index("fl-rms")


def test_change_speed_moves_pitch_and_length_together_and_keeps_loudness():
    from training.mixing import change_speed

    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 400 * t).astype(np.float32)
    for factor in (0.9, 1.12):
        out = change_speed(tone, factor)
        assert out.dtype == np.float32 and len(out) == round(16000 / factor)
        peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
        assert abs(peak_hz - 400 * factor) < 2.0
        assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)
    assert np.array_equal(change_speed(tone, 1.0), tone)
    with pytest.raises(ValueError, match="positive"):
        change_speed(tone, 0.0)


def test_speed_changed_utterances_train_captions_but_not_the_speaker_loss(tiny_corpus, tmp_path):
    from training.batches import BatchSampler
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    def batch(speed_prob: float):
        sampler = BatchSampler(Corpus(tiny_corpus), seed=5, max_utt_samples=8 * 16000, speaker_slots=3)
        return sampler.utterances(3, mix_prob=0.0, strength=0.0, speed_prob=speed_prob)

    plain, changed = batch(0.0), batch(1.0)
    assert not plain.speed_changed.any() and changed.speed_changed.all()
    assert plain.texts == changed.texts  # same draw, same transcripts: only the audio moved
    assert not torch.equal(plain.attention_mask.sum(1), changed.attention_mask.sum(1))

    cfg = dataclasses.replace(TrainConfig.smoke(), speed_prob=1.0)
    trainer = Trainer(tmp_path / "speed", Corpus(tiny_corpus), ArchConfig.tiny(), cfg)
    losses = trainer.train_step()
    assert np.isfinite(losses["ctc"]) and np.isnan(losses["sv"])  # every voice changed: no speaker term


def test_tune_lm_writes_alpha_beta_and_blank_penalty_that_the_decoder_reads_back(tiny_corpus, tmp_path):
    from models.lm import CTCBeamDecoder
    from models.lm.arpa import count_ngrams, estimate, normalize_line, write_arpa
    from training.evaluate import tune_lm
    from training.export import export
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    trainer = Trainer(tmp_path / "run", Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    export(trainer.model.eval(), tmp_path / "m")
    lm = tmp_path / "m" / "ctc" / "lm.arpa.gz"
    lines = (tiny_corpus / "lm_text.txt").read_text().splitlines()
    write_arpa(estimate(count_ngrams([normalize_line(s) for s in lines], 3)), lm)
    result = tune_lm(tmp_path / "m", Corpus(tiny_corpus), lm, utterances=3, alphas=(0.5, 1.0), betas=(0.0,),
                     blank_penalties=(0.0, 2.0))
    written = json.loads((lm.parent / "lm_weights.json").read_text())
    assert (written["alpha"], written["beta"], written["blank_penalty"]) == (
        result["alpha"], result["beta"], result["blank_penalty"])
    assert written["log_add"] is True and len(written["grid"]) == 2 * 1 * 2
    assert {row["blank_penalty"] for row in written["grid"]} == {0.0, 2.0}
    decoder = CTCBeamDecoder(["<pad>", "|", "a"], 0, lm=lm)
    assert (decoder.alpha, decoder.beta, decoder.blank_penalty) == (result["alpha"], result["beta"], result["blank_penalty"])
    assert set(result["val_wer_by_beam"]) == {"32", "128", "256", "512"}


def test_recipe_defaults_are_the_shipped_models_recorded_settings():
    """`TrainConfig()` and `ArchConfig()` are what `models/embedded/training_history.json` recorded
    for the shipped run; experiments removed since were off in it."""
    from training.model import ArchConfig
    from training.train import REMOVED_SETTINGS, TrainConfig

    shipped = json.loads((Path(__file__).resolve().parents[1] / "models/embedded/training_history.json").read_text())
    machine = {"bf16"}  # the CPU's arithmetic, not the recipe (slow where bf16 is emulated): off by default
    defaults = dataclasses.asdict(TrainConfig())
    recorded = {k: v for k, v in shipped["train"].items() if k not in REMOVED_SETTINGS and k not in machine}
    assert {k: defaults[k] for k in recorded} == recorded
    assert set(defaults) - set(recorded) - machine == set()  # every setting is recorded in the shipped run
    for name, off in REMOVED_SETTINGS.items():
        if off is not None:
            assert shipped["train"].get(name, off) == off, name
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(ArchConfig()).items()}
    assert arch == shipped["arch"]
    # a checkpoint that used a removed experiment is refused by name; one where it was off resumes
    assert TrainConfig.from_saved({**shipped["train"]}) == dataclasses.replace(TrainConfig(), bf16=True)
    with pytest.raises(ValueError, match="flite_prob=0.15"):
        TrainConfig.from_saved({**shipped["train"], "flite_prob": 0.15})


def test_stage_two_defaults_are_the_shipped_models_recorded_settings():
    """`python -m training.finetune_sv` with no options trains the head the way the shipped one was."""
    from training.finetune_sv import build_parser

    shipped = json.loads((Path(__file__).resolve().parents[1] / "models/embedded/training_history.json").read_text())
    stage_two = shipped["sv_finetune"]
    defaults = build_parser().parse_args(["--checkpoint", "run/checkpoint.pt"])
    assert (stage_two["per_speaker"], stage_two["steps"], stage_two["lr"], list(stage_two["crop_frames"])) == (
        defaults.per_speaker, defaults.steps, defaults.lr, list(defaults.crop_frames))


def test_the_exported_history_records_stage_two():
    from training.export import training_record

    state = {"step": 3, "elapsed_s": 120.0, "arch": {"hidden_size": 8}, "train": {"minutes": 2.0}, "history": []}
    assert "sv_finetune" not in training_record(state) and training_record(state)["minutes"] == 2.0
    stage_two = {"per_speaker": 8, "steps": 5, "crop_frames": [60, 250], "history": []}
    assert training_record({**state, "sv_finetune": stage_two})["sv_finetune"] == stage_two


def test_a_checkpoint_saved_with_the_removed_crop_scale_resumes(tiny_corpus, tmp_path):
    from training.model import ArchConfig
    from training.train import TrainConfig, Trainer

    first = Trainer(tmp_path, Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    first.train_step()
    first.step = 1
    first.save()
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    groups = state["opt"]["param_groups"]
    extra = max(i for g in groups for i in g["params"]) + 1
    groups[1]["params"].append(extra)  # as saved before: the crop loss's scale was the last no-decay parameter
    state["opt"]["state"][extra] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}
    state["ap_scale"] = torch.tensor([10.0, -5.0])
    torch.save(state, tmp_path / "checkpoint.pt")
    second = Trainer(tmp_path, Corpus(tiny_corpus), ArchConfig.tiny(), TrainConfig.smoke())
    second.load()
    assert second.step == 1 and second.opt.state_dict()["param_groups"][1]["params"] == groups[1]["params"][:-1]
