"""Commands that read results: ``experiments``, ``ls``, ``show`` and ``export``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from engine.config import INT_MAX
from smash_tui.cli.common import (
    DbOption,
    ExperimentOption,
    JsonOption,
    command,
    open_db,
    parse_id,
    resolve_experiment,
    stdout,
)
from smash_tui.cli.render import (
    architecture_report,
    architectures_table,
    experiments_table,
    row_dict,
)
from storage.queries import (
    RetrainInfo,
    architecture_detail,
    count_architectures,
    list_architectures,
    list_experiments,
    parse_filter,
    parse_sort,
)
from storage.records import get_experiment


@command
def experiments(json_: JsonOption = False, db: DbOption = None) -> None:
    """List the experiments, newest first."""
    database = open_db(db)
    with database.session() as session:
        found = list_experiments(session)
    if json_:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": experiment.id,
                        "name": experiment.name,
                        "dataset": experiment.dataset,
                        "preset": experiment.preset,
                        "seed": experiment.seed,
                        "status": experiment.status,
                        "created_at": experiment.created_at.isoformat(),
                    }
                    for experiment in found
                ]
            )
        )
        return
    stdout().print(experiments_table(found))


@command
def ls(
    experiment: ExperimentOption = None,
    sort: Annotated[
        str,
        typer.Option(
            help="Sort field (id, err, loss, params, flops, depth, ops, acc, bench); '-' prefix descends."
        ),
    ] = "err",
    desc: Annotated[bool, typer.Option("--desc", help="Sort descending.")] = False,
    filter_: Annotated[
        str,
        typer.Option(
            "--filter",
            "-f",
            help='Filter terms that must all hold, e.g. "err<35 params<2e6 depth>=10".',
        ),
    ] = "",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=INT_MAX, help="Rows to show.")
    ] = 20,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List an experiment's architectures with their latest score and best retrain."""
    # Parse before opening anything: a malformed expression is a usage error.
    parsed = parse_filter(filter_)
    key, descending = parse_sort(sort, desc)
    database = open_db(db)
    with database.session() as session:
        chosen = resolve_experiment(session, experiment)
        page = list_architectures(
            session, chosen.id, sort=key, descending=descending, filter=parsed, limit=limit
        )
        total = count_architectures(session, chosen.id, filter=parsed)
    if json_:
        typer.echo(json.dumps([row_dict(row) for row in page.rows]))
        return
    title = (
        f"experiment {chosen.id} ({chosen.name}): {len(page.rows)} of {total} architectures"
        + (f" matching {parsed}" if parsed.terms else "")
        + f", by {'-' if descending else ''}{key}"
    )
    stdout().print(architectures_table(page.rows, title=title))


@command
def show(
    architecture: Annotated[str, typer.Argument(help="Architecture id (see `smash ls`).")],
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show an architecture: a diagram per block, its size, scores and retrains."""
    architecture_id = parse_id(architecture, "architecture")
    database = open_db(db)
    with database.session() as session:
        detail = architecture_detail(session, architecture_id)
        experiment = get_experiment(session, detail.experiment_id)
    if json_:
        typer.echo(
            json.dumps(
                {
                    **row_dict(detail.row),
                    "experiment_id": detail.experiment_id,
                    "spec": json.loads(detail.spec),
                    "scores": [
                        {**_plain(score.__dict__), "created_at": score.created_at.isoformat()}
                        for score in detail.scores
                    ],
                    "retrains": [_retrain_dict(retrain) for retrain in detail.retrains],
                }
            )
        )
        return
    image_size = (
        experiment.config.get("image_size") if isinstance(experiment.config, dict) else None
    )
    stdout().print(architecture_report(detail, experiment, image_size))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if not key.startswith("_")}


def _retrain_dict(retrain: RetrainInfo) -> dict[str, Any]:
    return {
        "id": retrain.id,
        "job_id": retrain.job_id,
        "epochs": retrain.epochs,
        "best_val_acc": retrain.best_val_acc,
        "test_acc": retrain.test_acc,
        "curve": list(retrain.curve),
        "weights_path": retrain.weights_path,
        "created_at": retrain.created_at.isoformat(),
        "finished_at": None if retrain.finished_at is None else retrain.finished_at.isoformat(),
    }
