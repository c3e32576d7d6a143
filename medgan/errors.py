"""Exceptions for user-caused failures.

Every error a user can cause (bad file, bad option, bad config) is a :class:`MedganError`.
The CLI prints its message as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class MedganError(Exception):
    """Base class for failures caused by user input; the message names the file/option.

    ``param`` names the Python parameter at fault (e.g. ``"device"``, ``"overrides"``); it
    prefixes the message, and the CLI shows the matching command-line flag instead
    (``--device``, ``--set``), so neither kind of user reads names they never typed.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return f"{self.param}: {self.message}" if self.param else self.message

    def shown_as(self, name: str) -> str:
        """The message with ``param`` spelt as ``name`` (a CLI flag)."""
        return f"{name}: {self.message}"


class ConfigError(MedganError):
    """An invalid configuration file, value or command-line option."""


class DataError(MedganError):
    """An unreadable, inconsistent or unusable image, label or datalist."""


class CheckpointError(MedganError):
    """A missing, tampered, unsafe or incompatible checkpoint."""


class OutputError(MedganError):
    """An output location that cannot or must not be written (exists, not writable, full)."""


class TrainingDivergedError(MedganError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""
