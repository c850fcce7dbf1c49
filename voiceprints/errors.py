"""Every error the speaker store and the voiceprint service raise on purpose, under `VoiceprintError`."""

from __future__ import annotations

from collections.abc import Iterable

from engine.timebase import samples_to_seconds


class VoiceprintError(Exception):
    """Base of every error the speaker store and the voiceprint service raise on purpose."""


class StoreError(VoiceprintError):
    """The store file is missing, not a speaker store, from a newer version, or damaged."""


class UnknownSpeakerError(VoiceprintError, LookupError):
    """No person of that name is enrolled."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = tuple(known)
        hint = f"enrolled: {', '.join(self.known)}" if self.known else "no one is enrolled"
        super().__init__(f"unknown speaker {name!r} ({hint})")

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class FingerprintMismatchError(VoiceprintError):
    """Voiceprints exist only for other models: embeddings of different checkpoints don't compare."""

    def __init__(self, name: str | None, stored: Iterable[str], current: str) -> None:
        self.name = name
        self.stored = tuple(stored)
        self.current = current
        who = f"{name!r} was" if name is not None else "the enrolled speakers were"
        super().__init__(
            f"{who} enrolled with model {', '.join(self.stored)}, but the current model is "
            f"{current}; embeddings of different checkpoints cannot be compared: enroll again "
            "with this model (or re-embed the stored enrollment audio: run_live.py speakers reembed)"
        )


class InvalidNameError(VoiceprintError, ValueError):
    """A person's name that the store refuses (empty, too long, control characters, reserved)."""


class InvalidAudioError(VoiceprintError, ValueError):
    """Audio that cannot be scored: not 1-D, empty, or holding NaN or infinite samples."""


class NotEnoughSpeechError(VoiceprintError, ValueError):
    """Too little net speech to enroll or to score; says how much was found."""

    def __init__(self, message: str, found_samples: int, required_samples: int) -> None:
        super().__init__(message)
        self.found_samples = found_samples
        self.required_samples = required_samples

    @property
    def found_s(self) -> float:
        return samples_to_seconds(self.found_samples)


class MixedVoicesError(VoiceprintError, ValueError):
    """The audio seems to hold several voices: enrolling or scoring it would describe a mixture."""


class SameVoiceError(VoiceprintError, ValueError):
    """A new name's voice matches someone already enrolled (the same person under two names?)."""


class NameConflictError(VoiceprintError, ValueError):
    """A name that differs from an enrolled one only in letter case (names compare case-insensitively)."""


class OutliersError(VoiceprintError, ValueError):
    """Every new recording disagrees with the others: they seem to be different people."""



__all__ = [
    "FingerprintMismatchError", "InvalidAudioError", "InvalidNameError", "MixedVoicesError", "NameConflictError",
    "NotEnoughSpeechError", "OutliersError", "SameVoiceError", "StoreError", "UnknownSpeakerError",
    "VoiceprintError",
]
