"""Commands that start work: ``search``, ``demo``, ``retrain`` and ``worker``.

``search`` and ``retrain`` validate everything (settings, the data set, the database)
before writing anything, queue their jobs, then run a worker in the foreground with
progress bars until the jobs end, or with ``--detach`` leave them to a background
worker (launching one when none is alive).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    DeviceOption,
    JsonOption,
    ThreadsOption,
    command,
    detach,
    fail,
    open_db,
    parse_id,
    run_foreground,
    stderr,
    stdout,
)
from smash_tui.cli.render import architectures_table, percent, plural
from smash_tui.submit import enqueue_retrain
from storage.db import Database
from storage.models import Experiment, Retrain
from storage.queries import list_architectures
from storage.queue import enqueue
from storage.records import create_experiment, get_architecture, get_experiment

HYPERNETS = ("paper", "small")
STRATEGY_NAMES = "random, perturb, markov, evolution or paper"


@dataclass(frozen=True)
class SearchRequest:
    """What ``smash search`` (or ``smash demo``) was asked to do."""

    dataset: str = "synthetic"  # synthetic, cifar10, cifar100, stl10, npz:PATH or folder:PATH
    preset: str = "small"  # search-space preset: tiny, small, paper or paper-varop
    hypernet: str = "paper"  # HyperNet capacity: paper or small
    epochs: int = 100  # HyperNet training epochs
    max_steps: int | None = None  # HyperNet step budget
    batch_size: int = 50  # HyperNet training batch
    lr: float = 1e-3  # HyperNet Adam learning rate
    checkpoint_every: int = 500  # HyperNet steps between checkpoints
    eval_archs: int = 4  # random architectures evaluated at each epoch end
    archs: int = 500  # search budget: architectures to score
    strategy: str = "random"  # search strategy
    racing: bool = False  # successive halving instead of full scoring
    race_top_k: int = 10  # racing keeps the ranking's head this long exact
    search_batch: int | None = None  # candidates per scoring batch (None: 16, 64 when racing)
    score_images: int | None = None  # validation images per score (None: all)
    z_draws: int | None = None  # z draws averaged per score (None: the engine's default)
    bn_recalibration: int | None = None  # BN recalibration batches (None: the engine's default)
    commit_every: int = 8  # scored architectures per commit
    seed: int = 0  # seed of the whole experiment
    val_size: float | None = None  # validation carve-out: fraction or count (None: usual)
    synthetic_train: int | None = None  # synthetic training images (None: the default)
    synthetic_test: int | None = None  # synthetic test images (None: the default)
    image_size: int | None = None  # resize images to this square side
    data_root: str | None = None  # download cache of torchvision data sets


@dataclass(frozen=True)
class CreatedSearch:
    """What ``create_search`` wrote."""

    experiment_id: int  # the new experiment
    name: str  # its name
    train_job_id: int  # the HyperNet training job
    search_job_id: int  # the search job, depending on the training job

    @property
    def job_ids(self) -> tuple[int, int]:
        return (self.train_job_id, self.search_job_id)


def _plan(request: SearchRequest) -> tuple[Any, Any, Any, Any]:
    """Validated engine configs for a request, before anything is loaded or written.

    Returns:
        (search space, DataConfig, HyperNetConfig, SearchParams).
    """
    from engine.data import DataConfig, DatasetError
    from engine.errors import ConfigError
    from engine.hypernet import HyperNetConfig
    from engine.params import SearchParams, config_from_dict
    from engine.score import RaceConfig, ScoreConfig
    from engine.search import SearchConfig
    from engine.space import get_preset

    space = get_preset(request.preset)
    if request.hypernet not in HYPERNETS:
        fail(
            f"unknown HyperNet size {request.hypernet!r} (one of {', '.join(HYPERNETS)})",
            EXIT_USAGE,
        )
    hypernet = (
        HyperNetConfig()
        if request.hypernet == "paper"
        else HyperNetConfig(growth=(6, 6), layers=(2, 2))
    )
    data_fields: dict[str, Any] = {"dataset": request.dataset}
    for field, value in (
        ("val_size", request.val_size),
        ("synthetic_train", request.synthetic_train),
        ("synthetic_test", request.synthetic_test),
        ("image_size", request.image_size),
        ("root", request.data_root),
    ):
        if value is not None:
            data_fields[field] = value
    try:
        data = DataConfig(**data_fields)
    except DatasetError as exc:
        raise ConfigError(str(exc)) from None
    batch = request.search_batch or (64 if request.racing else 16)
    search = config_from_dict(
        SearchConfig,
        {
            "strategy": request.strategy,
            "architectures": request.archs,
            "batch": batch,
            "seed": request.seed,
        },
        "search",
    )
    score_fields: dict[str, Any] = {"images": request.score_images, "seed": request.seed}
    # Left out when not given, so that the engine's (tuned) defaults apply.
    if request.z_draws is not None:
        score_fields["z_draws"] = request.z_draws
    if request.bn_recalibration is not None:
        score_fields["bn_recalibration_batches"] = request.bn_recalibration
    score = config_from_dict(ScoreConfig, score_fields, "score")
    race = config_from_dict(RaceConfig, {"top_k": request.race_top_k}, "racing")
    try:
        params = SearchParams(
            search=search,
            score=score,
            racing=request.racing,
            race=race,
            commit_every=request.commit_every,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return space, data, hypernet, params


def _train_params(request: SearchRequest, train_images: int) -> Any:
    from engine.params import TrainParams, config_from_dict
    from engine.train import TrainConfig

    steps = request.epochs * max(train_images // max(request.batch_size, 1), 1)
    if request.max_steps is not None:
        steps = min(steps, request.max_steps)
    # About fifty progress reports per run, never fewer than one every twenty steps.
    report_every = max(1, min(20, steps // 50))
    train = config_from_dict(
        TrainConfig,
        {
            "epochs": request.epochs,
            "max_steps": request.max_steps,
            "batch_size": request.batch_size,
            "lr": request.lr,
            "checkpoint_every": request.checkpoint_every,
            "eval_archs": request.eval_archs,
            "report_every": report_every,
            "seed": request.seed,
        },
        "train",
    )
    return TrainParams(train=train)


def _unique_name(session: Session, base: str) -> str:
    taken = set(session.scalars(select(Experiment.name).where(Experiment.name.like(f"{base}%"))))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def create_search(db: Database, request: SearchRequest, name: str | None = None) -> CreatedSearch:
    """Validate a search request, then create its experiment and queue train + search jobs.

    Everything that can be checked is checked first (settings, the data set, batch
    sizes); the experiment and both jobs are written in one transaction.

    Args:
        db: The open database.
        request: What to search.
        name: The experiment's name; None makes one up from the data set and preset.

    Raises:
        ConfigError, InvalidSearchSpace: A setting cannot work (usage error).
        DatasetError: The data set cannot be loaded.
        StorageError: E.g. the name is taken.
    """
    from engine.jobs import check_batch_fits, prepare_experiment

    space, data, hypernet, search = _plan(request)
    spec, dataset = prepare_experiment(space, data, hypernet, request.seed)
    train = _train_params(request, len(dataset.train))
    check_batch_fits(dataset, train.train.batch_size, "HyperNet training")
    with db.session() as session:
        if name is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = _unique_name(session, f"{data.kind}-{request.preset}-{stamp}")
        experiment = create_experiment(
            session,
            name,
            dataset=request.dataset,
            preset=request.preset,
            search_space=space.to_dict(),
            config={**spec.config(), "hypernet_size": request.hypernet},
            seed=request.seed,
        )
        train_job = enqueue(session, experiment.id, "train", train.to_params())
        search_job = enqueue(
            session, experiment.id, "search", search.to_params(), depends_on=train_job.id
        )
        session.commit()
        return CreatedSearch(experiment.id, experiment.name, train_job.id, search_job.id)


def _best_table(db: Database, experiment_id: int, limit: int, title: str) -> Any:
    with db.session() as session:
        rows = list_architectures(session, experiment_id, sort="err", limit=limit).rows
    return architectures_table(rows, title=title), rows


# --- search ------------------------------------------------------------------------------------


@command
def search(
    dataset: Annotated[
        str,
        typer.Option(
            help="Data set: synthetic, cifar10, cifar100, stl10, npz:PATH or folder:PATH."
        ),
    ] = "synthetic",
    preset: Annotated[
        str, typer.Option(help="Search-space preset: tiny, small, paper or paper-varop.")
    ] = "small",
    hypernet: Annotated[str, typer.Option(help="HyperNet size: paper or small.")] = "paper",
    epochs: Annotated[int, typer.Option(help="HyperNet training epochs.")] = 100,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop HyperNet training after this many steps.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="HyperNet training batch size.")] = 50,
    lr: Annotated[float, typer.Option(help="HyperNet Adam learning rate.")] = 1e-3,
    checkpoint_every: Annotated[
        int, typer.Option(help="HyperNet steps between checkpoints.")
    ] = 500,
    eval_archs: Annotated[
        int, typer.Option(help="Random architectures validated at each HyperNet epoch end.")
    ] = 4,
    archs: Annotated[int, typer.Option(help="Architectures to score (the search budget).")] = 500,
    strategy: Annotated[str, typer.Option(help=f"Search strategy: {STRATEGY_NAMES}.")] = "random",
    racing: Annotated[
        bool, typer.Option(help="Score by successive halving over validation images.")
    ] = False,
    race_top_k: Annotated[int, typer.Option(help="Racing keeps this many best exact.")] = 10,
    search_batch: Annotated[
        int | None, typer.Option(help="Candidates scored together [default: 16, 64 racing].")
    ] = None,
    score_images: Annotated[
        int | None, typer.Option(help="Validation images per score [default: all].")
    ] = None,
    z_draws: Annotated[
        int | None, typer.Option(help="Random z draws averaged per score [default: engine's].")
    ] = None,
    bn_recalibration: Annotated[
        int | None,
        typer.Option(help="BN recalibration batches per score, 0: off [default: engine's]."),
    ] = None,
    commit_every: Annotated[
        int, typer.Option(help="Scored architectures per database commit.", hidden=True)
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the whole experiment.")] = 0,
    name: Annotated[
        str | None, typer.Option(help="Experiment name [default: data set, preset and time].")
    ] = None,
    val_size: Annotated[
        float | None,
        typer.Option(help="Validation split carved from train: a fraction or a count."),
    ] = None,
    synthetic_train: Annotated[
        int | None, typer.Option(help="Synthetic training images (synthetic data set only).")
    ] = None,
    synthetic_test: Annotated[
        int | None, typer.Option(help="Synthetic test images (synthetic data set only).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Resize images to this square side.")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option(help="Download folder of torchvision data sets.")
    ] = None,
    detach_: Annotated[
        bool,
        typer.Option("--detach", help="Queue the jobs for a background worker and return at once."),
    ] = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Create an experiment: train a HyperNet, then search architectures with it."""
    request = SearchRequest(
        dataset=dataset,
        preset=preset,
        hypernet=hypernet,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        checkpoint_every=checkpoint_every,
        eval_archs=eval_archs,
        archs=archs,
        strategy=strategy,
        racing=racing,
        race_top_k=race_top_k,
        search_batch=search_batch,
        score_images=score_images,
        z_draws=z_draws,
        bn_recalibration=bn_recalibration,
        commit_every=commit_every,
        seed=seed,
        val_size=val_size,
        synthetic_train=synthetic_train,
        synthetic_test=synthetic_test,
        image_size=image_size,
        data_root=data_root,
    )
    # Settings first: a usage error needs neither the database nor the data set.
    _plan(request)
    _check_device(device, threads)
    database = open_db(db)
    err = stderr()
    created = create_search(database, request, name)
    err.print(
        f"experiment {created.experiment_id} ({created.name}): queued HyperNet training "
        f"(job {created.train_job_id}) and search (job {created.search_job_id})"
    )
    pid = None
    if detach_:
        pid = detach(database, device=device, threads=threads, console=err)
        err.print("follow with `smash jobs`; browse with `smash ls`")
    else:
        run_foreground(database, created.job_ids, device=device, threads=threads, console=err)
    if json_:
        typer.echo(
            json.dumps(
                {
                    "experiment_id": created.experiment_id,
                    "name": created.name,
                    "job_ids": list(created.job_ids),
                    "worker_pid": pid,
                }
            )
        )
    elif not detach_:
        table, _ = _best_table(
            database,
            created.experiment_id,
            10,
            f"best architectures of experiment {created.experiment_id}",
        )
        stdout().print(table)


