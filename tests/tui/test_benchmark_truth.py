"""Pilot tests of benchmark truth in the app: the Proxy view, the new-search form, nb201 cells.

An nb201 experiment is added to the fixture database (``add_nb201_experiment``): its
scored cells have a benchmark table's accuracy, a few were also retrained, one error
is racing's partial one. The expected figures are computed here from the values
written, with the app's own statistics.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Select, Static

from engine.nb201.cell import all_cells
from smash_tui.tui import data
from smash_tui.tui.analysis import BENCHMARK_EMPTY, ProxyScreen
from smash_tui.tui.dialogs import NewSearchDialog
from smash_tui.tui.format import fixed
from smash_tui.tui.stats import Correlation, correlation
from smash_tui.tui.widgets import Chart, StatusLine
from storage.db import open_database
from storage.records import (
    ArchitectureIn,
    ScoreIn,
    add_architectures,
    add_scores,
    create_experiment,
)
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import (
    NB201_TABLE,
    NB201_TABLE_LABEL,
    Fixture,
    Nb201Fixture,
    add_nb201_experiment,
)
from tests.tui.test_app import open_browser, text_of


def expected_benchmark(cells: Nb201Fixture) -> Correlation:
    """Tau and rho over every scored cell the table lists (not only the retrained ones)."""
    ids = [ident for ident in cells.errors if ident in cells.benches]
    return correlation([cells.errors[i] for i in ids], [cells.benches[i] for i in ids])


def expected_retrained(cells: Nb201Fixture) -> Correlation:
    ids = list(cells.retrained)
    return correlation([cells.errors[i] for i in ids], [cells.retrained[i] for i in ids])


def assert_shows(screen: Any, expected: Correlation) -> None:
    stats = text_of(screen.query_one("#proxy-stats", StatusLine))
    assert f"Kendall τ {fixed(expected.kendall_tau)}" in stats
    assert f"Spearman ρ {fixed(expected.spearman_rho)}" in stats
    assert f"{expected.pairs:,} pairs" in stats
    shown = screen.data.correlation
    assert shown.pairs == expected.pairs
    assert shown.kendall_tau == pytest.approx(expected.kendall_tau)
    assert shown.spearman_rho == pytest.approx(expected.spearman_rho)


async def open_proxy(pilot: Any) -> ProxyScreen:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ProxyScreen)
    return screen


async def test_the_proxy_view_ranks_every_scored_cell_against_the_benchmark_and_b_switches_truth(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    cells = add_nb201_experiment(fixture.url)
    benchmark, retrained = expected_benchmark(cells), expected_retrained(cells)
    assert benchmark.pairs == len(cells.cell_ids) - 3 > retrained.pairs == 4
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_proxy(pilot)
        assert app.experiment_id == cells.experiment_id
        # Every scored cell the table lists, its truth named: the table's file and column.
        assert_shows(screen, benchmark)
        truth = text_of(screen.query_one("#proxy-truth", StatusLine))
        assert f"truth: {NB201_TABLE_LABEL} (benchmark, not trained here)" in truth
        assert "2 scored not in the table" in truth
        assert "1 partial (dimmed)" in text_of(screen.query_one("#proxy-stats", StatusLine))
        chart = screen.query_one("#proxy-chart", Chart)
        assert "benchmark accuracy % (y)" in text_of(chart.query_one(".chart-title", Static))
        assert chart.plotted.points == benchmark.pairs  # few enough to draw them all
        table = screen.query_one("#proxy-table", DataTable)
        assert [str(column.label) for column in table.columns.values()][2] == "bench %"
        partial = table.get_row(str(cells.partial_id))[1]
        assert str(partial.style) == "dim"
        assert screen.check_action("toggle_truth", ()) is True  # b is offered: both truths exist

        await pilot.press("b")
        await settle(pilot)
        assert screen.data is not None and screen.data.truth == "retrained"
        assert_shows(screen, retrained)
        assert "retrained test accuracy % (y)" in text_of(chart.query_one(".chart-title", Static))
        assert "truth: retrained test accuracy" in text_of(screen.query_one("#proxy-truth", StatusLine))
        assert sorted(int(str(key.value)) for key in table.rows) == sorted(cells.retrained)
        assert [str(column.label) for column in table.columns.values()][2] == "acc %"

        await pilot.press("b")
        await settle(pilot)
        assert_shows(screen, benchmark)


async def test_the_proxy_view_of_retrains_alone_offers_no_other_truth(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_proxy(pilot)
        assert "truth: retrained test accuracy" in text_of(screen.query_one("#proxy-truth", StatusLine))
        assert screen.check_action("toggle_truth", ()) is False  # hidden from the footer
        await pilot.press("b")
        await settle(pilot)
        assert screen.data is not None and screen.data.truth == "retrained"


async def test_new_scores_move_tau_while_the_view_is_open(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    cells = add_nb201_experiment(fixture.url)
    app = make_app(fixture, launcher, runner, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_proxy(pilot)
        before = expected_benchmark(cells)
        assert_shows(screen, before)
        # The search scores three more cells the table lists: the best error with the worst accuracy.
        new = all_cells()[-3:]
        db = open_database(fixture.url)
        with db.session() as session:
            rows = [
                ArchitectureIn(cell.hash, cell.to_json(), 1000, 10, 2, 3, bench_acc=60.0 + n)
                for n, cell in enumerate(new)
            ]
            ids = add_architectures(session, cells.experiment_id, rows)
            scores = [
                ScoreIn(ids[row.hash], 2.0 + n, 0.1, images=1000, z_draws=1)
                for n, row in enumerate(rows)
            ]
            add_scores(session, scores)
            session.commit()
        db.dispose()
        for n, row in enumerate(rows):
            cells.errors[ids[row.hash]] = 2.0 + n
            cells.benches[ids[row.hash]] = 60.0 + n
        after = expected_benchmark(cells)
        for _ in range(100):
            await pilot.pause(0.05)
            if screen.data is not None and screen.data.points == after.pairs:
                break
        await settle(pilot)
        assert after.pairs == before.pairs + 3 and after.kendall_tau != before.kendall_tau
        assert_shows(screen, after)


async def test_thousands_of_points_are_sampled_for_drawing_and_ranked_in_full(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = add_nb201_experiment(fixture.url)
    expected = expected_benchmark(cells)
    # As a full nb201 search (6,466 cells) is to the usual limit, so is this fixture to 10.
    monkeypatch.setattr(data, "PROXY_DRAWN_POINTS", 10)
    monkeypatch.setattr(data, "PROXY_TABLE_ROWS", 20)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_proxy(pilot)
        assert_shows(screen, expected)
        drawn = screen.query_one("#proxy-chart", Chart).plotted.points
        assert 5 <= drawn <= 10
        truth = text_of(screen.query_one("#proxy-truth", StatusLine))
        assert f"drawn: {drawn} of {expected.pairs}, τ and ρ over all" in truth
        assert "table: the 20 lowest errors" in truth
        table = screen.query_one("#proxy-table", DataTable)
        lowest = sorted(cells.benches.keys() & cells.errors.keys(), key=lambda i: (cells.errors[i], i))[:20]
        assert [int(str(key.value)) for key in table.rows] == lowest


async def test_a_benchmark_experiment_before_its_first_score_names_its_table(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    db = open_database(fixture.url)
    with db.session() as session:
        create_experiment(
            session, "fresh", dataset="cifar10", preset="nb201", search_space={"kind": "nb201"},
            config={"truth": NB201_TABLE}, seed=0,
        )  # fmt: skip
        session.commit()
    db.dispose()
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_proxy(pilot)
        assert NB201_TABLE_LABEL in text_of(screen.query_one("#proxy-truth", StatusLine))
        chart = screen.query_one("#proxy-chart", Chart)
        assert chart.has_class("-empty")
        assert text_of(chart.query_one(".chart-empty", Static)) == BENCHMARK_EMPTY


async def test_the_detail_pane_draws_an_nb201_cell(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    cells = add_nb201_experiment(fixture.url)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        await pilot.pause(0.1)
        await settle(pilot)
        assert screen._detail_id in cells.cell_ids
        shown = text_of(screen.query_one("#arch-detail-text", Static))
        assert f"Architecture {screen._detail_id}" in shown
        assert "cell |" in shown and "node 0 = input" in shown and "<- output" in shown
        assert "Scores" in shown
        bench = cells.benches[screen._detail_id]
        assert f"benchmark {fixed(bench)} % (the experiment's table; not trained here)" in shown


# --- the new-search form ----------------------------------------------------------------------


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD_HEADER = ["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs", "ArchitectureString"]


def good_rows() -> list[list[str]]:
    return [[f"{80 + n}.5", f"{50 + n}.25", cell.to_string()] for n, cell in enumerate(all_cells()[:5])]


async def fill_search_form(pilot: Any, **fields: str) -> NewSearchDialog:
    await settle(pilot)
    await pilot.press("n")
    await settle(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, NewSearchDialog)
    for field, value in fields.items():
        widget = dialog.query_one(f"#{field}")
        if isinstance(widget, Select):
            widget.value = value
        else:
            assert isinstance(widget, Input)
            widget.value = value
    await pilot.click("#ok")
    await settle(pilot)
    return dialog


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["CIFAR10TestAccuracy200Epochs", "Cell"], [["90.1", "x"]], "has no column 'ArchitectureString'"),
        (GOOD_HEADER, "120", "CIFAR10TestAccuracy200Epochs must be a percentage, got 120.0"),
    ],
    ids=["no-architecture-string", "accuracy-120"],
)
async def test_the_form_refuses_a_malformed_truth_table_beside_its_field(
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
    tmp_path: Path,
    header: list[str],
    rows: Any,
    message: str,
) -> None:
    if rows == "120":  # a good table but for one accuracy above 100 %
        rows = good_rows()
        rows[3][0] = "120"
    table = write_table(tmp_path / "table.csv", header, rows)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        dialog = await fill_search_form(
            pilot, preset="nb201-tiny", truth=str(table), **{"truth-column": "cifar10"}
        )
        assert app.screen is dialog  # refused: the form stays open
        error = text_of(dialog.query_one(".form-error", Static))
        assert message in error and str(table) in error
        assert dialog.query_one("#truth", Input).has_focus
        assert dialog.query_one("#truth", Input).has_class("-invalid")
    assert runner.calls == []


async def test_the_form_refuses_a_table_for_a_space_of_banks(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, tmp_path: Path
) -> None:
    table = write_table(tmp_path / "table.csv", GOOD_HEADER, good_rows())
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        dialog = await fill_search_form(pilot, truth=str(table))  # the default preset: banks
        assert app.screen is dialog
        assert "--truth needs an nb201 preset" in text_of(dialog.query_one(".form-error", Static))
    assert runner.calls == []


async def test_the_form_passes_a_good_table_its_column_and_the_weights_to_smash_search(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, tmp_path: Path
) -> None:
    table = write_table(tmp_path / "table.csv", GOOD_HEADER, good_rows())
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        dialog = await fill_search_form(
            pilot,
            preset="nb201-tiny",
            weights="shared",
            truth=str(table),
            **{"truth-column": "cifar10"},
        )
        assert app.screen is not dialog
    [(args, _)] = runner.calls
    assert args[:3] == ["search", "--detach", "--json"]
    options = dict(zip(args[3::2], args[4::2]))
    assert options["--preset"] == "nb201-tiny"
    assert options["--weights"] == "shared"
    assert options["--truth"] == str(table.resolve())
    assert options["--truth-column"] == "cifar10"
