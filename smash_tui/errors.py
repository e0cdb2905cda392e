"""Errors the front ends share (no Textual, no torch): the CLI reports them in one line."""

from __future__ import annotations


class AppCrashed(Exception):
    """The app stopped on an error nothing handled; the message names it and its traceback file."""
