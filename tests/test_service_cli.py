"""Promises of the command line and its output files (issue 26 items 6-8).

Output files follow the umask; temporary files of a killed run are removed by the next one; the
TUI saves into a chosen or documented folder; long file runs report progress on stderr; every
option a subcommand shows applies to it; fp16 is refused on the CPU (and runs on CUDA, GPU-marked);
`--version` and the `unispeech-live` console script.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.cli import COMMAND_OPTIONS, main
from app.progress import FileProgress
from app.writers import TEMP_PREFIX, remove_stale_temp_files, write_atomically
from tests.test_app_fakes import FakeEngine, syllables

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask(mask: int, mode: int, umask, tmp_path: Path) -> None:
    umask(mask)
    target = tmp_path / "out.srt"
    write_atomically(target, "text\n")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["out.srt"]  # no temporary file left


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_a_killed_run_are_removed_by_the_next_start(tmp_path: Path, capsys) -> None:
    target = tmp_path / "talk.txt"
    stale = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-abc123-talk.txt"
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-def456-talk.txt"  # a run still writing: kept
    other = tmp_path / f"{TEMP_PREFIX}{_dead_pid()}-xyz-other.txt"  # not ours to judge: another target
    for p in (stale, live, other):
        p.write_text("partial")
    assert remove_stale_temp_files(target) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
    # the live app does it before any work
    stale.write_text("partial")
    audio = tmp_path / "in.wav"
    sf.write(audio, syllables(1.0), 16000)
    assert main(["--input", str(audio), "--fast", "--headless", "--transcript", str(target)],
                engine_factory=FakeEngine) == 0
    assert not stale.exists() and target.exists()


def test_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomically(tmp_path / "x.txt", 12345)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_tui_save_goes_to_the_save_folder_not_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    from app.session import InputChoice, LiveSession, SessionOptions, default_save_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_save_dir() == tmp_path / "data" / "unispeech-live" / "transcripts"

    async def save(options: SessionOptions) -> list[str]:
        session = LiveSession(FakeEngine(), InputChoice("none", "x"), options)
        try:
            return session.save_transcript()
        finally:
            session.pool.shutdown()

    import asyncio

    [path] = asyncio.run(save(SessionOptions()))
    assert Path(path).parent == default_save_dir() and Path(path).name.startswith("transcript-")
    [chosen] = asyncio.run(save(SessionOptions(save_dir=str(tmp_path / "mine"))))
    assert Path(chosen).parent == tmp_path / "mine"
    assert not any(p.name.startswith("transcript-") for p in tmp_path.iterdir())


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    audio = tmp_path / "long.wav"
    sf.write(audio, syllables(20.0), 16000)
    assert main(["--input", str(audio), "--fast", "--jsonl", str(tmp_path / "e.jsonl")],
                engine_factory=FakeEngine) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert [line.split()[2] for line in lines] == [f"{k}%" for k in range(10, 101, 10)]
    assert "of 20.0 s audio" in lines[-1]


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    bar = FileProgress(16000 * 10, "talk.wav", out=out, tty=True)
    for _ in range(10):
        bar.update(16000)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\rtalk.wav [") and text.endswith("100% (10.0 of 10.0 s audio, " + text.split(", ")[-1])
    assert text.count("\n") == 1 and "#" * 30 in text


def test_each_subcommand_help_lists_only_its_own_options() -> None:
    def help_of(*command: str) -> str:
        return subprocess.run([sys.executable, "run_live.py", *command, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout

    identify = help_of("identify")
    assert "--input" in identify and "--speakers-db" in identify
    for foreign in ("--seconds", "--transcript", "--serve", "--asr-model", "--lm-beam", "--replace"):
        assert foreign not in identify, foreign
    enroll = help_of("enroll")
    assert all(flag in enroll for flag in ("--seconds", "--allow-mixed", "--keep-outliers", "--same-voice-ok"))
    assert "--transcript" not in enroll and "--headless" not in enroll
    listing = help_of("speakers", "list")
    assert "--speakers-db" in listing and "--input" not in listing
    assert "--to DIR" in help_of("speakers", "export")


@pytest.mark.parametrize("argv, message", [
    (["identify", "--input", "x.wav", "--seconds", "3"], "unrecognized arguments: --seconds 3"),
    (["--seconds", "3", "identify", "--input", "x.wav"], "--seconds does not apply to identify"),
    (["--transcript", "t.txt", "verify", "ann", "--input", "x.wav"], "--transcript does not apply to verify"),
    (["--replace"], "--replace does not apply to the live app"),
    (["--input", "x.wav", "speakers", "list"], "--input does not apply to speakers list"),
])
def test_options_a_command_does_not_take_are_refused(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_every_option_has_a_value_after_parsing_whatever_the_command() -> None:
    from app.cli import parse_args

    for argv in (["--headless"], ["identify", "--input", "x.wav"], ["speakers", "list"]):
        args = parse_args(argv)
        for dests in COMMAND_OPTIONS.values():
            missing = [d for d in dests if not hasattr(args, d)]
            assert not missing, (argv, missing)


@pytest.mark.parametrize("argv", [
    ["--dtype", "fp16", "--device", "cpu", "--input", "x.wav"],
    ["verify", "ann", "--input", "x.wav", "--dtype", "fp16", "--device", "cpu"],
])
def test_fp16_is_refused_on_the_cpu_with_a_clear_message(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dtype fp16 runs only on a CUDA device" in err and "bf16" in err


def test_fp16_with_device_auto_on_a_machine_without_cuda(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: fp16 is allowed")
    audio = tmp_path / "in.wav"
    sf.write(audio, syllables(1.0), 16000)
    assert main(["--input", str(audio), "--dtype", "fp16", "--headless"]) == 2
    assert "--dtype fp16 runs only on a CUDA device" in capsys.readouterr().err


def test_the_model_layer_refuses_fp16_on_the_cpu_too() -> None:
    from engine.torch_models import TorchModels
    from voiceprints.xvector import XVectorEmbedder

    with pytest.raises(ValueError, match="fp16 runs only on a CUDA device"):
        XVectorEmbedder(ROOT / "models" / "embedded" / "sv", device="cpu", dtype="fp16")
    with pytest.raises(ValueError, match="fp16 runs only on a CUDA device"):
        TorchModels.load(sv=ROOT / "models" / "embedded" / "sv", device="cpu", dtype="fp16")


@pytest.mark.gpu
def test_fp16_runs_on_cuda_and_matches_fp32() -> None:
    import torch

    from app.sources import load_audio
    from voiceprints.xvector import XVectorEmbedder

    assert torch.cuda.is_available()
    clip = load_audio(ROOT / "app" / "demo" / "enroll" / "Alice" / "1.wav")
    half = XVectorEmbedder(ROOT / "models" / "embedded" / "sv", device="cuda", dtype="fp16").embed(clip)
    full = XVectorEmbedder(ROOT / "models" / "embedded" / "sv", device="cpu", dtype="fp32").embed(clip)
    cosine = float(np.dot(half, full) / np.linalg.norm(half) / np.linalg.norm(full))
    assert np.all(np.isfinite(half)) and cosine > 0.99, cosine
    out = subprocess.run([sys.executable, "run_live.py", "--input", str(ROOT / "app" / "demo" / "conversation.wav"),
                          "--fast", "--headless", "--device", "cuda", "--dtype", "fp16", "--speakers-db", "/tmp/fp16.db"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[-1]["type"] == "end" and any(e["type"] == "caption_final" for e in events)


def test_version_and_console_script() -> None:
    from app import __version__

    out = subprocess.run([sys.executable, "run_live.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"run_live.py {__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["unispeech-live"] == "app.cli:main"
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "app.__version__"}
    assert project["project"]["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    script = Path(sys.executable).parent / "unispeech-live"
    if not script.exists():
        pytest.skip("the package is not installed in this environment (.ci/setup does `pip install -e .`)")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == f"unispeech-live {__version__}"
