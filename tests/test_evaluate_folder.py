"""The real-recording evaluation: `engine.scoring` against pyannote.metrics, and the command.

The scorer is checked against pyannote.metrics (collar=0.5 there is 0.25 s each side, overlap
scored, the whole file as UEM) on three `ami-dev` files with hypotheses the engine wrote
(tests/data/ami-dev/), and with many speakers on each side. The command runs in process on tiny
folders: with the scripted fake engine, whose output is known, so every figure is checked
exactly; and with the real engine on tiny random checkpoints over two cuts of the bundled demo,
where only the report's structure is checked (a random model's accuracy means nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.evaluate_folder import main
from engine.scoring import DerResult, Segment, diarization_error, normalize_words, read_rttm
from engine.timebase import SAMPLE_RATE
from tests.test_app_fakes import FakeEngine

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parent / "data" / "ami-dev"
ROOT = Path(__file__).parents[1]
AMI_FILES = ("trn00", "trn01", "trn09")
AMI_SECONDS = 30.0


def _annotation(segments: list[Segment]):
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span

    ann = Annotation()
    for i, s in enumerate(segments):
        ann[Span(s.start / SAMPLE_RATE, s.end / SAMPLE_RATE), i] = s.speaker
    return ann


def _pyannote(reference: list[Segment], hypothesis: list[Segment], seconds: float, merge_self_overlap: bool = False) -> dict:
    from pyannote.core import Segment as Span
    from pyannote.core import Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyp = _annotation(hypothesis)
    if merge_self_overlap:
        hyp = hyp.support()  # one speaker's overlapping turns as one, as md-eval counts them
    metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)  # 0.5 s in all: 0.25 s each side
    return metric(_annotation(reference), hyp, uem=Timeline([Span(0.0, seconds)]), detailed=True)


def _ami(name: str) -> tuple[list[Segment], list[Segment]]:
    ref = read_rttm((DATA / f"{name}.rttm").read_text(encoding="utf-8"))[name]
    hyp = read_rttm((DATA / "hyp" / f"{name}.rttm").read_text(encoding="utf-8"))[name]
    return ref, hyp


def _self_overlap(segments: list[Segment]) -> bool:
    by: dict[str, list[Segment]] = {}
    for s in segments:
        by.setdefault(s.speaker, []).append(s)
    return any(b.start < a.end for v in by.values() for a, b in zip(sorted(v, key=lambda s: s.start),
                                                                     sorted(v, key=lambda s: s.start)[1:]))


def _close(ours: DerResult, theirs: dict) -> None:
    total = theirs["total"]
    assert 100 * abs(ours.scored_s - total) / total < 0.1
    for mine, key in ((ours.miss_s, "missed detection"), (ours.false_alarm_s, "false alarm"),
                      (ours.confusion_s, "confusion")):
        assert 100 * abs(mine - theirs[key]) / total < 0.1, key
    assert 100 * abs(ours.der - theirs["diarization error rate"]) < 0.1


@pytest.mark.parametrize("name", AMI_FILES)
def test_scorer_matches_pyannote_metrics_on_ami_dev(name: str) -> None:
    ref, hyp = _ami(name)
    ours = diarization_error(ref, hyp, end_sample=int(AMI_SECONDS * SAMPLE_RATE))
    assert ours.miss_s + ours.false_alarm_s + ours.confusion_s > 0  # a real hypothesis, with errors
    # md-eval counts a speaker once where its own turns overlap; pyannote.metrics counts each turn,
    # so on a hypothesis with such turns the two agree once those turns are merged
    self_overlap = _self_overlap(hyp)
    assert self_overlap == (name == "trn09")
    _close(ours, _pyannote(ref, hyp, AMI_SECONDS, merge_self_overlap=self_overlap))
    if self_overlap:
        counted_twice = _pyannote(ref, hyp, AMI_SECONDS)
        assert counted_twice["false alarm"] > ours.false_alarm_s + 0.1


def test_pooled_der_matches_pyannote_metrics() -> None:
    from pyannote.metrics.diarization import DiarizationErrorRate

    pooled = DerResult(0.0, 0.0, 0.0, 0.0)
    metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    for name in ("trn00", "trn01"):
        ref, hyp = _ami(name)
        pooled = pooled + diarization_error(ref, hyp, end_sample=int(AMI_SECONDS * SAMPLE_RATE))
        from pyannote.core import Segment as Span
        from pyannote.core import Timeline

        metric(_annotation(ref), _annotation(hyp), uem=Timeline([Span(0.0, AMI_SECONDS)]))
    assert 100 * abs(pooled.der - abs(metric)) < 0.1


def _random_turns(rng: np.random.Generator, speakers: int, seconds: float, prefix: str) -> list[Segment]:
    """Turns of `speakers` speakers, each speaker's turns apart from each other, others may overlap."""
    out = []
    for k in range(speakers):
        t = rng.uniform(0, 2)
        while t < seconds - 1:
            dur = rng.uniform(0.3, 3.0)
            start = int(t * SAMPLE_RATE)
            out.append(Segment(f"{prefix}{k}", start, start + int(min(dur, seconds - t) * SAMPLE_RATE)))
            t += dur + rng.uniform(2.0, 12.0)
    return out


