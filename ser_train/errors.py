"""The one exception type users see.

Anything raised as `SERError` carries a sentence meant for a person; the CLI and the app print
that sentence instead of a traceback. Everything else is a bug and is allowed to surface.
"""

from __future__ import annotations


class SERError(Exception):
    """A problem with the user's input or environment, explained in one clear sentence."""


class AudioError(SERError):
    """Audio that cannot be used: unreadable, empty, silent, too short or too long."""


class UnreadableAudioError(AudioError):
    """A file no decoder could read: corrupt, or not audio in a format we read (`formats`)."""

    def __init__(self, name: str, formats: str):
        super().__init__(f"{name} could not be read as audio; it is corrupt or not in a supported format ({formats}).")
        self.name, self.formats = name, formats

    def __reduce__(self):  # as it was made, so that it crosses process boundaries (datasets' workers)
        return UnreadableAudioError, (self.name, self.formats)


class DataError(SERError):
    """A dataset source that cannot be loaded as RAVDESS."""


class ModelError(SERError):
    """A folder or repository that is not a usable emotion model (wrong task, no safetensors...)."""


class HubError(SERError):
    """The Hugging Face Hub could not be reached, refused us, or has no such repository."""
