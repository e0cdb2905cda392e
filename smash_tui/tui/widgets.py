"""Widgets shared by the views: the view bar and a line/scatter chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static
from textual_plotext import PlotextPlot

from smash_tui.tui.format import human

# (mode name, key, label) of every view, in key order.
VIEWS: tuple[tuple[str, str, str], ...] = (
    ("dashboard", "1", "Dashboard"),
    ("architectures", "2", "Architectures"),
    ("jobs", "3", "Jobs"),
    ("proxy", "4", "Proxy"),
    ("pareto", "5", "Pareto"),
)


class ViewBar(Static):
    """The top line: every view with its key (the current one highlighted) and the experiment."""

    DEFAULT_CSS = """
    ViewBar {
        height: 1;
        width: 1fr;
        background: $panel;
        color: $text-muted;
    }
    """

    experiment: reactive[str] = reactive("", layout=False)

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def render(self) -> Content:
        parts = [Content.from_markup("[b $accent]smash[/] ")]
        for mode, key, label in VIEWS:
            text = f" {key} {label} "
            if mode == self.current:
                parts.append(Content.styled(text, "reverse bold"))
            else:
                parts.append(
                    Content.from_markup(f"[@click=app.switch_mode('{mode}')]$text[/]", text=text)
                )
        if self.experiment:
            parts.append(Content.styled(f"  │ {self.experiment}", "italic"))
        return Content("").join(parts)


class StatusLine(Widget):
    """A one-line status text; changing it repaints the line without a new layout.

    (``Static.update`` lays the whole screen out again, which re-measures every
    auto-sized widget; a status line changes far too often for that.)
    """

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        width: 1fr;
        padding: 0 1;
        background: $boost;
    }
    """

    text: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.text


@dataclass(frozen=True)
class Series:
    """One line or point cloud of a chart."""

    label: str  # legend text, shown in the chart's title line
    xs: Sequence[float]  # x values
    ys: Sequence[float]  # y values, paired with xs
    color: str  # a colour name both plotext and Rich know (cyan, magenta, red, gray...)
    scatter: bool = False  # points instead of a line
    marker: str = "braille"  # plotext marker


def log_ticks(low: float, high: float) -> list[float]:
    """Tick positions for a log axis: powers of ten (and 2x, 5x when there are few) in range."""
    if low <= 0 or high <= 0 or high < low:
        return []
    ticks: list[float] = []
    power = 10.0 ** math.floor(math.log10(low))
    while power <= high * 1.0001:
        for factor in (1, 2, 5):
            tick = power * factor
            if low <= tick <= high:
                ticks.append(tick)
        power *= 10
    if len(ticks) > 6:
        ticks = [tick for tick in ticks if math.isclose(10 ** round(math.log10(tick)), tick)]
    return ticks or [low, high]


class Chart(Container):
    """A plot of a few series with a title line (and colour legend) that redraws on new data.

    The legend is drawn in the title line, not inside the plot, where plotext
    would cover the first points. An empty chart shows a one-line hint.

    Args:
        title: Shown above the plot.
        empty: The hint shown while there is nothing to plot.
        id: The widget id.
    """

    DEFAULT_CSS = """
    Chart {
        height: 1fr;
        width: 1fr;
    }
    Chart > .chart-title {
        height: 1;
        width: 1fr;
        text-align: center;
        text-style: bold;
    }
    Chart > .chart-empty {
        color: $text-muted;
        padding: 1 2;
        height: 1fr;
    }
    Chart > PlotextPlot {
        height: 1fr;
    }
    Chart.-empty > PlotextPlot { display: none; }
    Chart > .chart-empty { display: none; }
    Chart.-empty > .chart-empty { display: block; }
    """

    def __init__(self, title: str, empty: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="-empty")
        self.title = title
        self.empty = empty
        self._drawn: object = None

    def compose(self) -> ComposeResult:
        yield Static(self.title, classes="chart-title")
        yield Static(self.empty, classes="chart-empty")
        yield PlotextPlot()

    def draw(
        self,
        series: Sequence[Series],
        *,
        xlabel: str = "",
        title: str | None = None,
        xlog: bool = False,
    ) -> None:
        """Replace the plotted data (a no-op when it is unchanged).

        Args:
            series: What to plot; nothing (or only empty series) shows the hint.
            xlabel: The x axis label.
            title: The title; None keeps the chart's own.
            xlog: A logarithmic x axis, with ticks at powers of ten.
        """
        shown = [item for item in series if len(item.xs)]
        key = (
            tuple((s.label, tuple(s.xs), tuple(s.ys), s.color, s.scatter) for s in shown),
            xlabel,
            title,
            xlog,
        )
        if key == self._drawn:
            return
        self._drawn = key
        self.set_class(not shown, "-empty")
        heading = Text(title if title is not None else self.title)
        for item in shown:
            if item.label:
                heading.append("  ● ", style=item.color.replace("gray", "grey50"))
                heading.append(item.label, style="not bold")
        self.query_one(".chart-title", Static).update(heading)
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        if xlabel:
            plt.xlabel(xlabel)
        if xlog:
            plt.xscale("log")
            xs = [x for item in shown for x in item.xs if x > 0]
            ticks = log_ticks(min(xs), max(xs)) if xs else []
            if ticks:
                plt.xticks(ticks, [human(tick) for tick in ticks])
        for item in shown:
            draw = plt.scatter if item.scatter else plt.plot
            draw(list(item.xs), list(item.ys), color=item.color, marker=item.marker)
        plot.refresh()
