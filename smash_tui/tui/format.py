"""Small text formatters shared by the views: numbers, durations, progress bars."""

from __future__ import annotations

import math
from datetime import datetime

from rich.text import Text

from storage.errors import first_line as storage_first_line

# Block characters for eighths of a cell, for progress bars finer than a cell.
_EIGHTHS = " ▏▎▍▌▋▊▉"

STATE_STYLES = {
    "queued": "cyan",
    "running": "bold green",
    "paused": "yellow",
    "done": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "created": "cyan",
}


def human(value: float | int | None, digits: int = 3) -> str:
    """A count with a k/M/G suffix: 1234567 -> "1.23M"; None -> "-"."""
    if value is None:
        return "-"
    number = float(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= scale:
            return f"{number / scale:.{digits}g}{suffix}"
    return f"{number:.{digits}g}" if not float(number).is_integer() else f"{int(number)}"


def fixed(value: float | None, places: int = 2) -> str:
    """A float with fixed decimals, "-" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{places}f}"


def duration(seconds: float | None) -> str:
    """A short duration: "45s", "12m05s", "3h20m"; "-" for None."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    total = max(int(round(seconds)), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def ago(when: datetime | None, now: datetime) -> str:
    """How long before ``now``: "12s ago"; "-" for None."""
    if when is None:
        return "-"
    return f"{duration((now - when).total_seconds())} ago"


def clock(when: datetime | None) -> str:
    """The local wall-clock time of a UTC timestamp, "HH:MM:SS"."""
    if when is None:
        return "--:--:--"
    return when.astimezone().strftime("%H:%M:%S")


def progress_bar(fraction: float | None, width: int = 12) -> Text:
    """A one-line bar with a percentage, e.g. "████▌       38%"."""
    value = 0.0 if fraction is None or not math.isfinite(fraction) else min(max(fraction, 0), 1)
    eighths = int(round(value * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    text = Text(bar.ljust(width), style="green")
    text.append(f" {value * 100:3.0f}%")
    return text


def state_text(state: str | None, requested: str | None = None) -> Text:
    """A job or retrain state, coloured, with a pending request: "running→pause"."""
    if state is None:
        return Text("-", style="dim")
    text = Text(state, style=STATE_STYLES.get(state, ""))
    if requested:
        text.append(f"→{requested}", style="yellow")
    return text


def first_line(text: str | None, width: int = 60) -> str:
    """The first line of a message, cut to ``width`` characters."""
    line = storage_first_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"
