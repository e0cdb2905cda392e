"""Input the app refuses where it is typed: beside the field or the filter line, nothing queued.

The app queues through the same rules as the command line (`smash_tui.submit`), so a
value the CLI refuses must be refused here too, and the refusal must say why in one
line without closing the dialog, leaking SQL, or stopping the app.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from textual.widgets import Input, Static

from smash_tui.tui.architectures import ArchitecturesScreen
from smash_tui.tui.dialogs import RetrainDialog
from smash_tui.tui.grid import Grid
from storage.db import open_database
from storage.models import Experiment, Job
from storage.queries import MAX_FILTER_CHARS
from tests.cli.support import assert_one_line_error, smash
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture
from tests.tui.test_app import ids_shown, open_browser, text_of

# The training split the experiment was probed with: a retrain batch must fit in it.
TRAIN_IMAGES = 200


def job_ids(fixture: Fixture) -> list[int]:
    db = open_database(fixture.url)
    try:
        with db.session() as session:
            return list(session.scalars(select(Job.id).order_by(Job.id)))
    finally:
        db.dispose()


def store_training_split(fixture: Fixture, images: int) -> None:
    """Give the experiment the split size `smash search` stores once it probed the data set."""
    db = open_database(fixture.url)
    try:
        with db.session() as session:
            experiment = session.get(Experiment, fixture.experiment_id)
            assert experiment is not None
            config = {**experiment.config, "train_images": images}
            session.execute(
                update(Experiment).where(Experiment.id == experiment.id).values(config=config)
            )
            session.commit()
    finally:
        db.dispose()


# --- 5. the retrain dialog's batch size --------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "cli_message"),
    [
        (TRAIN_IMAGES + 1, f"fewer than one batch of {TRAIN_IMAGES + 1}"),
        (2**31, "batch_size is too large: 2147483648"),
        (0, "batch_size must be at least 1"),
    ],
    ids=["larger-than-the-split", "beyond-int32", "zero"],
)
async def test_the_retrain_dialog_refuses_a_batch_size_the_cli_refuses_beside_the_field(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, batch_size: int, cli_message: str
) -> None:
    store_training_split(fixture, TRAIN_IMAGES)
    target = fixture.architecture_ids[5]  # scored, never retrained
    # What the command line says of this value, on the same database.
    line = assert_one_line_error(
        smash(fixture.url, "retrain", str(target), "--batch-size", str(batch_size)), 2
    )
    assert cli_message in line, line
    before = job_ids(fixture)
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        shown = ids_shown(screen.query_one("#arch-table", Grid))
        screen.query_one("#arch-table", Grid).cursor_row = shown.index(target)
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, RetrainDialog) and dialog.architecture_ids == [target]
        dialog.query_one("#batch-size", Input).value = str(batch_size)
        await pilot.click("#ok")
        await settle(pilot)
        # Refused beside the field: the dialog stays, says why in one line, points at the field.
        assert app.screen is dialog
        message = text_of(dialog.query_one(".form-error", Static))
        assert "batch" in message and str(batch_size) in message and "\n" not in message.strip(), (
            message
        )
        field = dialog.query_one("#batch-size", Input)
        assert field.has_class("-invalid") and field.has_focus
        assert job_ids(fixture) == before
        assert not any("nothing queued" in n.message for n in app._notifications)
        # The largest batch the CLI accepts goes through the same dialog and is queued.
        field.value = str(TRAIN_IMAGES)
        await pilot.click("#ok")
        await settle(pilot)
        assert app.screen is screen
    (new,) = [job for job in job_ids(fixture) if job not in before]
    db = open_database(fixture.url)
    try:
        with db.session() as session:
            job = session.get(Job, new)
            assert job is not None and job.kind == "retrain" and job.state == "queued"
            assert job.params["retrain"]["batch_size"] == TRAIN_IMAGES
    finally:
        db.dispose()
    assert runner.calls == []


# --- 6. a filter of 1,200 terms ------------------------------------------------------------------


def _sql_free(message: str) -> None:
    """No SQL statement, bound parameters or driver chatter in what the user reads."""
    lowered = message.lower()
    for leak in (
        "select ",
        " where ",
        "[parameters",
        "[sql",
        "background on this error",
        "sqlalche",
        "?, ?",
    ):
        assert leak not in lowered, message


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        # Each term a real one, so only the length can be what is refused.
        ([f"err<{30 + index % 50}" for index in range(1200)], f"at most {MAX_FILTER_CHARS}"),
        (["params>1"] * 1200, f"at most {MAX_FILTER_CHARS}"),
        # Under the character limit but over the term limit.
        (["err<1"] * 51, "the filter has 51 terms; at most 50"),
    ],
    ids=["1200-distinct-terms", "1200-equal-terms", "51-short-terms"],
)
async def test_an_endless_filter_is_one_line_without_sql_and_the_rows_stay(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner, terms: list[str], message: str
) -> None:
    app = make_app(fixture, launcher, runner)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_browser(pilot)
        table = screen.query_one("#arch-table", Grid)
        before = ids_shown(table)
        await pilot.press("slash")
        line = screen.query_one("#arch-filter", Input)
        assert line.has_focus
        # Typed key by key this would take minutes; the value is set and enter submits it
        # through the filter line's own handler, as a paste followed by enter would.
        line.value = " ".join(terms)
        await pilot.press("enter")
        await settle(pilot)
        error = screen.query_one("#arch-filter-error", Static)
        assert error.has_class("-shown")
        shown = text_of(error)
        assert message in shown and "\n" not in shown.strip(), shown
        _sql_free(shown)
        for note in app._notifications:  # nor in a toast
            _sql_free(str(note.message))
        assert line.has_focus and line.has_class("-invalid")
        assert screen.filter is None and screen.filter_text == ""
        assert ids_shown(table) == before
        # The app keeps running on the same screen, and a good filter still works.
        assert (
            app.is_running
            and app.return_code is None
            and isinstance(app.screen, ArchitecturesScreen)
        )
        line.value = "err<30"
        await pilot.press("enter")
        await settle(pilot)
        assert not error.has_class("-shown")
        assert screen.rows and all(row.err is not None and row.err < 30 for row in screen.rows)
    assert app.return_code in (None, 0)
