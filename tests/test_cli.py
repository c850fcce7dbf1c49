"""The command line: help, option placement, headless runs end to end, Ctrl-C, not-a-TTY.

Conversations are made in the test with espeak-ng and flite (two synthetic speakers, different
rates), mixed into one file. Runs here use the scripted fake engine through `main`'s
`engine_factory`, so they check the app's plumbing exactly; tests/test_cli_models.py runs the
real engine on tiny checkpoints in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main, parse_args
from app.sources import load_audio
from app.writers import SessionRecord, transcript_text
from tests.test_app_fakes import FakeEngine, FakeStream

ROOT = Path(__file__).resolve().parents[1]


def synth(tmp: Path, name: str, text: str, engine: str) -> tuple[np.ndarray, int]:
    path = tmp / f"{name}.wav"
    if engine == "espeak-ng":
        subprocess.run(["espeak-ng", "-s", "190", "-w", str(path), text], check=True, timeout=30)
    else:
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, timeout=30)
    data, rate = sf.read(path, dtype="float32")
    return data, rate


def conversation(tmp: Path) -> Path:
    """Two synthetic speakers taking turns, written as 44.1 kHz stereo (odd but valid input)."""
    import soxr

    parts = [
        synth(tmp, "a1", "Good morning, the meeting starts now.", "espeak-ng"),
        synth(tmp, "b1", "Thanks, I will share my screen.", "flite"),
        synth(tmp, "a2", "Please go ahead.", "espeak-ng"),
    ]
    mono = [soxr.resample(x, rate, 44100) for x, rate in parts]
    gap = np.zeros(int(0.3 * 44100), dtype=np.float32)
    mix = np.concatenate([np.concatenate([m, gap]) for m in mono])
    path = tmp / "meeting.wav"
    sf.write(path, np.stack([mix, 0.8 * mix], axis=1), 44100)
    return path


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conversation(tmp_path_factory.mktemp("meeting"))


def test_help_documents_the_command_line() -> None:
    out = subprocess.run([sys.executable, "run_live.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--list-mics", "--mic", "--input", "--speed", "--fast", "--headless", "--jsonl",
                 "--transcript", "--srt", "--vtt", "--rttm", "--serve", "--token", "--asr-model",
                 "--diar-model", "--sv-model", "--device", "--dtype", "--speakers-db", "--lm-beam",
                 "enroll", "verify", "identify", "speakers"):
        assert flag in out.stdout, flag


@pytest.mark.parametrize("argv", [
    ["verify", "ann", "--input", "x.wav", "--speakers-db", "d.db", "--device", "cpu"],
    ["--speakers-db", "d.db", "verify", "ann", "--input", "x.wav", "--device", "cpu"],
    ["--input", "x.wav", "--device", "cpu", "verify", "ann", "--speakers-db", "d.db"],
])
def test_options_work_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = parse_args(argv)
    assert (args.command, args.name, args.input, args.speakers_db, args.device) == (
        "verify", "ann", ["x.wav"], "d.db", "cpu")


def test_lm_beam_must_be_positive() -> None:
    from app.errors import AppError

    assert parse_args(["--lm-beam", "32"]).lm_beam == 32
    assert parse_args([]).lm_beam is None  # the engine's default
    with pytest.raises(AppError, match="--lm-beam must be at least 1") as info:
        parse_args(["--lm-beam", "0"])
    assert info.value.exit_code == 2


def test_enroll_takes_several_inputs_and_speakers_subcommands_parse() -> None:
    args = parse_args(["enroll", "ann", "--input", "a.wav", "b.wav", "--replace"])
    assert args.input == ["a.wav", "b.wav"] and args.replace
    assert parse_args(["speakers", "remove", "ann"]).speakers_command == "remove"
    assert parse_args(["--serve", "9000"]).serve_port == 9000
    assert parse_args(["--serve", "0.0.0.0:9001"]).serve_host == "0.0.0.0"


def test_headless_run_writes_every_output(meeting: Path, tmp_path: Path, capsys) -> None:
    out = {k: tmp_path / f"out.{k}" for k in ("transcript", "srt", "vtt", "rttm", "jsonl")}
    argv = ["--input", str(meeting), "--fast", "--headless"]
    for kind, path in out.items():
        argv += [f"--{kind}", str(path)]
    engine = FakeEngine()
    assert main(argv, engine_factory=lambda: engine) == 0
    audio = load_audio(meeting)
    assert engine.streams[0].accepted_samples == len(audio)  # every sample, resampled to 16 kHz
    reference, record = FakeStream(), SessionRecord()
    for event in reference.accept(audio) + reference.flush():  # the same audio in one block
        record.add(event)
    assert out["transcript"].read_text(encoding="utf-8") == transcript_text(record)
    assert len(record.captions) >= 5
    records = [json.loads(line) for line in out["jsonl"].read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["type"] == "end"
    assert {"caption_final", "caption_partial", "caption_revision", "speaker_turn", "speaker_match",
            "stats"} <= {r["type"] for r in records}
    assert out["srt"].read_text().startswith("1\n00:00:00,000 --> 00:00:01,000\n[bob] word0a word0b")
    assert out["vtt"].read_text().startswith("WEBVTT")
    assert out["rttm"].read_text().startswith("SPEAKER meeting 1 0.000 1.000 <NA> <NA> alice")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in out.values())
    assert capsys.readouterr().out == ""  # --jsonl took the events off stdout


def test_not_a_tty_runs_headless_with_events_on_stdout(meeting: Path, capsys) -> None:
    assert main(["--input", str(meeting), "--fast"], engine_factory=FakeEngine) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["seq"] == 1 and json.loads(lines[-1])["type"] == "end"


def test_ctrl_c_stops_and_still_writes_complete_files(meeting: Path, tmp_path: Path, capsys) -> None:
    transcript, srt = tmp_path / "t.txt", tmp_path / "t.srt"

    class InterruptingEngine(FakeEngine):
        def new_stream(self):  # type: ignore[override]
            stream = super().new_stream()
            accept = stream.accept

            def accept_then_interrupt(samples):
                events = accept(samples)
                if stream.accepted_samples >= 32000 and not getattr(stream, "interrupted", False):
                    stream.interrupted = True
                    os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C
                return events

            stream.accept = accept_then_interrupt  # type: ignore[method-assign]
            return stream

    engine = InterruptingEngine()
    code = main(["--input", str(meeting), "--speed", "4", "--headless", "--transcript", str(transcript),
                 "--srt", str(srt)], engine_factory=lambda: engine)
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    heard = engine.streams[0].accepted_samples
    assert 32000 <= heard < len(load_audio(meeting))  # stopped early ...
    text = transcript.read_text()
    assert text.startswith("word0a word0b\n") and text.endswith("\n")  # ... and flushed what it heard
    assert srt.read_text().count("-->") == len(text.split()) // 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.srt", "t.txt"]


def test_speaker_subcommands_import_only_what_they_need(tmp_path: Path) -> None:
    code = (
        "import sys; from app.cli import main; "
        f"rc = main(['speakers', 'list', '--speakers-db', {str(tmp_path / 's.db')!r}]); "
        "print(sorted(m for m in ('torch', 'textual', 'websockets', 'transformers') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ['{"speakers": []}', "[]"]


@pytest.mark.parametrize("layout", ["manifest", "folders"])
def test_no_microphone_plays_the_demo_with_a_private_store(layout: str, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    import app.engine_setup
    import app.sources
    from app.errors import NoMicrophone
    from tests.test_app_fakes import FakeEmbedder, syllables

    demo = tmp_path / "demo"
    (demo / "enroll" / "alice").mkdir(parents=True)
    sf.write(demo / "conversation.wav", syllables(1.2), 16000)
    if layout == "manifest":
        sf.write(demo / "a.wav", syllables(7.0, 300.0), 16000)
        (demo / "manifest.json").write_text(json.dumps({"conversation": "conversation.wav",
                                                        "enroll": {"alice": ["a.wav"]}}))
    else:
        sf.write(demo / "enroll" / "alice" / "1.wav", syllables(7.0, 300.0), 16000)

    def no_mics():
        raise NoMicrophone("no microphone: PortAudio lists no input device")

    monkeypatch.setattr(app.sources, "list_microphones", no_mics)
    monkeypatch.setattr(app.engine_setup, "demo_dir", lambda: str(demo))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    engine = FakeEngine(FakeEmbedder())
    services = []  # the voiceprint service the demo opens (the engine itself gets plain values)
    attach = app.engine_setup.attach_speakers
    monkeypatch.setattr(app.engine_setup, "attach_speakers", lambda *a: services.append(attach(*a)) or services[-1])
    assert main([], engine_factory=lambda: engine) == 0  # stdout is no TTY here: headless
    out = capsys.readouterr()
    assert out.err.splitlines()[0] == "no microphone: PortAudio lists no input device; playing the bundled demo instead"
    assert json.loads(out.out.splitlines()[-1])["type"] == "end"
    assert engine.streams[0].accepted_samples == int(1.2 * 16000)
    assert [p.name for p in services[0].list()] == ["alice"] and engine.speakers.names == ["alice"]  # pre-enrolled ...
    assert not (tmp_path / "user-data").exists()  # ... never in the user's store ...
    assert not services[0].store.path.exists()  # ... and the demo store is gone at the end
