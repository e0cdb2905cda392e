"""The chart draws whatever its data: no points, one, equal values, zeros, NaN, huge ranges.

Unit tests of how the chart picks the points it can draw, its axis ranges and
ticks, then the ``Chart`` widget itself fed degenerate data in a small app,
rendered at several sizes.
"""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static
from textual_plotext import PlotextPlot

from smash_tui.tui import widgets
from smash_tui.tui.widgets import (
    Chart,
    Series,
    axis_range,
    log_ticks,
    nice_ticks,
    plottable,
    tick_labels,
)
from tests.tui.reading import chart_marks, plain

NAN, INF = float("nan"), float("inf")


def line(xs: list[float], ys: list[float], label: str = "a") -> Series:
    return Series(label, xs, ys, "cyan")


# --- the points a chart keeps ---------------------------------------------------------------


def test_plottable_drops_what_has_no_place_and_counts_it() -> None:
    plotted = plottable(
        [
            line([1, NAN, 3, 4, 5], [1, 2, INF, None, 5e300]),  # type: ignore[list-item]
            line([NAN], [1], "gone"),
        ]
    )
    assert [(s.label, s.xs, s.ys) for s in plotted.series] == [("a", (1.0,), (1.0,))]
    assert plotted.dropped == 5
    assert plotted.notes() == ["5 NaN/inf dropped"]


def test_plottable_leaves_non_positive_x_out_of_a_log_axis() -> None:
    plotted = plottable([line([0, -5, 10, 100], [1, 2, 3, 4])], xlog=True)
    assert plotted.series[0].xs == (10.0, 100.0)
    assert plotted.not_positive == 2
    assert plotted.notes() == ["2 with x ≤ 0 not on the log axis"]
    # The same data on a linear axis keeps every point.
    assert plottable([line([0, -5, 10, 100], [1, 2, 3, 4])]).points == 4


def test_plottable_pairs_up_to_the_shorter_list_and_flushes_subnormals_to_zero() -> None:
    plotted = plottable([line([1, 2, 3], [5e-324, 2])])
    assert plotted.series[0].xs == (1.0, 2.0)
    assert plotted.series[0].ys == (0.0, 2.0)


# --- axes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 3.0], (1.5, 4.5)),
        ([-3.0], (-4.5, -1.5)),
        ([0.0, 0.0], (-1.0, 1.0)),
        ([1.0, 1.0 + 1e-12], (0.5000000000005, 1.5000000000005)),
        ([1e-300, 1e300], (1e-300, 1e300)),
        ([-2.0, 5.0], (-2.0, 5.0)),
    ],
)
def test_axis_range_widens_a_single_value(
    values: list[float], expected: tuple[float, float]
) -> None:
    low, high = axis_range(values)
    assert low < high
    assert (low, high) == pytest.approx(expected)


def test_a_single_value_on_a_log_axis_is_widened_by_half_a_decade() -> None:
    assert axis_range([300.0], log=True) == (299.5, 300.5)  # 1e300: no overflow at 10 ** high
    assert axis_range([2.0, 2.0], log=True) == (1.5, 2.5)


def test_nice_ticks_are_round_and_in_range() -> None:
    assert nice_ticks(10, 77.5, 7) == [10, 20, 30, 40, 50, 60, 70]
    assert nice_ticks(0, 300, 5) == [0, 100, 200, 300]
    assert nice_ticks(-3, 3, 5) == [-2, 0, 2]
    spans = [
        (0.1, 0.13, 5),
        (-1e300, 1e300, 7),
        (1e-300, 3e-300, 4),
        (1, 2, 2),
        (1e300, 1.01e300, 5),
    ]
    for low, high, count in spans:
        ticks = nice_ticks(low, high, count)
        assert 2 <= len(ticks) <= max(count, 2)
        assert all(low <= tick <= high for tick in ticks)
    # Nothing to divide, or a span too narrow to split into round steps: the ends.
    assert nice_ticks(4, 4, 5) == [4]
    assert nice_ticks(5e-324, 1e-323, 5) == [5e-324, 1e-323]


def test_log_ticks_stay_finite_and_few_over_any_positive_range() -> None:
    assert log_ticks(5, 5) == [5]
    assert log_ticks(3, 3) == [3, 3]
    huge = log_ticks(1e-300, 1e300, most=7)
    assert 2 <= len(huge) <= 7
    assert all(1e-300 <= tick <= 1e300 for tick in huge)
    # Used to loop forever: 10.0 ** -324 is 0.0, and 10 * 1e308 is inf.
    assert log_ticks(5e-324, 1.0)[-1] == 1.0
    assert log_ticks(1.0, 1.7e308)[0] == 1.0
    assert log_ticks(-1, 10) == log_ticks(1, INF) == log_ticks(1, NAN) == []


