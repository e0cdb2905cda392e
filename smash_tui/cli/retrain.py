"""``smash retrain`` (train an architecture from scratch) and ``smash score`` (score again).

Both check their settings with the engine's rules and queue through
``smash_tui.submit``, as the app does; without ``--detach`` a worker runs the job here.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy import select

from engine.config import RetrainConfig, ScoreConfig
from engine.params import check_int, config_from_dict, parse_id
from engine.plans import plan_retrain
from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    DetachOption,
    DeviceOption,
    ExperimentOption,
    JsonOption,
    ThreadsOption,
    check_device,
    command,
    fail,
    hand_over,
    open_db,
    resolve_experiment,
    stderr,
    stdout,
)
from smash_tui.cli.render import architectures_table, percent, plural, row_dict
from smash_tui.submit import queue_retrain, queue_score
from storage.models import Retrain
from storage.queries import list_architectures
from storage.summaries import architecture_rows

RETRAIN = RetrainConfig()
SCORE = ScoreConfig()


@command
def retrain(
    architecture: Annotated[str, typer.Argument(help="Architecture id (see `smash ls`).")],
    epochs: Annotated[int, typer.Option(help="Training epochs (the paper's protocol: 300).")] = RETRAIN.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per SGD step.")] = RETRAIN.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")] = RETRAIN.lr,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and batch order.")] = RETRAIN.seed,
    detach_: DetachOption = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Train an architecture from scratch and measure its test accuracy."""
    architecture_id = parse_id(architecture, "architecture")
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    plan_retrain(settings)
    check_device(device, threads)
    database = open_db(db)
    with database.session() as session:
        job_id = queue_retrain(session, architecture_id, settings).id
        session.commit()
    err = stderr()
    err.print(f"queued a retrain of architecture {architecture_id} for {plural(epochs, 'epoch')} (job {job_id})")
    pid = hand_over(database, [job_id], detach_=detach_, device=device, threads=threads, console=err)
    with database.session() as session:
        result = session.scalars(select(Retrain).where(Retrain.job_id == job_id)).first()
    if json_:
        typer.echo(
            json.dumps(
                {
                    "job_id": job_id,
                    "architecture_id": architecture_id,
                    "worker_pid": pid,
                    "retrain_id": None if result is None else result.id,
                    "test_acc": None if result is None else result.test_acc,
                    "best_val_acc": None if result is None else result.best_val_acc,
                }
            )
        )
    elif result is not None and result.test_acc is not None:
        stdout().print(
            f"architecture {architecture_id} retrained for {plural(result.epochs, 'epoch')}: "
            f"test accuracy {percent(result.test_acc)}% "
            f"(best validation accuracy {percent(result.best_val_acc)}%); "
            f"weights in {result.weights_path}"
        )


@command
def score(
    architectures: Annotated[
        list[str] | None, typer.Argument(help="Architecture ids (see `smash ls`); or use --top.", show_default=False)
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", help="Score the experiment's N best architectures again.", show_default=False)
    ] = None,
    experiment: ExperimentOption = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="HyperNet checkpoint id [default: the experiment's newest when the job runs].", show_default=False),
    ] = None,
    z_draws: Annotated[int, typer.Option(help="Random z draws averaged per score.")] = SCORE.z_draws,
    bn_recalibration: Annotated[
        int, typer.Option(help="BN recalibration batches per score, 0: off.")
    ] = SCORE.bn_recalibration_batches,
    score_images: Annotated[
        int | None, typer.Option(help="Validation images per score [default: all].")
    ] = SCORE.images,
    seed: Annotated[int, typer.Option(help="Seed of the z draws and recalibration batches.")] = SCORE.seed,
    detach_: DetachOption = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Score architectures again against a HyperNet checkpoint, e.g. with more z draws.

    A score is kept per architecture, checkpoint and scoring method, so scoring with
    other settings (z draws, recalibration, images) adds a score beside the search's.
    """
    if bool(architectures) == (top is not None):
        fail("give architecture ids or --top N (one of the two)", EXIT_USAGE)
    if top is not None:
        check_int(top, "--top", low=1)
    ids = [parse_id(part, "architecture") for text in architectures or [] for part in text.split(",") if part.strip()]
    checkpoint_id = None if checkpoint is None else parse_id(checkpoint, "checkpoint")
    settings = {"z_draws": z_draws, "bn_recalibration_batches": bn_recalibration, "images": score_images, "seed": seed}
    config_from_dict(ScoreConfig, settings, "score")
    check_device(device, threads)
    database = open_db(db)
    with database.session() as session:
        if top is not None:
            chosen = resolve_experiment(session, experiment)
            ids = [row.id for row in list_architectures(session, chosen.id, sort="err", limit=top).rows]
            if not ids:
                fail(f"experiment {chosen.id} has no architectures yet")
        job_id = queue_score(session, ids, settings, checkpoint_id=checkpoint_id).id
        session.commit()
    err = stderr()
    err.print(f"queued a scoring of {plural(len(ids), 'architecture')} (job {job_id})")
    pid = hand_over(database, [job_id], detach_=detach_, device=device, threads=threads, console=err)
    with database.session() as session:
        rows = architecture_rows(session, ids)
    if json_:
        typer.echo(json.dumps({"job_id": job_id, "worker_pid": pid, "architectures": [row_dict(r) for r in rows]}))
    elif not detach_:
        stdout().print(architectures_table(rows, title=f"architectures scored by job {job_id} (their newest score)"))