def test_many_speakers_are_mapped_optimally() -> None:
    """12 reference and 15 hypothesis speakers: an exhaustive search would try 15!/3! mappings."""
    rng = np.random.default_rng(7)
    seconds = 120.0
    ref = _random_turns(rng, 12, seconds, "r")
    # the hypothesis: the reference's turns with shifted edges, some relabelled, plus stray speakers
    hyp = [Segment(f"h{(int(s.speaker[1:]) * 5) % 12 if rng.random() > 0.15 else 12 + rng.integers(3)}",
                   max(0, s.start + int(rng.normal(0, 0.3) * SAMPLE_RATE)), s.end + int(rng.normal(0, 0.3) * SAMPLE_RATE))
           for s in ref]
    hyp = [h for h in hyp if h.end > h.start]
    end = int(seconds * SAMPLE_RATE)
    ours = diarization_error(ref, hyp, end_sample=end)
    theirs = _pyannote(ref, hyp, seconds, merge_self_overlap=True)
    assert len({s.speaker for s in hyp}) == 15
    assert ours.confusion_s > 0
    _close(ours, theirs)


def test_perfect_hypothesis_scores_zero() -> None:
    demo = ROOT / "app" / "demo"
    ref = read_rttm((demo / "conversation.rttm").read_text())["conversation"]
    renamed = [Segment({"Alice": "s1", "Bruno": "s2", "guest": "s3"}[s.speaker], s.start, s.end) for s in ref]
    result = diarization_error(ref, renamed, end_sample=40 * SAMPLE_RATE)
    assert result.scored_s > 20
    assert (result.miss_s, result.false_alarm_s, result.confusion_s, result.der) == (0.0, 0.0, 0.0, 0.0)
    assert result.rates() == {"der": 0.0, "miss": 0.0, "false_alarm": 0.0, "confusion": 0.0}