def test_tick_labels_are_short_and_distinct() -> None:
    assert tick_labels([0.0, 0.5, 1.0]) == ["0", "0.5", "1"]
    assert tick_labels([-0.0, 1500.0, 2e6, 1e-5, 1e300]) == ["0", "1.5k", "2M", "1e-05", "1e+300"]
    close = tick_labels([1000.0, 1000.5, 1001.0])
    assert len(set(close)) == 3


# --- the widget -----------------------------------------------------------------------------


class ChartApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Chart("title", "nothing yet", id="chart")


CASES: dict[str, tuple[list[Series], bool]] = {
    "no points": ([], False),
    "empty series": ([line([], [])], False),
    "one point": ([line([1], [2])], False),
    "two equal values": ([line([1, 2], [3, 3])], False),
    "all equal negative": ([line([1, 2, 3], [-3, -3, -3])], False),
    "all x equal": ([line([5, 5, 5], [1, 2, 3])], False),
    "zeros": ([line([0, 0], [0, 0])], False),
    "negative and zero": ([line([-5, 0, 5], [-1e6, 0, 1e6])], False),
    "NaN and inf": ([line([1, NAN, 3, 4], [1, 2, INF, -INF])], False),
    "huge range": ([line([1e-300, 1e300], [-1e300, 1e300])], False),
    "largest floats": ([line([-1.7e308, 1.0, 1.7e308], [1.7e308, 2.0, -1.7e308])], False),
    "subnormals": ([line([5e-324, 1e-320], [5e-324, 0.0])], False),
    "tiny span": ([line([1, 1 + 1e-12], [1, 1 + 1e-13])], False),
    "scatter and line": (
        [
            Series("s", [1, 2, 3], [3, 1, 2], "gray", scatter=True, marker="dot"),
            line([1, 3], [1, 3]),
        ],
        False,
    ),
    "log: zeros and negatives": ([line([0, -5, 10, 100], [1, 2, 3, 4])], True),
    "log: only zeros": ([line([0, 0], [1, 2])], True),
    "log: one point": ([line([10], [1])], True),
    "log: equal values": ([line([50_000, 50_000], [1, 2])], True),
    "log: one huge value": ([line([1e300], [1])], True),
    "log: huge range": ([line([1e-300, 1e300], [1, 2])], True),
    "log: subnormal and largest": ([line([5e-324, 1.0, 1.7e308], [1, 2, 3])], True),
    "log: NaN": ([line([NAN, 10, 100], [1, NAN, 3])], True),
}


@pytest.mark.parametrize(("series", "xlog"), CASES.values(), ids=CASES.keys())
async def test_a_chart_draws_degenerate_data_at_any_size(series: list[Series], xlog: bool) -> None:
    app = ChartApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(Chart)
        chart.draw(series, xlabel="x", xlog=xlog)
        await pilot.pause()
        plotted = chart.plotted
        expected = plottable(series, xlabel="x", xlog=xlog)
        assert plotted == expected
        title = plain(chart.query_one(".chart-title", Static).content)
        for note in plotted.notes():
            assert note in title
        for size in ((60, 20), (200, 60), (20, 7)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert app.return_code is None, size
            if not plotted.points:
                assert chart.has_class("-empty")
                continue
            marks, lines = chart_marks(chart)
            assert lines == chart.query_one(PlotextPlot).size.height, size
            assert marks > 0, f"blank at {size}"


async def test_a_chart_says_why_it_has_nothing_to_draw() -> None:
    app = ChartApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(Chart)
        chart.draw([line([0, -1], [1, 2])], xlog=True)
        await pilot.pause()
        assert chart.has_class("-empty")
        hint = plain(chart.query_one(".chart-empty", Static).content)
        assert hint == "nothing to draw: 2 with x ≤ 0 not on the log axis"
        chart.draw([line([1, 10], [1, 2])], xlog=True)
        await pilot.pause()
        assert not chart.has_class("-empty")
        assert chart_marks(chart)[0] > 0
        chart.draw([])
        await pilot.pause()
        assert plain(chart.query_one(".chart-empty", Static).content) == "nothing yet"


async def test_a_chart_too_small_to_plot_says_so() -> None:
    app = ChartApp()
    async with app.run_test(size=(12, 4)) as pilot:
        chart = app.query_one(Chart)
        chart.draw([line([1, 2], [1, 2])])
        await pilot.pause()
        assert plain(chart.query_one(PlotextPlot).render()) == "(too small for the chart)"
        await pilot.resize_terminal(40, 12)
        await pilot.pause()
        assert chart_marks(chart)[0] > 0


async def test_a_chart_plotext_cannot_draw_says_so_and_the_app_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(widgets, "paint", broken)
    app = ChartApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(Chart)
        chart.draw([line([1, 2], [1, 2])])
        await pilot.pause()
        drawn = plain(chart.query_one(PlotextPlot).render())
        assert drawn == "chart not drawn: ZeroDivisionError: float division by zero"
        assert app.return_code is None
