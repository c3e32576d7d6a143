"""Exceptions for user-caused failures.

Every error a user can cause (bad file, bad option, bad config) is a :class:`MedganError`.
The CLI prints its message as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class MedganError(Exception):
    """Base class for failures caused by user input; the message names the file/option."""

    exit_code: int = 2


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
