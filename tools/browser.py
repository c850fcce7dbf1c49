"""Headless Chromium for the feed page, from Debian's `chromium` and `chromium-driver` packages.

Selenium drives it through the driver at a fixed path, so nothing looks for a driver on the
network (Selenium Manager is never asked). Each browser gets a fresh profile folder and the
flags that keep it from calling home. Used by the browser tests and `tools/web_screenshot.py`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,800",
)


def available() -> str | None:
    """None when Chromium and its driver are installed, else what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian packages chromium, chromium-driver; .ci/setup)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the `test` extra)"
    return None


def fake_microphone_flags(wav_path: str) -> list[str]:
    """Flags that let the page open a fake microphone playing `wav_path`, with no prompt."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav_path}", "--autoplay-policy=no-user-gesture-required"]


@contextmanager
def chromium(extra_flags: Sequence[str] = ()) -> Iterator[Any]:
    """A selenium WebDriver on a headless Chromium with a throw-away profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="unispeech-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", *extra_flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_WAV = os.path.join(ROOT, "app", "demo", "conversation.wav")


class ServedApp:
    """`run_live.py ... --serve 127.0.0.1:0` as a child process; `port` once it listens."""

    def __init__(self, argv: Sequence[str], start_timeout_s: float = 120.0) -> None:
        import re
        import subprocess
        import sys
        import threading

        self.stderr_lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "run_live.py"), *argv, "--serve", "127.0.0.1:0"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        listening = threading.Event()
        self.port: int | None = None

        def drain() -> None:  # read stderr to the end, so the child never blocks on a full pipe
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                found = re.search(r"page: https?://[^ ]+:(\d+)/", line)
                if found and self.port is None:
                    self.port = int(found.group(1))
                    listening.set()
            listening.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        listening.wait(start_timeout_s)
        if self.port is None:
            self.stop()
            raise RuntimeError("run_live.py did not start serving:\n" + "".join(self.stderr_lines[-20:]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the graceful stop), then wait; returns the exit status."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._drain.join(timeout_s)
        return code


def wait_for(driver: Any, script: str, timeout_s: float = 30.0, what: str = "") -> Any:
    """Evaluate `script` (a JS expression) in the page until it is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return ({script});"), message=what or script)
