"""Stopping like a service: real `run_live.py` processes, real signals, real websocket clients.

Each process loads the embedded model (a few seconds), so there are few of them: `--serve` with
no input (the reported bug: it could not be stopped), a real-time file run with output files and
JSON lines, and the TUI on a pseudo-terminal. Waits are on the process's own messages (stderr
lines, a complete JSON line in the file, the websocket close), each with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from app.shutdown import StopSignals, exit_status

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "app" / "demo" / "conversation.wav"
START_TIMEOUT_S = 120  # torch import and model loading on a loaded 2-core machine
STOP_TIMEOUT_S = 15  # "within a few seconds", with room for a loaded machine


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}


class Lines:
    """A pipe's lines, read by a thread, so a test can wait for one with a timeout."""

    def __init__(self, pipe) -> None:
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            self._q.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._q.put(None)

    def wait_for(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; saw {self.seen[-10:]}") from None
            if line is None:
                raise AssertionError(f"the stream ended first; saw {self.seen[-10:]}")
            self.seen.append(line)
            if match(line):
                return line

    def rest(self, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
        return self.seen


def wait_until(condition: Callable[[], bool], timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Check `condition` every 50 ms until it holds (a file has no message to wait on)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        assert alive(), "the process ended first"
        assert time.monotonic() < deadline, f"not within {timeout} s"
        tick.wait(0.05)


def _start(args: list[str], tmp_path: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run_live.py", *args], cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# SIGINT is also covered by the served file run below, so its own start-up runs with -m slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_serve_without_input_stops_on_a_signal_and_closes_clients_with_1001(signum: int, tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proc = _start(["--serve", "127.0.0.1:0", "--headless", "--speakers-db", str(tmp_path / "s.db")], tmp_path)
    try:
        err = Lines(proc.stderr)
        url = err.wait_for(lambda line: line.startswith("feed: ws://"), START_TIMEOUT_S).split()[1]
        with connect(url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            proc.send_signal(signum)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=STOP_TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 128 + signum
        assert any(signal.Signals(signum).name in line for line in err.rest())
        assert "Traceback" not in "\n".join(err.seen)
    finally:
        proc.kill()
        proc.wait()


def test_sigint_on_a_served_file_run_flushes_writes_files_and_jsonl_is_live(tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    jsonl, transcript, rttm = tmp_path / "events.jsonl", tmp_path / "t.txt", tmp_path / "t.rttm"
    proc = _start(["--input", str(DEMO), "--headless", "--jsonl", str(jsonl), "--transcript", str(transcript),
                   "--rttm", str(rttm), "--speakers-db", str(tmp_path / "store" / "s.db"),
                   "--serve", "127.0.0.1:0"], tmp_path, preexec_fn=lambda: os.umask(0o027))
    try:
        err = Lines(proc.stderr)
        url = err.wait_for(lambda line: line.startswith("feed: ws://"), START_TIMEOUT_S).split()[1]
        with connect(url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            # real-time play: a line in the JSON-lines file while the 36 s input is still running
            # proves it is written as events happen (it used to appear only at the end)
            err.wait_for(lambda line: line.startswith("progress:"), START_TIMEOUT_S)
            wait_until(lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 1, 30,
                       alive=lambda: proc.poll() is None)
            first = json.loads(jsonl.read_text().splitlines()[0])
            assert first["seq"] == 1
            assert proc.poll() is None  # still running: the line came live
            proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=STOP_TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 130
    finally:
        proc.kill()
        proc.wait()
    lines = jsonl.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "end"  # flushed to the end of what the input gave
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert transcript.exists() and rttm.exists()
    for path in (jsonl, transcript, rttm):  # the umask (027) decides, not mkstemp's 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["events.jsonl", "t.rttm", "t.txt"]
    assert any("interrupted: output files hold" in line for line in err.rest())
    # the voiceprint store is private whatever the umask: owner-only file in an owner-only folder
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "store" / "s.db").stat().st_mode) == 0o600


def test_tui_stops_on_sigterm(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = {**_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "run_live.py", "--input", str(DEMO), "--speakers-db",
                             str(tmp_path / "s.db"), "--transcript", str(tmp_path / "t.txt")],
                            cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    drained = threading.Event()

    def drain() -> None:  # the TUI must be able to write, and we watch for its first frame
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            seen.extend(data)
            if b"captions" in seen:
                drained.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert drained.wait(START_TIMEOUT_S), bytes(seen[-500:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 143
        assert (tmp_path / "t.txt").exists()  # the output file was still written
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


async def test_a_second_signal_forces_exit() -> None:
    stops: list[int] = []
    forced: list[int] = []
    second = asyncio.Event()

    def force(code: int) -> None:
        forced.append(code)
        second.set()

    signals = StopSignals(stops.append, grace_s=60, force_exit=force)
    assert signals.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(second.wait(), 10)
    finally:
        signals.remove()
    assert stops == [signal.SIGTERM] and forced == [143]  # the status of the first signal
    assert exit_status(signal.SIGINT) == 130


async def test_a_stop_that_hangs_is_forced_after_the_grace_period() -> None:
    forced = asyncio.Event()
    codes: list[int] = []
    signals = StopSignals(lambda signum: None, grace_s=0.05, force_exit=lambda c: (codes.append(c), forced.set()))
    assert signals.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(forced.wait(), 10)
    finally:
        signals.remove()
    assert codes == [130]


async def test_a_second_ctrl_c_in_the_tui_exits_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C waits for the stream's flush and the feed's close; a second one does not wait."""
    from app.tui import LiveTUI
    from tests.test_tui import make_session, wait_for

    session = make_session(tmp_path, seconds=30, speed=1.0)
    app = LiveTUI(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: session.runner is not None and session.runner.meter.audio_samples > 0)
        never = asyncio.Event()
        closing = session.close
        session.close = never.wait  # a close that never ends (a stuck client, say)
        started = asyncio.get_running_loop().time()
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
        assert app.is_running  # the first one is still waiting
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running, timeout=5)
        assert asyncio.get_running_loop().time() - started < 5
    assert app.return_value == 130 and session.interrupted
    await closing()
