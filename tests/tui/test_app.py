"""Pilot tests of the command center on the fixture database: what the user sees and does."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from sqlalchemy import select
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from engine.config import RetrainConfig, ScoreConfig
from engine.plans import SearchRequest
from smash_tui.tui.app import SCREENS, SmashApp, screen_class
from smash_tui.tui.architectures import GRID_COLUMNS, ArchitecturesScreen
from smash_tui.tui.dashboard import DashboardScreen
from smash_tui.tui.dialogs import (
    ConfirmDialog,
    HelpScreen,
    NewSearchDialog,
    RetrainDialog,
    ScoreDialog,
)
from smash_tui.tui.grid import Grid
from smash_tui.tui.messages import CountLoaded, PageLoaded
from smash_tui.tui.widgets import StatusLine
from storage.db import open_database
from storage.errors import StorageError
from storage.models import Architecture, Job
from storage.queries import list_architectures
from storage.records import ArchitectureIn, ScoreIn, add_architectures, add_scores
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import KNOWN_ERRORS, Fixture


def text_of(widget: Widget) -> str:
    """The plain text a Static or StatusLine shows (Rich renderables 200 columns wide)."""
    if isinstance(widget, StatusLine):
        return widget.text.plain
    assert isinstance(widget, Static)
    content = widget.content
    if isinstance(content, str):
        return content
    if isinstance(content, (Text, Content)):
        return content.plain
    console = Console(width=200, color_system=None)
    with console.capture() as capture:
        console.print(content)
    return capture.get()


def ids_shown(grid: Grid) -> list[int]:
    """Architecture ids in the browser, top to bottom."""
    return [int(key) for key in grid.keys]


def jobs_in_db(fixture: Fixture, kind: str | None = None) -> list[Job]:
    db = open_database(fixture.url)
    try:
        with db.session() as session:
            query = select(Job).order_by(Job.id)
            if kind is not None:
                query = query.where(Job.kind == kind)
            return list(session.scalars(query))
    finally:
        db.dispose()


def score_partially(fixture: Fixture, architecture_id: int) -> None:
    """Racing dropped the architecture after 200 images with a lucky 5 % error."""
    db = open_database(fixture.url)
    with db.session() as session:
        race = ScoreIn(architecture_id, 5.0, 0.2, images=200, z_draws=1, method="racing")
        add_scores(session, [race])
        session.commit()
    db.dispose()


async def open_browser(pilot: Any) -> ArchitecturesScreen:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ArchitecturesScreen)
    return screen


async def test_app_opens_on_the_dashboard_with_the_newest_experiment(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        assert app.experiment_id == fixture.experiment_id
        experiments = screen.query_one("#dash-experiments", DataTable)
        assert [key.value for key in experiments.rows] == [
            str(fixture.experiment_id),
            str(fixture.other_experiment_id),
        ]
        jobs = screen.query_one("#dash-jobs", DataTable)
        assert str(fixture.search_job_id) in [key.value for key in jobs.rows]
        search_row = [str(cell) for cell in jobs.get_row(str(fixture.search_job_id))]
        assert "running" in search_row and "200/500 scored" in search_row
        assert "1m35s" in search_row  # the ETA from the heartbeat
        stats = text_of(screen.query_one("#dash-stats", StatusLine))
        assert "img/s" in stats and "no worker running" in stats
        assert not screen.query_one("#dash-loss").has_class("-empty")
        # Moving the cursor picks the other experiment for every view.
        experiments.focus()
        await pilot.press("down")
        await settle(pilot)
        assert app.experiment_id == fixture.other_experiment_id
        assert not screen.query_one("#dash-jobs", DataTable).row_count


async def test_sorting_reads_the_new_order_from_the_database(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    seen: list[Message] = []
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        # By SMASH error first: the known errors 10, 20, 30... lead.
        assert ids_shown(table)[:2] == list(fixture.retrained_ids[:2])
        db = open_database(fixture.url)
        with db.session() as session:
            by_params = list_architectures(session, fixture.experiment_id, sort="params", limit=100)
            by_params_desc = list_architectures(
                session, fixture.experiment_id, sort="-params", limit=100
            )
            by_loss = list_architectures(session, fixture.experiment_id, sort="loss", limit=100)
        db.dispose()
        await pilot.press("P")
        await settle(pilot)
        assert ids_shown(table) == [row.id for row in by_params.rows]
        assert screen.sort == "params" and not screen.descending
        assert table.labels[4] == "params▲"
        await pilot.press("P")  # the same column again reverses it
        await settle(pilot)
        assert ids_shown(table) == [row.id for row in by_params_desc.rows]
        await pilot.press("S")
        await settle(pilot)
        assert ids_shown(table) == [row.id for row in by_params.rows]
        await pilot.press("s")  # the next column after params is FLOPs
        await settle(pilot)
        assert screen.sort == "flops"
        await pilot.press("L")
        await settle(pilot)
        assert ids_shown(table) == [row.id for row in by_loss.rows]
        # Each sort was one page message for the newest request; stale ones are dropped.
        pages = [m for m in seen if isinstance(m, PageLoaded)]
        assert {m.request.sort for m in pages} >= {"err", "params", "flops", "loss"}
        assert any(isinstance(m, CountLoaded) and m.count == 40 for m in seen)


async def test_filter_shows_matching_rows_and_escape_clears_it(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        assert table.row_count == 40
        await pilot.press("slash", *"err<30", "enter")
        await settle(pilot)
        shown = [row for row in screen.rows]
        assert shown and all(row.err is not None and row.err < 30 for row in shown)
        assert table.row_count == len(shown) == screen.total
        assert set(fixture.retrained_ids[:2]) <= {row.id for row in shown}
        assert "filter err<30" in text_of(screen.query_one("#arch-status", StatusLine))
        await pilot.press("slash", "ctrl+u", *"params>1M err<50", "enter")
        await settle(pilot)
        assert all(row.params > 1e6 and (row.err or 99) < 50 for row in screen.rows)
        await pilot.press("escape")
        await settle(pilot)
        assert table.row_count == 40 and screen.filter is None
        assert not screen.query_one("#arch-filter", Input).has_class("-shown")


async def test_a_bad_filter_shows_an_inline_error_and_keeps_the_rows(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        before = ids_shown(screen.query_one("#arch-table", Grid))
        await pilot.press("slash", *"siez<3", "enter")
        await settle(pilot)
        error = screen.query_one("#arch-filter-error", Static)
        assert error.has_class("-shown")
        assert "unknown field 'siez'" in text_of(error)
        line = screen.query_one("#arch-filter", Input)
        assert line.has_focus and line.has_class("-invalid")
        assert ids_shown(screen.query_one("#arch-table", Grid)) == before
        # Typing again clears the error.
        await pilot.press("backspace")
        assert not error.has_class("-shown")


async def test_detail_pane_shows_the_highlighted_architecture(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        await pilot.pause(0.1)
        await settle(pilot)
        detail = screen.query_one("#arch-detail-text", Static)
        first = fixture.retrained_ids[0]
        assert screen._detail_id == first
        await pilot.press("down", "down")
        await pilot.pause(0.1)
        await settle(pilot)
        third = ids_shown(screen.query_one("#arch-table", Grid))[2]
        assert screen._detail_id == third
        lines = text_of(detail)
        assert f"Architecture {third}" in lines
        assert "block 1" in lines and "stem 3x3 conv" in lines
        assert "Scores" in lines


async def test_a_partial_error_from_racing_is_dimmed_and_ranked_after_complete_ones(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    # Racing dropped this candidate after 200 images with a lucky 5 %: below every
    # complete score, but measured on other, fewer images.
    raced = fixture.architecture_ids[-1]
    score_partially(fixture, raced)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        shown = ids_shown(table)
        assert shown[:2] == list(fixture.retrained_ids[:2])  # complete scores lead
        # After the 37 complete scores, before the one architecture never scored.
        assert shown.index(raced) == len(shown) - 2
        err_column = [column.key for column in GRID_COLUMNS].index("err")
        assert table._cells[shown.index(raced)][err_column] == ("5.00", "dim")
        assert table._cells[0][err_column][1] == ""
        await pilot.press("end", "up")
        await pilot.pause(0.1)
        await settle(pilot)
        assert screen._detail_id == raced
        assert "SMASH err 5.00 % partial (200 images)" in text_of(
            screen.query_one("#arch-detail-text", Static)
        )
        # Its lucky error puts it on the Pareto front, where it is dimmed and counted.
        await pilot.press("5")
        await settle(pilot)
        front = app.screen.query_one("#pareto-table", DataTable)
        err = front.get_row(str(raced))[2]
        assert isinstance(err, Text) and (err.plain, str(err.style)) == ("5.00", "dim")
        assert "1 partial (dimmed)" in str(app.screen.query_one("#pareto-stats", StatusLine).text)


async def test_retrain_dialog_queues_a_job_with_the_chosen_settings(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        await pilot.press("down", "down")  # the third row: not retrained yet
        target = ids_shown(screen.query_one("#arch-table", Grid))[2]
        await pilot.press("r")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, RetrainDialog)
        assert dialog.query_one("#epochs", Input).value == "20"
        dialog.query_one("#epochs", Input).value = "7"
        dialog.query_one("#batch-size", Input).value = "32"
        dialog.query_one("#lr", Input).value = "0.05"
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is screen
    retrains = jobs_in_db(fixture, "retrain")
    newest = retrains[-1]
    assert newest.params["architecture_id"] == target
    # The whole config is stored: what was asked, and the engine's defaults for the rest.
    assert newest.params["retrain"] == {**asdict(RetrainConfig()), "epochs": 7, "batch_size": 32, "lr": 0.05}
    assert newest.state == "queued"
    db = open_database(fixture.url)
    with db.session() as session:
        assert session.get(Architecture, target).retrain_state == "queued"
    db.dispose()
    # No worker was alive: the app started one, and said so.
    assert launcher.calls == [fixture.url]


async def test_marked_rows_are_retrained_together(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        shown = ids_shown(screen.query_one("#arch-table", Grid))
        await pilot.press("down", "down", "space", "space")  # marks rows 3 and 4
        assert screen.marks == {shown[2], shown[3]}
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, RetrainDialog)
        assert app.screen.architecture_ids == sorted({shown[2], shown[3]})
        await pilot.press("enter")
        await settle(pilot)
        assert screen.marks == set()
    queued = [job for job in jobs_in_db(fixture, "retrain") if job.state == "queued"]
    assert sorted(job.params["architecture_id"] for job in queued) == sorted(shown[2:4])


async def test_z_scores_the_marked_rows_again_with_the_dialogs_settings(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        shown = ids_shown(screen.query_one("#arch-table", Grid))
        await pilot.press("space", "space")  # marks rows 1 and 2
        await pilot.press("z")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ScoreDialog)
        assert dialog.query_one("#z-draws", Input).value == str(ScoreConfig.z_draws)
        dialog.query_one("#z-draws", Input).value = "0"
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is dialog  # refused beside the field, nothing queued
        assert "must be at least 1" in text_of(dialog.query_one(".form-error", Static))
        dialog.query_one("#z-draws", Input).value = "4"
        dialog.query_one("#images", Input).value = "100"
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is screen and screen.marks == set()
    job = jobs_in_db(fixture, "score")[-1]
    assert job.state == "queued"
    assert sorted(job.params["architecture_ids"]) == sorted(shown[:2])
    assert (job.params["score"]["z_draws"], job.params["score"]["images"]) == (4, 100)
    assert launcher.calls == [fixture.url]


async def test_retrain_dialog_refuses_bad_values_inline(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    before = len(jobs_in_db(fixture))
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_browser(pilot)
        await pilot.press("r")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, RetrainDialog)
        dialog.query_one("#epochs", Input).value = "-3"
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is dialog
        assert "epochs cannot be negative" in text_of(dialog.query_one(".form-error", Static))
        dialog.query_one("#epochs", Input).value = "5"
        dialog.query_one("#lr", Input).value = "fast"
        await pilot.click("#ok")
        assert "learning rate must be a number" in text_of(dialog.query_one(".form-error", Static))
        assert dialog.query_one("#lr", Input).has_class("-invalid")
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, RetrainDialog)
    assert len(jobs_in_db(fixture)) == before
    assert launcher.calls == []


async def test_cancel_in_the_jobs_view_asks_then_cancels_and_r_retries(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        table = app.screen.query_one("#jobs-table", DataTable)
        # Newest first: the queued score job is on top.
        assert str(table.rows and list(table.rows)[0].value) == str(fixture.queued_job_id)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # declined: nothing changes
        await settle(pilot)
        assert jobs_in_db(fixture)[fixture.queued_job_id - 1].state == "queued"
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert jobs_in_db(fixture)[fixture.queued_job_id - 1].state == "cancelled"
        row = [str(cell) for cell in table.get_row(str(fixture.queued_job_id))]
        assert "cancelled" in row
        # A running job is asked to stop: the request is recorded for its worker.
        search_index = [key.value for key in table.rows].index(str(fixture.search_job_id))
        table.move_cursor(row=search_index)
        await pilot.press("x", "y")
        await settle(pilot)
        search = jobs_in_db(fixture)[fixture.search_job_id - 1]
        assert (search.state, search.requested) == ("running", "cancel")
        # Cancelled by mistake: r retries it, and a worker is started for it.
        queued_index = [key.value for key in table.rows].index(str(fixture.queued_job_id))
        table.move_cursor(row=queued_index)
        await pilot.press("r")
        await settle(pilot)
        assert jobs_in_db(fixture)[fixture.queued_job_id - 1].state == "queued"
        assert "queued" in [str(cell) for cell in table.get_row(str(fixture.queued_job_id))]
        assert any(
            n.message == f"job {fixture.queued_job_id} is queued again" for n in app._notifications
        )
        assert launcher.calls == [fixture.url]


async def test_pause_and_resume_in_the_jobs_view(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert jobs_in_db(fixture)[fixture.queued_job_id - 1].state == "paused"
        await pilot.press("r")
        await settle(pilot)
        assert jobs_in_db(fixture)[fixture.queued_job_id - 1].state == "queued"
        # Resuming queued work with no worker alive starts one.
        assert launcher.calls == [fixture.url]
        # Pausing a finished job is refused with a one-line notification.
        table = app.screen.query_one("#jobs-table", DataTable)
        table.move_cursor(row=table.row_count - 1)
        await pilot.press("p")
        await settle(pilot)
        assert any("cannot pause job" in n.message for n in app._notifications)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "imagenet", "unknown data set 'imagenet'"),
        ("dataset", "npz:/no/such/file.npz", "/no/such/file.npz does not exist"),
        ("epochs", "-1", "HyperNet epochs cannot be negative"),
        ("archs", "0", "architectures must be at least 1"),
        ("seed", "x", "seed must be a whole number"),
    ],
)
async def test_new_search_form_refuses_bad_input_and_queues_nothing(
    fixture: Fixture,
    launcher: FakeLauncher,
    runner: FakeRunner,
    field: str,
    value: str,
    message: str,
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, NewSearchDialog)
        dialog.query_one(f"#{field}", Input).value = value
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is dialog
        assert message in text_of(dialog.query_one(".form-error", Static))
        assert dialog.query_one(f"#{field}", Input).has_focus
    assert runner.calls == []


async def test_new_search_runs_smash_search_detached(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, NewSearchDialog)
        dialog.query_one("#epochs", Input).value = "2"
        dialog.query_one("#archs", Input).value = "30"
        dialog.query_one("#name", Input).value = "quick"
        await pilot.click("#ok")
        await settle(pilot)
        assert not isinstance(app.screen, NewSearchDialog)
        assert any("experiment 2 (cifar-run) queued" in n.message for n in app._notifications)
    [(args, url)] = runner.calls
    assert url == fixture.url
    assert args[:3] == ["search", "--detach", "--json"]
    options = dict(zip(args[3::2], args[4::2]))
    assert options == {
        "--dataset": "synthetic",
        "--preset": SearchRequest.preset,  # the form shows the engine's defaults, as the CLI does
        "--epochs": "2",
        "--archs": "30",
        "--strategy": "random",
        "--seed": "0",
        "--weights": SearchRequest.weights,
        "--name": "quick",
    }  # no --truth: the form's table field was left empty
    # `smash search --detach` launches its own worker; the app does not start a second.
    assert launcher.calls == []


async def test_a_failing_smash_command_is_one_notification(
    fixture: Fixture, launcher: FakeLauncher
) -> None:
    from smash_tui.tui.processes import CommandError

    runner = FakeRunner(error=CommandError("/tmp/x exists and is not an empty folder"))
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        assert screen is app.screen
        await pilot.press("e")
        await settle(pilot)
        app.screen.query_one("#folder", Input).value = "/tmp/x"
        await pilot.press("enter")
        await settle(pilot)
        errors = [n for n in app._notifications if n.severity == "error"]
        assert len(errors) == 1
        assert "export of architecture" in errors[0].message
        assert "not an empty folder" in errors[0].message
    [(args, _)] = runner.calls
    assert args == ["export", "--", str(fixture.retrained_ids[0]), "/tmp/x"]


async def test_proxy_view_dims_a_retrained_architecture_whose_error_is_partial(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    raced = fixture.retrained_ids[0]
    score_partially(fixture, raced)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        assert "1 partial (dimmed)" in text_of(app.screen.query_one("#proxy-stats", StatusLine))
        table = app.screen.query_one("#proxy-table", DataTable)
        err = table.get_row(str(raced))[1]
        assert isinstance(err, Text) and (err.plain, str(err.style)) == ("5.00", "dim")
        others = [table.get_row(key)[1] for key in table.rows if key.value != str(raced)]
        assert others and all(str(cell.style) == "" for cell in others)


async def test_proxy_view_shows_kendall_tau_for_known_ranks(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        stats = text_of(app.screen.query_one("#proxy-stats", StatusLine))
        assert "Kendall τ -0.80" in stats
        assert "Spearman ρ -0.90" in stats
        assert "5 pairs" in stats
        assert "chance alone ±0.41" in stats  # sqrt(2 (2n + 5) / (9 n (n - 1))) for n = 5
        table = app.screen.query_one("#proxy-table", DataTable)
        assert [key.value for key in table.rows] == [str(i) for i in fixture.retrained_ids]
        assert not app.screen.query_one("#proxy-chart").has_class("-empty")
    assert len(KNOWN_ERRORS) == 5


async def test_pareto_view_highlights_the_front_and_retrains_it(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    db = open_database(fixture.url)
    with db.session() as session:
        rows = session.execute(
            select(
                Architecture.id, Architecture.params, Architecture.flops, Architecture.latest_error
            )
            .where(Architecture.experiment_id == fixture.experiment_id)
            .where(Architecture.latest_error.is_not(None))
        ).all()
    db.dispose()

    def front(cost: int) -> list[int]:
        # Brute force: no other point is at least as cheap and strictly better, or cheaper and as good.
        return sorted(
            (
                r
                for r in rows
                if not any(
                    (o[cost] <= r[cost] and o[3] < r[3]) or (o[cost] < r[cost] and o[3] <= r[3])
                    for o in rows
                )
            ),
            key=lambda r: (r[cost], r[3]),
        )

    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#pareto-table", DataTable)
        assert [int(str(k.value)) for k in table.rows] == [r[0] for r in front(1)]
        for key in table.rows:  # cells are text, not the browser's (text, style) pairs
            mark, ident, *_, state = (str(cell) for cell in table.get_row(key))
            assert mark == " " and ident == str(key.value)
            assert state in {"-", "queued", "running", "paused", "done", "failed", "cancelled"}
        await pilot.press("c")
        await settle(pilot)
        assert [int(str(k.value)) for k in table.rows] == [r[0] for r in front(2)]
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, RetrainDialog)
        await pilot.press("enter")
        await settle(pilot)
    queued = {
        job.params["architecture_id"]
        for job in jobs_in_db(fixture, "retrain")
        if job.state == "queued"
    }
    assert queued == {r[0] for r in front(2)}


async def test_help_lists_every_key_and_each_key_works(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        shown = text_of(app.screen.query_one("#help-text", Static))
        for mode in SCREENS:
            for binding in screen_class(mode).BINDINGS:
                assert app.get_key_display(binding) in shown  # type: ignore[arg-type]
        for binding in app.BINDINGS:
            assert app.get_key_display(binding) in shown  # type: ignore[arg-type]
        await pilot.press("escape")
        for key, mode in (
            ("2", "architectures"),
            ("3", "jobs"),
            ("4", "proxy"),
            ("5", "pareto"),
            ("1", "dashboard"),
        ):
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode
        await pilot.press("t")
        assert app.theme == "textual-light"
        await pilot.press("t")
        assert app.theme == "textual-dark"
        commands = [command.title for command in app.get_system_commands(app.screen)]
        assert {"View: Jobs", "New search", "Help", "Light/dark theme"} <= set(commands)


async def test_the_browser_fills_live_while_scoring_runs(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        table.cursor_row = 3
        highlighted = ids_shown(table)[3]
        assert table.row_count == 40
        db = open_database(fixture.url)
        with db.session() as session:
            add_architectures(
                session,
                fixture.experiment_id,
                [
                    ArchitectureIn(f"live-{n}", "{}", params=1000 + n, flops=10, depth=2, num_ops=1)
                    for n in range(3)
                ],
            )
            session.commit()
        db.dispose()
        for _ in range(100):
            await pilot.pause(0.05)
            if table.row_count == 43:
                break
        assert table.row_count == 43
        await settle(pilot)
        # The new rows have no score: they come last, and the cursor stays on its row.
        assert ids_shown(table)[3] == highlighted
        assert screen.total == 43


async def test_windowed_loading_reads_the_next_page_near_the_end(
    tmp_path: Any, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    from tests.tui.fixtures import build_fixture

    big = build_fixture(tmp_path / "big.db", architectures=450)
    app = SmashApp(big.url, poll_interval=None, launcher=launcher, runner=runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        assert table.row_count == 200 and screen.next_after is not None
        await pilot.press("end")
        await settle(pilot)
        assert table.row_count == 400
        await pilot.press("end")
        await settle(pilot)
        assert table.row_count == 450 and screen.next_after is None
        assert len(set(ids_shown(table))) == 450


async def test_a_database_that_cannot_be_opened_ends_the_app_with_its_error(
    tmp_path: Any, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    bad = tmp_path / "not-a-db.db"
    bad.write_text("this is not a database\n" * 100)
    app = SmashApp(str(bad), poll_interval=None, launcher=launcher, runner=runner)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if app.error is not None:
                break
    assert isinstance(app.error, StorageError)
    assert "\n" not in str(app.error)


async def test_dashboard_shows_the_gpu_of_a_local_cuda_worker(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, monkeypatch: Any
) -> None:
    import socket

    from smash_tui.tui import dashboard
    from smash_tui.tui.processes import GpuStatus
    from storage.workers import register_worker

    db = open_database(fixture.url)
    register_worker(db, device="cuda:0", host=socket.gethostname(), pid=1)
    db.dispose()
    gpu = GpuStatus(0, "NVIDIA H100 80GB HBM3", 40960.0, 81559.0, 97.0)
    monkeypatch.setattr(dashboard, "gpu_status", lambda: [gpu])
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        stats = text_of(app.screen.query_one("#dash-stats", StatusLine))
    assert "device cuda:0 NVIDIA H100 80GB HBM3 · 40.0/80 GiB · 97 % busy" in stats
    assert "1 worker alive" in stats
