"""One home per default: the command line, the app's forms and the job JSON agree with the engine.

Every default lives in an engine config (`engine.config`, read through
`engine.plans.SearchRequest`); these tests read what a user actually sees (`--help`
defaults through click, the values the app's dialogs open with through the pilot)
and fail when one of them drifts from the engine's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from textual.widgets import Input, Select

from engine.config import RaceConfig, RetrainConfig, ScoreConfig, SearchConfig, TrainConfig
from engine.plans import DEMO_RETRAIN, DEMO_SEARCH, DEMO_TOP, SearchRequest, plan_search
from engine.spaces import PRESETS
from smash_tui.cli import app as cli_app
from smash_tui.runner.config import WorkerConfig
from smash_tui.tui.dialogs import NewSearchDialog, RetrainDialog
from tests.tui.conftest import FakeLauncher, FakeRunner, make_app, settle
from tests.tui.fixtures import Fixture


def cli_defaults(command: str) -> dict[str, Any]:
    """The default of every option of a `smash` command, as `--help` shows it."""
    group = typer.main.get_command(cli_app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return {param.name: param.default for param in params if param.name is not None}


def test_smash_search_defaults_are_the_engines() -> None:
    options = cli_defaults("search")
    request = SearchRequest()
    for field in dataclasses.fields(SearchRequest):
        assert options[field.name] == getattr(request, field.name), field.name
    # ... and the request's own defaults are read off the configs that own them.
    assert (request.epochs, request.batch_size, request.lr) == (
        TrainConfig.epochs, TrainConfig.batch_size, TrainConfig.lr,
    )  # fmt: skip
    assert (request.archs, request.strategy) == (SearchConfig.architectures, SearchConfig.strategy)
    assert (request.z_draws, request.bn_recalibration) == (ScoreConfig.z_draws, ScoreConfig.bn_recalibration_batches)


def test_the_default_request_makes_the_engines_default_jobs() -> None:
    plan = plan_search(SearchRequest())
    assert plan.train.train == TrainConfig()
    assert plan.search.search == SearchConfig()
    assert plan.search.score == ScoreConfig()
    assert plan.search.race == RaceConfig()


def test_smash_demo_retrain_score_and_worker_defaults_are_the_engines() -> None:
    demo = cli_defaults("demo")
    for name in ("epochs", "max_steps", "lr", "archs", "batch_size", "synthetic_train", "synthetic_test",
                 "val_size", "score_images", "eval_archs", "checkpoint_every", "commit_every", "seed"):  # fmt: skip
        assert demo[name] == getattr(DEMO_SEARCH, name), name
    assert (demo["retrain_epochs"], demo["retrain_batch_size"], demo["top"]) == (
        DEMO_RETRAIN.epochs, DEMO_RETRAIN.batch_size, DEMO_TOP,
    )  # fmt: skip

    retrain = cli_defaults("retrain")
    engine = RetrainConfig()
    assert (retrain["epochs"], retrain["batch_size"], retrain["lr"], retrain["seed"]) == (
        engine.epochs, engine.batch_size, engine.lr, engine.seed,
    )  # fmt: skip

    score = cli_defaults("score")
    assert (score["z_draws"], score["bn_recalibration"], score["score_images"], score["seed"]) == (
        ScoreConfig.z_draws, ScoreConfig.bn_recalibration_batches, ScoreConfig.images, ScoreConfig.seed,
    )  # fmt: skip

    worker = cli_defaults("worker")
    config = WorkerConfig()
    assert (worker["poll"], worker["heartbeat"], worker["stale_after"]) == (
        config.poll_s, config.heartbeat_s, config.stale_after_s,
    )  # fmt: skip


async def test_the_apps_dialogs_open_with_the_engines_defaults(
    fixture: Fixture, launcher: FakeLauncher, runner: FakeRunner
) -> None:
    app = make_app(fixture, launcher, runner)
    request = SearchRequest()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, NewSearchDialog)
        assert form.query_one("#dataset", Input).value == request.dataset
        assert form.query_one("#preset", Select).value == request.preset
        assert form.query_one("#epochs", Input).value == str(request.epochs)
        assert form.query_one("#archs", Input).value == str(request.archs)
        assert form.query_one("#strategy", Select).value == request.strategy
        assert form.query_one("#seed", Input).value == str(request.seed)
        assert form.query_one("#weights", Select).value == request.weights
        assert (form.query_one("#truth", Input).value or None) == request.truth
        assert (form.query_one("#truth-column", Select).value or None) == request.truth_column
        # Every preset of every kind is offered, the nb201 ones included (a value the
        # Select does not offer raises).
        assert {"nb201", "nb201-small", "nb201-tiny"} <= set(PRESETS)
        for name in PRESETS:
            form.query_one("#preset", Select).value = name
        await pilot.press("escape")
        await settle(pilot)

        await pilot.press("2")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, RetrainDialog)
        engine = RetrainConfig()
        assert dialog.query_one("#epochs", Input).value == str(engine.epochs)
        assert dialog.query_one("#batch-size", Input).value == str(engine.batch_size)
        assert float(dialog.query_one("#lr", Input).value) == engine.lr
