"""Widgets shared by the views: the view bar, the status line and a line/scatter chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Container
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

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


# A chart leaves out values beyond this magnitude and draws smaller ones than MIN_ABS
# as 0: plotext's axis arithmetic overflows on spans near the largest float and
# divides by zero on subnormal ones.
MAX_ABS = 1e300
MIN_ABS = 1e-300
# Below this size (cells) a chart says it is too small instead of drawing a squeezed plot.
MIN_PLOT_SIZE = (16, 5)


@dataclass(frozen=True)
class Series:
    """One line or point cloud of a chart."""

    label: str  # legend text, shown in the chart's title line
    xs: Sequence[float]  # x values
    ys: Sequence[float]  # y values, paired with xs
    color: str  # a colour name both plotext and Rich know (cyan, magenta, red, gray...)
    scatter: bool = False  # points instead of a line
    marker: str = "braille"  # plotext marker


@dataclass(frozen=True)
class Plotted:
    """What a chart draws: the drawable points of its series, and how many were left out."""

    series: tuple[Series, ...]  # series with at least one point; xs and ys are tuples of floats
    xlabel: str = ""  # the x axis label
    xlog: bool = False  # a logarithmic x axis
    dropped: int = 0  # points left out for a missing, NaN or infinite value, or beyond MAX_ABS
    not_positive: int = 0  # points left out of the log axis for an x <= 0

    @property
    def points(self) -> int:
        """How many points are drawn."""
        return sum(len(item.xs) for item in self.series)

    def notes(self) -> list[str]:
        """What the title line says about the points left out."""
        notes = []
        if self.not_positive:
            notes.append(f"{self.not_positive} with x ≤ 0 not on the log axis")
        if self.dropped:
            notes.append(f"{self.dropped} NaN/inf dropped")
        return notes


def _number(value: object) -> float | None:
    """A finite float within MAX_ABS (0 below MIN_ABS), or None for what a chart cannot place."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or abs(number) > MAX_ABS:
        return None
    return number if abs(number) >= MIN_ABS else 0.0


def plottable(series: Sequence[Series], *, xlabel: str = "", xlog: bool = False) -> Plotted:
    """Keep the points a chart can draw, and count the others.

    Args:
        series: The series as given; xs and ys are paired up to the shorter one.
        xlabel: The x axis label.
        xlog: A logarithmic x axis, on which an x <= 0 has no place.
    """
    kept = []
    dropped = not_positive = 0
    for item in series:
        xs: list[float] = []
        ys: list[float] = []
        for raw_x, raw_y in zip(item.xs, item.ys):
            x, y = _number(raw_x), _number(raw_y)
            if x is None or y is None:
                dropped += 1
            elif xlog and x <= 0:
                not_positive += 1
            else:
                xs.append(x)
                ys.append(y)
        if xs:
            kept.append(replace(item, xs=tuple(xs), ys=tuple(ys)))
    return Plotted(tuple(kept), xlabel, xlog, dropped, not_positive)


def axis_range(values: Sequence[float], *, log: bool = False) -> tuple[float, float]:
    """The span an axis shows: the values', widened around a single value (or a tiny span).

    Args:
        values: The values on the axis (at least one).
        log: The values are log10 of the data: a single one is widened by half a decade.
    """
    low, high = min(values), max(values)
    if high - low > max(abs(low), abs(high)) * 1e-9:
        return low, high
    middle = (low + high) / 2
    pad = 0.5 if log else abs(middle) / 2 or 1.0
    return middle - pad, middle + pad


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Up to ``count`` round tick positions in [low, high], 1, 2 or 5 times a power of ten apart.

    The finest such step that gives at most ``count`` ticks; the two ends when no round
    step fits (a span too narrow for floats).
    """
    span = high - low
    if not (math.isfinite(span) and span > 0):
        return [low]
    raw = span / max(count - 1, 1)
    if raw <= 0:  # a subnormal span
        return [low, high]
    power = 10.0 ** math.floor(math.log10(raw))
    if power == 0:  # a subnormal span
        return [low, high]
    for factor in (0.5, 1, 2, 5, 10):
        step = factor * power
        first = math.ceil(low / step - 1e-9)
        last = math.floor(high / step + 1e-9)
        if last - first + 1 <= max(count, 2):
            # Clamped: a multiple of the step may stray past an end by a rounding error.
            ticks = [min(max(index * step, low), high) for index in range(first, last + 1)]
            return ticks if len(ticks) >= 2 else [low, high]
    return [low, high]  # precision lost at this magnitude


def _round_up(value: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... at least ``value``."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power >= value:
                return factor * power
        power *= 10


def log_ticks(low: float, high: float, most: int = 9) -> list[float]:
    """Tick positions for a log axis: powers of ten (and 2x, 5x when there are few) in range.

    Args:
        low: The smallest value shown (> 0).
        high: The largest value shown.
        most: How many ticks at most; a wider range keeps every 2nd, 5th, 10th... power.
    """
    if not (0 < low <= high) or not math.isfinite(high):
        return []
    # Exponents and exact decimals, not repeated multiplication: 10.0 ** -324 is 0.0.
    exponents = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
    ticks = [
        tick
        for exponent in exponents
        for factor in (1, 2, 5)
        if low <= (tick := float(f"{factor}e{exponent}")) <= high
    ]
    if len(ticks) > min(6, most):
        powers = [e for e in exponents if low <= float(f"1e{e}") <= high]
        stride = _round_up(len(powers) / max(most, 1))
        ticks = [float(f"1e{e}") for e in powers if e % stride == 0] or [ticks[0], ticks[-1]]
    return ticks or [low, high]


def tick_label(value: float, digits: int = 3) -> str:
    """A short axis label: 0, 0.25, 40, 1.5k, 2M, 1e-05, 1e+300."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e12:
        return human(value, digits)
    return f"{value:.{digits}g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of ticks, with as few digits as keep them apart."""
    labels = [tick_label(tick) for tick in ticks]
    for digits in range(4, 16):
        if len(set(labels)) == len(labels):
            break
        labels = [tick_label(tick, digits) for tick in ticks]
    return labels


