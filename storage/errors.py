"""Exceptions raised by the storage package.

Every message is a single line that a user can act on; callers (the CLI, the
Textual app, the worker) print ``str(exc)`` and never need a traceback.
"""

from __future__ import annotations


def first_line(value: BaseException | str | None, default: str = "") -> str:
    """The first line of a message or an exception's message.

    An exception without a message gives its type name; an empty text gives ``default``.
    """
    if isinstance(value, BaseException):
        text = str(value).strip()
        return text.splitlines()[0] if text else type(value).__name__
    text = (value or "").strip()
    return text.splitlines()[0] if text else default


class StorageError(Exception):
    """Base class of every error the storage package raises on purpose."""


class DatabaseURLError(StorageError):
    """A ``--db`` value that names no usable database: malformed, unsupported or empty.

    A usage error (the command line exits with 2), unlike a database that cannot be
    reached or opened.
    """


class NewerDatabaseError(StorageError):
    """The database carries a schema revision this version of smash does not know."""


class FilterError(StorageError):
    """A browse filter or sort expression could not be understood."""


class NotFoundError(StorageError):
    """A row looked up by id does not exist."""


class JobStateError(StorageError):
    """A job state transition that is not allowed from the job's current state."""
