"""What a live session listens to and where its output goes: `InputChoice` and `SessionOptions`,
the values `app.live_app` builds from the command line and `app.session.LiveSession` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class InputChoice:
    """What the session listens to: file samples (also the demo), a microphone, or nothing."""

    kind: str  # "file", "demo", "mic" or "none"
    label: str
    samples: np.ndarray | None = None
    mic: Any = None
    speed: float | None = 1.0


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Sinks of one live session."""

    outputs: dict[str, str] = field(default_factory=dict)
    jsonl: str | None = None
    headless: bool = True
    serve: tuple[str, int] | None = None
    token: str | None = None
    max_clients: int = 100  # feed connections beyond this are refused (close 1013)
    replay_grace_s: float = 10.0  # the feed keeps serving replay this long after the input ends
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: https/wss on the feed's port
    config: dict[str, Any] = field(default_factory=dict)
    file_id: str = "live"
    save_dir: str | None = None  # where the TUI's `s` saves a transcript (default_save_dir())


def default_save_dir() -> Path:
    """The TUI's default folder for saved transcripts: `<user data dir>/unispeech-live/transcripts`."""
    from voiceprints.store_schema import default_store_path

    return default_store_path().parent / "transcripts"