def paint(plt: Plot, plotted: Plotted, width: int, height: int) -> None:
    """Set up a fresh plotext figure for ``plotted`` at a size: data, limits and ticks.

    The limits and ticks are computed here rather than by plotext, whose labels
    and log scale break on single values, huge ranges and non-positive values.
    A log x axis is drawn as a linear axis of log10(x) with labels of x.

    Args:
        plt: The figure (cleared first).
        plotted: What to draw; at least one point.
        width: The plot's width in cells.
        height: The plot's height in cells.
    """
    plt.clear_figure()
    if plotted.xlabel:
        plt.xlabel(plotted.xlabel)

    def to_x(values: Sequence[float]) -> list[float]:
        return [math.log10(x) for x in values] if plotted.xlog else list(values)

    for item in plotted.series:
        draw = plt.scatter if item.scatter else plt.plot
        draw(to_x(item.xs), list(item.ys), color=item.color, marker=item.marker)
    x_low, x_high = axis_range(
        [x for item in plotted.series for x in to_x(item.xs)], log=plotted.xlog
    )
    y_low, y_high = axis_range([y for item in plotted.series for y in item.ys])
    plt.xlim(x_low, x_high)
    plt.ylim(y_low, y_high)
    x_count = max(2, min(5, width // 12))
    if plotted.xlog:
        shown = log_ticks(10**x_low, 10**x_high, most=x_count + 4)
        x_ticks = [math.log10(tick) for tick in shown]
    else:
        shown = x_ticks = nice_ticks(x_low, x_high, x_count)
    plt.xticks(x_ticks, tick_labels(shown))
    y_ticks = nice_ticks(y_low, y_high, max(2, min(7, (height - 3) // 2)))
    plt.yticks(y_ticks, tick_labels(y_ticks))


class ChartPlot(PlotextPlot):
    """A plotext plot that builds its figure afresh from its data at every render.

    plotext's ``build`` rewrites the figure in place (a log axis took the log of
    already-logged values on the next build, blanking the plot on a resize and
    then failing with a math domain error), so a figure is built once only: a
    render (a resize, a theme change, a refresh) starts again from ``plotted``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.plotted: Plotted | None = None  # None or no points: nothing to draw
        self.problem = ""  # why the last render drew no plot ("" when it drew one)

    def render(self) -> RenderResult:
        width, height = self.size
        plotted = self.plotted
        if plotted is None or not plotted.points:
            self.problem = "nothing to draw"
            return Text("")
        if width < MIN_PLOT_SIZE[0] or height < MIN_PLOT_SIZE[1]:
            self.problem = "too small"
            return Text("(too small for the chart)", style="dim", no_wrap=True)
        try:
            paint(self.plt, plotted, width, height)
            rendered = super().render()
        except Exception as exc:  # noqa: BLE001 - a chart plotext cannot draw must not end the app
            self.problem = f"{type(exc).__name__}: {exc}"
            self.log.error("chart not drawn", exc)
            return Text(f"chart not drawn: {self.problem}", style="red")
        self.problem = ""
        return rendered


class Chart(Container):
    """A plot of a few series with a title line (and colour legend) that redraws on new data.

    The legend is drawn in the title line, not inside the plot, where plotext
    would cover the first points; so are the points left out (NaN, infinite, or
    not positive on a log axis). An empty chart shows a one-line hint.

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
    Chart > ChartPlot {
        height: 1fr;
    }
    Chart.-empty > ChartPlot { display: none; }
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
        yield ChartPlot()

    @property
    def plotted(self) -> Plotted:
        """What the chart draws now."""
        return self.query_one(ChartPlot).plotted or Plotted(())

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
            series: What to plot; nothing drawable shows the hint (and why, if points were
                left out).
            xlabel: The x axis label.
            title: The title; None keeps the chart's own.
            xlog: A logarithmic x axis, with ticks at powers of ten.
        """
        plotted = plottable(series, xlabel=xlabel, xlog=xlog)
        key = (plotted, title)
        if key == self._drawn:
            return
        self._drawn = key
        self.set_class(not plotted.points, "-empty")
        heading = Text(title if title is not None else self.title)
        for item in plotted.series:
            if item.label:
                heading.append("  ● ", style=item.color.replace("gray", "grey50"))
                heading.append(item.label, style="not bold")
        notes = plotted.notes()
        if notes:
            heading.append(f"  ({', '.join(notes)})", style="not bold yellow")
        self.query_one(".chart-title", Static).update(heading)
        hint = self.empty
        if notes and not plotted.points:
            hint = f"nothing to draw: {', '.join(notes)}"
        self.query_one(".chart-empty", Static).update(hint)
        plot = self.query_one(ChartPlot)
        plot.plotted = plotted
        plot.refresh()
