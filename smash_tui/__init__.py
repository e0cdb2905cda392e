"""smash: a terminal command center for one-shot architecture search with SMASH."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smash-nas")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
