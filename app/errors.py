"""The one exception type the command line turns into a single `error: ...` line and an exit code.

Anything the user can cause (a missing file, a bad option, no microphone, an unknown speaker) is
raised as `AppError` with a message that names the bad value and, where there is one, the fix.
"""

from __future__ import annotations


class AppError(Exception):
    """A user-facing failure: `str(error)` is the whole message; `exit_code` is what the CLI returns."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NoMicrophone(AppError):
    """No PortAudio library or no input device: the caller may fall back to the bundled demo."""