def test_collar_and_scored_region() -> None:
    one = Segment("a", 1 * SAMPLE_RATE, 3 * SAMPLE_RATE)
    late = Segment("b", 3 * SAMPLE_RATE, 6 * SAMPLE_RATE)
    # hypothesis ends 0.2 s early: inside the collar, no error
    assert diarization_error([one], [Segment("x", one.start, one.end - SAMPLE_RATE // 5)]).der == 0.0
    # false alarm after the reference, scored up to the end of the file only
    res = diarization_error([one], [one, late], end_sample=5 * SAMPLE_RATE)
    assert res.scored_s == pytest.approx(1.5)
    assert res.false_alarm_s == pytest.approx(1.75)  # 3.25 .. 5.0
    with pytest.raises(ValueError, match="collar"):
        diarization_error([one], [one], collar_s=-1)


def test_rttm_reader_names_the_bad_line() -> None:
    with pytest.raises(ValueError, match="line 2 has 5 fields"):
        read_rttm("SPEAKER f 1 0.0 1.0 <NA> <NA> a <NA> <NA>\nSPEAKER f 1 0.0 1.0\n")
    with pytest.raises(ValueError, match="line 1: onset and duration must be numbers"):
        read_rttm("SPEAKER f 1 zero 1.0 <NA> <NA> a <NA> <NA>\n")
    with pytest.raises(ValueError, match="not negative"):
        read_rttm("SPEAKER f 1 1.0 -1.0 <NA> <NA> a <NA> <NA>\n")
    got = read_rttm(";; comment\n\nSPKR-INFO f 1 <NA> <NA> <NA> unknown a <NA> <NA>\nSPEAKER f 1 0.5 1.25 <NA> <NA> a <NA> <NA>\n")
    assert got == {"f": [Segment("a", 8000, 28000)]}


def test_word_normalisation_follows_the_ctc_transcripts() -> None:
    from training.text import normalize_transcript

    for text in ("Good morning, everyone -- shall we start?", "It's Bruno's 'shop' (the bakery).",
                 "Well-known; \u2019quoted\u2019 words!"):
        assert normalize_words(text) == normalize_transcript(text)
    assert normalize_words("Room 101: the_end & more\u2026") == "ROOM 101 THE END MORE"
    assert normalize_words("na\u00efve caf\u00e9") == "NA\u00cfVE CAF\u00c9"


# --- the command -----------------------------------------------------------------------------


def _noise(seconds: float, seed: int, silent: tuple[int, ...] = ()) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 0.1, int(seconds * SAMPLE_RATE)).astype(np.float32)
    for s in silent:
        x[s * SAMPLE_RATE:(s + 1) * SAMPLE_RATE] = 0
    return x


def _rttm(name: str, turns: list[tuple[str, float, float]]) -> str:
    return "".join(f"SPEAKER {name} 1 {a:.3f} {b - a:.3f} <NA> <NA> {who} <NA> <NA>\n" for who, a, b in turns)


def test_command_scores_a_tiny_folder_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fake engine: each loud second is a turn and a caption `wordNa wordNb`, alice on even
    seconds and unknown-1 on odd ones; so the references below are known to be perfect (a.wav)
    and one speaker short (b.wav: the second second is confusion)."""
    folder = tmp_path / "set"
    folder.mkdir()
    sf.write(folder / "a.wav", _noise(4, 1, silent=(2,)), SAMPLE_RATE, subtype="FLOAT")
    (folder / "a.rttm").write_text(_rttm("a", [("A", 0, 1), ("B", 1, 2), ("B", 3, 4)]))
    (folder / "a.txt").write_text("Word0a word0b,\nword1a WORD1B! word3a word3b.\n")
    sf.write(folder / "b.wav", _noise(3, 2), SAMPLE_RATE)
    (folder / "b.rttm").write_text(_rttm("whatever-id", [("X", 0, 3)]))
    (folder / "notes.rttm").write_text("not a reference of any wav: ignored")
    out, hyp = tmp_path / "report.json", tmp_path / "hyp"
    hyp.mkdir()

    assert main([str(folder), "--out", str(out), "--save-hyp", str(hyp)], engine_factory=FakeEngine) == 0
    printed = capsys.readouterr()
    assert "progress: 1/2 files (a.wav" in printed.err and "progress: 2/2 files (b.wav" in printed.err
    lines = printed.out.splitlines()
    assert lines[0].split() == ["file", "audio", "spk", "ref/hyp", "DER", "miss", "FA", "conf", "WER", "CER"]
    assert lines[2].split()[:4] == ["a.wav", "4.0s", "2/2", "0.0%"]
    assert lines[3].split()[:4] == ["b.wav", "3.0s", "1/2", "40.0%"]
    assert lines[5].split()[:5] == ["pooled", "(2", "files)", "7.0s", "25.0%"]

    report = json.loads(out.read_text())
    assert report["rules"]["collar_s"] == 0.25 and report["rules"]["overlap"] == "scored"
    a, b = report["files"]
    assert a["file"] == "a.wav" and a["audio_s"] == 4.0
    assert a["der"] == {"scored_s": 1.5, "miss_s": 0.0, "false_alarm_s": 0.0, "confusion_s": 0.0, "der": 0.0,
                        "miss": 0.0, "false_alarm": 0.0, "confusion": 0.0, "ref_speakers": 2, "hyp_speakers": 2}
    assert a["text"] == {"ref_words": 6, "word_errors": 0, "wer": 0.0, "ref_chars": 41, "char_errors": 0, "cer": 0.0}
    assert a["hypothesis_words"] == "WORD0A WORD0B WORD1A WORD1B WORD3A WORD3B"
    assert b["der"]["scored_s"] == 2.5 and b["der"]["confusion_s"] == 1.0 and b["der"]["der"] == pytest.approx(0.4)
    assert b["der"]["miss_s"] == 0.0 and b["der"]["false_alarm_s"] == 0.0
    assert b["text"] is None
    pooled = report["pooled"]
    assert pooled["files"] == 2 and pooled["audio_s"] == 7.0
    assert pooled["der"]["scored_s"] == 4.0 and pooled["der"]["der"] == pytest.approx(0.25) and pooled["der"]["files"] == 2
    assert pooled["text"]["wer"] == 0.0 and pooled["text"]["files"] == 1
    assert report["wall_s"] > 0 and all(f["wall_s"] > 0 for f in report["files"])
    # the saved hypothesis is what --rttm / --transcript would write, and is what was scored
    saved = read_rttm((hyp / "a.rttm").read_text())["a"]
    assert [(s.speaker, s.start, s.end) for s in saved] == [
        ("alice", 0, SAMPLE_RATE), ("unknown-1", SAMPLE_RATE, 2 * SAMPLE_RATE),
        ("unknown-1", 3 * SAMPLE_RATE, 4 * SAMPLE_RATE)]
    assert (hyp / "a.txt").read_text().split() == ["word0a", "word0b", "word1a", "word1b", "word3a", "word3b"]


def test_command_over_the_real_engine_on_demo_cuts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two cuts of the bundled demo with their turns and words, through the real engine on tiny
    random checkpoints: the report holds every figure for both files (accuracy is not checked)."""
    from tests.tiny_checkpoints import write_own_tiny_checkpoint

    demo = ROOT / "app" / "demo"
    audio, rate = sf.read(demo / "conversation.wav", dtype="float32")
    assert rate == SAMPLE_RATE
    spec = json.loads((demo / "conversation.json").read_text())["segments"]
    folder = tmp_path / "demo"
    folder.mkdir()
    for name, (a, b) in {"cut1": (0, 7), "cut2": (8, 13)}.items():
        lo, hi = a * SAMPLE_RATE, b * SAMPLE_RATE
        sf.write(folder / f"{name}.wav", audio[lo:hi], SAMPLE_RATE)
        inside = [s for s in spec if s["start_sample"] < hi and s["end_sample"] > lo]
        (folder / f"{name}.rttm").write_text(_rttm(name, [
            (s["speaker"], max(s["start_sample"], lo) / SAMPLE_RATE - a, min(s["end_sample"], hi) / SAMPLE_RATE - a)
            for s in inside]))
        (folder / f"{name}.txt").write_text(" ".join(s["text"] for s in inside if s["start_sample"] >= lo))
    models = tmp_path / "models"
    heads = {h: write_own_tiny_checkpoint(models / h, h, seed, **({"num_labels": 3} if h == "frame" else {}))
             for seed, h in enumerate(("ctc", "frame", "xvector"))}
    out = tmp_path / "report.json"
    code = main([str(folder), "--out", str(out), "--asr-model", str(heads["ctc"]),
                 "--diar-model", str(heads["frame"]), "--sv-model", str(heads["xvector"]), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "progress: 2/2 files" in printed.err
    report = json.loads(out.read_text())
    assert [f["file"] for f in report["files"]] == ["cut1.wav", "cut2.wav"]
    assert report["models"]["asr"] == str(heads["ctc"]) and report["device"] == "cpu"
    for f in report["files"]:
        assert f["der"]["scored_s"] > 0 and f["der"]["ref_speakers"] >= 2
        parts = f["der"]["miss_s"] + f["der"]["false_alarm_s"] + f["der"]["confusion_s"]
        assert f["der"]["der"] == pytest.approx(parts / f["der"]["scored_s"], abs=1e-3)
        assert f["text"]["ref_words"] > 5 and f["text"]["wer"] == f["text"]["word_errors"] / f["text"]["ref_words"]
    pooled = report["pooled"]
    assert pooled["der"]["scored_s"] == pytest.approx(sum(f["der"]["scored_s"] for f in report["files"]), abs=1e-3)
    assert pooled["text"]["ref_words"] == sum(f["text"]["ref_words"] for f in report["files"])


def _bad_folders(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (folder argument, expected words of the error line)."""
    cases: dict[str, tuple[Path, str]] = {"missing": (tmp / "nope", "no such folder")}
    (tmp / "file.wav").write_bytes(b"x")
    cases["a file"] = (tmp / "file.wav", "is not a folder")

    def folder(name: str) -> Path:
        d = tmp / name
        d.mkdir()
        return d

    d = folder("empty")
    (d / "a.rttm").write_text(_rttm("a", [("A", 0, 1)]))
    cases["no wav"] = (d, "holds no .wav file")
    for name, files, words in (
        ("no reference", {"b.rttm": _rttm("b", [("A", 0, 1)])}, "a.wav has no reference: put a.rttm"),
        ("short line", {"a.rttm": "SPEAKER a 1 0.0 1.0\n"}, "a.rttm: RTTM line 1 has 5 fields"),
        ("bad number", {"a.rttm": "SPEAKER a 1 x 1.0 <NA> <NA> A <NA> <NA>\n"}, "must be numbers"),
        ("other files", {"a.rttm": _rttm("b", [("A", 0, 1)]) + _rttm("c", [("A", 0, 1)])}, "none of them is 'a'"),
        ("no words", {"a.txt": " ... !\n"}, "a.txt: holds no words"),
    ):
        d = folder(name)
        sf.write(d / "a.wav", _noise(1, 0), SAMPLE_RATE)
        for fname, text in files.items():
            (d / fname).write_text(text)
        cases[name] = (d, words)
    d = folder("binary rttm")
    sf.write(d / "a.wav", _noise(1, 0), SAMPLE_RATE)
    (d / "a.rttm").write_bytes(b"\xff\xfe\x00SPEAKER")
    cases["binary rttm"] = (d, "a.rttm: is not UTF-8 text")
    d = folder("broken wav")
    (d / "a.wav").write_bytes(b"RIFF0000WAVEjunk")
    (d / "a.rttm").write_text(_rttm("a", [("A", 0, 1)]))
    cases["broken wav"] = (d, "a.wav: cannot read it as audio")
    return cases


def test_bad_folders_fail_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = []
    for name, (arg, words) in _bad_folders(tmp_path).items():
        code = main([str(arg)], engine_factory=lambda: loaded.append(1) or FakeEngine())
        printed = capsys.readouterr()
        assert code == 2, name
        assert printed.out == "", name
        lines = printed.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, printed.err)
    assert not loaded  # the folder is checked before any model is loaded


def test_bad_options_fail_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, words in (([], "DIR"), ([str(tmp_path), "--dtype", "fp64"], "--dtype"),
                        ([str(tmp_path), "--save-hyp", str(tmp_path / "no")], "--save-hyp"),
                        ([str(tmp_path), "--out", str(tmp_path / "no" / "r.json")], "does not exist")):
        assert main(argv, engine_factory=FakeEngine) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
