"""Reading what the app's widgets show, for assertions: plain text and chart marks."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text
from textual.content import Content
from textual_plotext import PlotextPlot

from smash_tui.tui.widgets import Chart

# What plotext draws data points with: braille dots, the scatter dot, the "hd" blocks.
MARKS = frozenset("•▖▗▘▝▚▞▙▛▜▟▄▀▌▐█")


def plain(renderable: Any) -> str:
    """The plain text of a string, Text, Content or Rich renderable (200 columns wide)."""
    if isinstance(renderable, str):
        return renderable
    if isinstance(renderable, (Text, Content)):
        return renderable.plain
    console = Console(width=200, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def chart_marks(chart: Chart) -> tuple[int, int]:
    """(data marks drawn, lines drawn) by a chart's plot rendered at its current size."""
    lines = plain(chart.query_one(PlotextPlot).render()).splitlines()
    marks = sum(1 for line in lines for char in line if char in MARKS or "⠁" <= char <= "⣿")
    return marks, len(lines)
