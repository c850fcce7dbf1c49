"""Bad input gives one clear stderr line and a non-zero exit, never a traceback; odd input runs.

Most cases run `app.cli.main` in process (fast); two run `run_live.py` as a subprocess to show
the whole process prints no traceback. Odd-but-valid input runs on the scripted fake engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import main
from tests.test_app_fakes import FakeEngine, syllables

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def write(path: Path, samples: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    nan = syllables(1.0)
    nan[5000] = np.nan
    inf = syllables(1.0)
    inf[100] = np.inf
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    (tmp_path / "notes.txt").write_text("this is not audio\n" * 50)
    return {
        "missing": tmp_path / "nope.wav",
        "empty": tmp_path / "empty.wav",
        "corrupt": tmp_path / "corrupt.wav",
        "unsupported": tmp_path / "notes.txt",
        "folder": tmp_path,
        "nan": write(tmp_path / "nan.wav", nan, subtype="FLOAT"),
        "inf": write(tmp_path / "inf.wav", inf, subtype="FLOAT"),
        "no_samples": write(tmp_path / "zero.wav", np.zeros(0, np.float32)),
    }


@pytest.mark.parametrize("case, reason", [
    ("missing", "no such file"),
    ("empty", "the file is empty"),
    ("corrupt", "cannot read it as audio"),
    ("unsupported", "cannot read it as audio"),
    ("folder", "is a folder"),
    ("nan", "NaN or infinite samples"),
    ("inf", "NaN or infinite samples"),
    ("no_samples", "holds no samples"),
])
@pytest.mark.parametrize("command", [["--headless"], ["verify", "ann"], ["enroll", "ann"]])
def test_bad_files(files: dict[str, Path], case: str, reason: str, command: list[str], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.txt"
    model = tmp_path / "model"  # a folder that passes the option check; never loaded here
    model.mkdir()
    (model / "config.json").write_text("{}")
    argv = command + ["--input", str(files[case]), "--speakers-db", str(tmp_path / "s.db"),
                      "--sv-model", str(model)] + (["--transcript", str(out)] if command == ["--headless"] else [])
    code = main(argv, engine_factory=FakeEngine)
    assert code == 2
    line = one_error_line(capsys)
    assert reason in line and str(files[case]) in line
    assert not out.exists()


def test_wrong_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write(tmp_path / "a.wav", syllables(1.0))
    assert main(["--input", str(audio), "--headless", "--asr-model", str(tmp_path / "no-model")]) == 2
    assert "--asr-model" in one_error_line(capsys)
    (tmp_path / "empty-folder").mkdir()
    assert main(["--input", str(audio), "--headless", "--diar-model", str(tmp_path / "empty-folder")]) == 2
    assert "no config.json" in one_error_line(capsys)
    assert main(["verify", "ann", "--input", str(audio), "--sv-model", str(audio),
                 "--speakers-db", str(tmp_path / "s.db")]) == 2
    assert "is a file" in one_error_line(capsys)


def test_output_folder_must_exist_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write(tmp_path / "a.wav", syllables(1.0))
    engine = FakeEngine()
    code = main(["--input", str(audio), "--headless", "--srt", str(tmp_path / "no" / "x.srt")],
                engine_factory=lambda: engine)
    assert code == 2 and "does not exist" in one_error_line(capsys)
    assert engine.streams == []


def test_unknown_speaker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert main(["speakers", "remove", "nobody", "--speakers-db", str(db)]) == 2
    assert "nobody" in one_error_line(capsys)
    assert main(["speakers", "list", "--speakers-db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out) == {"speakers": []}


def test_no_microphone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.errors import NoMicrophone
    from app.sources import list_microphones

    try:
        mics = list_microphones()
    except NoMicrophone:
        mics = []
    if mics:
        pytest.skip("this machine has a microphone")
    assert main(["--list-mics"]) == 1
    assert "no microphone" in one_error_line(capsys)
    assert main(["--mic", "3", "--headless"], engine_factory=FakeEngine) == 2
    assert "no microphone" in one_error_line(capsys)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["enroll", "ann", "--seconds", "3", "--sv-model", str(model),
                 "--speakers-db", str(tmp_path / "s.db")]) == 2
    assert "no microphone" in one_error_line(capsys)


@pytest.mark.parametrize("case", ["silence", "clipping", "stereo_44k", "ten_ms", "quiet_8k_flac"])
def test_odd_but_valid_input_runs(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case == "silence":
        path = write(tmp_path / "s.wav", np.zeros(32000, np.float32))
    elif case == "clipping":
        path = write(tmp_path / "c.wav", np.clip(syllables(2.0, amp=3.0), -1, 1))
    elif case == "stereo_44k":
        x = syllables(1.5)
        path = write(tmp_path / "st.wav", np.stack([x[: 66150], -x[: 66150]], axis=1), rate=44100)
    elif case == "ten_ms":
        path = write(tmp_path / "short.wav", syllables(0.01))
    else:
        path = write(tmp_path / "q.flac", 0.01 * syllables(2.0)[::2], rate=8000)
    transcript = tmp_path / "t.txt"
    engine = FakeEngine()
    code = main(["--input", str(path), "--fast", "--headless", "--transcript", str(transcript)],
                engine_factory=lambda: engine)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out.splitlines()[-1])["type"] == "end"
    assert transcript.exists()
    if case == "silence":
        assert "silent" in captured.err and transcript.read_text() == ""
    if case == "clipping":
        assert "clips" in captured.err
    assert engine.streams[0].accepted_samples > 0


def test_whole_process_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 100)
    for argv in (["--input", str(bad), "--headless"], ["speakers", "remove", "x", "--speakers-db", str(tmp_path / "d")]):
        run = subprocess.run([sys.executable, "run_live.py", *argv], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr


def test_port_in_use_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    audio = write(tmp_path / "a.wav", syllables(1.0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--input", str(audio), "--headless", "--serve", f"127.0.0.1:{port}",
                     "--transcript", str(tmp_path / "t.txt")], engine_factory=FakeEngine)
    assert code == 2 and "cannot listen" in one_error_line(capsys)
    assert not (tmp_path / "t.txt").exists()
