"""Errors of the engine whose message is meant for the user as it is (one line).

Torch-free, so the command line and the app can catch them without loading torch.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting or job parameter that cannot work; the message is one line for the user.

    Args:
        message: what is wrong, naming the setting.
        field: the setting's name as the front ends know it (e.g. "batch_size"), so a
            form can show the message beside its field; None when no one field is to blame.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeviceError(ConfigError):
    """A device that does not exist on this machine."""


class DatasetError(ValueError):
    """A data set that cannot be loaded; the message is one line meant for the user."""


class RetrainError(Exception):
    """Retraining cannot start or go on; the message is one line meant for the user."""


class InvalidRetrainConfig(RetrainError, ValueError):
    """A retrain config, or an argument of `retrain`, that cannot work.

    Args:
        message: what is wrong.
        field: the offending setting, when one is to blame (see ConfigError).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, read or used; the message is one line naming the file."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class ChunkError(RuntimeError):
    """A chunk of a fanned-out search could not be scored; the message says which and why."""


class DeviceMemoryError(RuntimeError):
    """The device ran out of memory where no smaller batch can help; one line for the user."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, or its type name when it has none.

    Args:
        exc: the exception.
        limit: cut to this many characters (library messages can be pages long).
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


__all__ = [
    "CheckpointError",
    "ChunkError",
    "ConfigError",
    "DatasetError",
    "DeviceError",
    "DeviceMemoryError",
    "InvalidRetrainConfig",
    "RetrainError",
    "TrainingDiverged",
    "first_line",
]