def _check_device(device: str, threads: int | None) -> None:
    """Refuse a device this machine lacks before anything is queued."""
    from engine.device import resolve_device

    resolve_device(device)
    del threads  # validated by the option itself


# --- demo --------------------------------------------------------------------------------------


@command
def demo(
    epochs: Annotated[int, typer.Option(help="HyperNet training epochs.")] = 6,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop HyperNet training after this many steps.")
    ] = None,
    lr: Annotated[
        float,
        typer.Option(help="HyperNet Adam learning rate (above the paper's 1e-3: the demo's run is short)."),
    ] = 5e-3,
    archs: Annotated[int, typer.Option(help="Architectures to score.")] = 60,
    retrain_epochs: Annotated[int, typer.Option(help="Epochs to retrain the best one.")] = 5,
    top: Annotated[int, typer.Option(help="Rows of the final table.")] = 10,
    batch_size: Annotated[int, typer.Option(help="HyperNet training batch size.")] = 50,
    retrain_batch_size: Annotated[int, typer.Option(help="Retraining batch size.")] = 50,
    synthetic_train: Annotated[int, typer.Option(help="Synthetic training images.")] = 5000,
    synthetic_test: Annotated[int, typer.Option(help="Synthetic test images.")] = 1000,
    val_size: Annotated[
        float | None, typer.Option(help="Validation split: a fraction or a count [default: 10%].")
    ] = None,
    score_images: Annotated[
        int | None, typer.Option(help="Validation images per score [default: all].")
    ] = None,
    eval_archs: Annotated[
        int, typer.Option(help="Random architectures validated at each HyperNet epoch end.")
    ] = 2,
    checkpoint_every: Annotated[
        int, typer.Option(help="HyperNet steps between checkpoints.")
    ] = 100,
    commit_every: Annotated[
        int, typer.Option(help="Scored architectures per database commit.", hidden=True)
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the whole run.")] = 0,
    name: Annotated[
        str | None, typer.Option(help="Experiment name [default: demo-<time>].")
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    db: DbOption = None,
) -> None:
    """A whole SMASH run on the synthetic data set with the tiny preset, in a few minutes.

    Trains a small HyperNet, scores random architectures with generated weights,
    retrains the best one from scratch and shows its test accuracy beside its score.
    """
    from engine.jobs import check_batch_fits, get_dataset
    from engine.params import config_from_dict
    from engine.retrain import RetrainConfig

    request = SearchRequest(
        dataset="synthetic",
        preset="tiny",
        hypernet="paper",
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        eval_archs=eval_archs,
        archs=archs,
        score_images=score_images,
        commit_every=commit_every,
        seed=seed,
        val_size=val_size,
        synthetic_train=synthetic_train,
        synthetic_test=synthetic_test,
    )
    retrain_settings = {"epochs": retrain_epochs, "batch_size": retrain_batch_size, "seed": seed}
    config_from_dict(RetrainConfig, retrain_settings, "retrain")
    if top < 1:
        fail(f"--top must be at least 1, got {top}", EXIT_USAGE)
    _, data, _, _ = _plan(request)
    _check_device(device, threads)
    check_batch_fits(get_dataset(data), retrain_batch_size, "retrain")
    database = open_db(db)
    err = stderr()
    if name is None:
        with database.session() as session:
            name = _unique_name(session, f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    created = create_search(database, request, name)
    err.print(
        f"demo experiment {created.experiment_id} ({created.name}): training a HyperNet on "
        f"{synthetic_train} synthetic images, then scoring {archs} architectures"
    )
    run_foreground(database, created.job_ids, device=device, threads=threads, console=err)
    with database.session() as session:
        best = list_architectures(session, created.experiment_id, sort="err", limit=1).rows
        if not best:
            fail("the search scored no architectures")
        job = enqueue_retrain(session, best[0].id, retrain_settings)
        session.commit()
        retrain_job = job.id
    err.print(
        f"retraining the best architecture ({best[0].id}, SMASH error {percent(best[0].err)}%) "
        f"from scratch for {plural(retrain_epochs, 'epoch')} (job {retrain_job})"
    )
    run_foreground(database, [retrain_job], device=device, threads=threads, console=err)
    table, rows = _best_table(
        database,
        created.experiment_id,
        top,
        f"best architectures of experiment {created.experiment_id} by SMASH score "
        "(err: validation error with generated weights; acc: test accuracy retrained from scratch)",
    )
    out = stdout()
    out.print(table)
    retrained = next((row for row in rows if row.id == best[0].id), best[0])
    with database.session() as session:
        retrain_row = session.scalars(select(Retrain).where(Retrain.job_id == retrain_job)).first()
    accuracy = retrain_row.test_acc if retrain_row is not None else retrained.acc
    out.print(
        Text.assemble(
            (f"architecture {best[0].id}", "bold"),
            f": SMASH error {percent(best[0].err)}% with generated weights; retrained from "
            f"scratch for {plural(retrain_epochs, 'epoch')}: test accuracy {percent(accuracy)}% "
            f"(test error {percent(None if accuracy is None else 100 - accuracy)}%)",
        )
    )
    out.print(
        f"next: `smash show {best[0].id}`, `smash ls -e {created.experiment_id}`, "
        f"`smash export {best[0].id} DIR`"
    )


# --- retrain -----------------------------------------------------------------------------------


@command
def retrain(
    architecture: Annotated[str, typer.Argument(help="Architecture id (see `smash ls`).")],
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Images per SGD step.")] = 50,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and batch order.")] = 0,
    detach_: Annotated[
        bool,
        typer.Option("--detach", help="Queue the job for a background worker and return at once."),
    ] = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Train an architecture from scratch and measure its test accuracy."""
    from engine.jobs import check_batch_fits, get_dataset
    from engine.params import ExperimentSpec, config_from_dict
    from engine.retrain import RetrainConfig

    architecture_id = parse_id(architecture, "architecture")
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    config_from_dict(RetrainConfig, settings, "retrain")
    _check_device(device, threads)
    database = open_db(db)
    with database.session() as session:
        row = get_architecture(session, architecture_id)
        experiment = get_experiment(session, row.experiment_id)
    spec = ExperimentSpec.from_record(experiment.search_space, experiment.config, experiment.seed)
    check_batch_fits(get_dataset(spec.data), batch_size, "retrain")
    with database.session() as session:
        job = enqueue_retrain(session, architecture_id, settings)
        session.commit()
        job_id = job.id
    err = stderr()
    err.print(
        f"queued a retrain of architecture {architecture_id} for {plural(epochs, 'epoch')} "
        f"(job {job_id})"
    )
    pid = None
    if detach_:
        pid = detach(database, device=device, threads=threads, console=err)
    else:
        run_foreground(database, [job_id], device=device, threads=threads, console=err)
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


# --- worker ------------------------------------------------------------------------------------


def _kinds(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    kinds = tuple(part.strip() for part in value.split(",") if part.strip())
    return kinds or None


@command
def worker(
    device: DeviceOption = "auto",
    once: Annotated[bool, typer.Option(help="Exit when no claimable job is left.")] = False,
    kinds: Annotated[
        str | None,
        typer.Option(help="Only these job kinds, comma-separated: train,score,search,retrain."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty queue.")] = 2.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 3.0,
    stale_after: Annotated[
        float, typer.Option(help="Requeue running jobs silent for this many seconds.")
    ] = 60.0,
    threads: ThreadsOption = None,
    db: DbOption = None,
) -> None:
    """Claim queued jobs and run them until stopped (SIGTERM or Ctrl-C requeues the current one)."""
    from smash_tui.cli.render import JobProgress
    from smash_tui.runner.worker import Worker, WorkerConfig

    config = WorkerConfig(
        device=device,
        kinds=_kinds(kinds),
        once=once,
        poll_s=poll,
        heartbeat_s=heartbeat,
        stale_after_s=stale_after,
        threads=threads,
    )
    database = open_db(db)
    interactive = sys.stderr.isatty()
    console = Console(stderr=True)
    progress = JobProgress(console) if interactive else None
    runner = Worker(database, config, observer=progress)
    restore = runner.install_signal_handlers()
    try:
        if progress is not None:
            with progress:
                code = runner.run()
        else:
            code = runner.run()
    finally:
        restore()
    if interactive:
        console.print(f"[dim]worker log: {runner.log_path}[/dim]")
    raise typer.Exit(code)
