"""``smash search`` and ``smash demo``: create an experiment, train its HyperNet, search.

Every option's default is the engine's (``engine.plans.SearchRequest``, whose fields
read their defaults off the engine configs); a test fails if one drifts. Settings are
checked before the database or the data set is touched, the data set's shape is read
from its headers (``engine.probe``), then the experiment and its jobs are written in
one transaction. Without ``--detach`` a worker runs them here with progress bars.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Annotated, Any

import typer
from rich.text import Text
from sqlalchemy import select

from engine.config import HYPERNET_SIZES, STRATEGIES
from engine.params import check_int, config_to_dict
from engine.plans import (
    DEMO_RETRAIN,
    DEMO_SEARCH,
    DEMO_TOP,
    SearchRequest,
    plan_retrain,
    plan_search,
)
from engine.probe import DataShape, probe_dataset
from engine.spaces import PRESETS
from engine.truth import TRUTH_COLUMNS
from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    DetachOption,
    DeviceOption,
    JsonOption,
    ThreadsOption,
    check_device,
    command,
    fail,
    hand_over,
    open_db,
    run_foreground,
    stderr,
    stdout,
)
from smash_tui.cli.render import architectures_table, percent, plural
from smash_tui.submit import CreatedSearch, check_search, queue_retrain, queue_search, unique_name
from storage.db import Database
from storage.models import Retrain
from storage.queries import list_architectures

DEFAULT = SearchRequest()

# Options `search` and `demo` share (each with its own default).
EpochsOption = Annotated[int, typer.Option(help="HyperNet training epochs.")]
MaxStepsOption = Annotated[int | None, typer.Option(help="Stop HyperNet training after this many steps.")]
BatchSizeOption = Annotated[int, typer.Option(help="HyperNet training batch size.")]
CheckpointEveryOption = Annotated[int, typer.Option(help="HyperNet steps between checkpoints.")]
EvalArchsOption = Annotated[int, typer.Option(help="Random architectures validated at each HyperNet epoch end.")]
ScoreImagesOption = Annotated[int | None, typer.Option(help="Validation images per score [default: all].")]
SyntheticTrainOption = Annotated[int, typer.Option(help="Synthetic training images (synthetic data set only).")]
SyntheticTestOption = Annotated[int, typer.Option(help="Synthetic test images (synthetic data set only).")]
ArchsOption = Annotated[int, typer.Option(help="Architectures to score (the search budget).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the whole experiment.")]
CommitEveryOption = Annotated[int, typer.Option(help="Scored architectures per database commit.", hidden=True)]


def dataset_shape(request: SearchRequest) -> DataShape:
    """The shape of the request's data set; a torchvision set is downloaded first if missing.

    Raises:
        DatasetError: the data set is missing (offline: the error names the folder),
            unreadable or cannot be trained on.
    """
    data = plan_search(request).data
    shape = probe_dataset(data)
    if shape is not None:
        return shape
    from engine.data import load_dataset  # downloads; only torchvision sets get here

    dataset = load_dataset(data)
    return DataShape(
        len(dataset.train), len(dataset.val), len(dataset.test),
        dataset.num_classes, dataset.in_channels, dataset.image_size,
    )


def create_search(db: Database, request: SearchRequest) -> CreatedSearch:
    """Check a request, read its data set's shape, then write the experiment and its jobs."""
    plan = plan_search(request)
    return queue_search(db, request, plan, dataset_shape(request))


def _best_table(db: Database, experiment_id: int, limit: int, title: str) -> Any:
    with db.session() as session:
        rows = list_architectures(session, experiment_id, sort="err", limit=limit).rows
    return architectures_table(rows, title=title), rows


@command
def search(
    dataset: Annotated[
        str, typer.Option(help="Data set: synthetic, cifar10, cifar100, stl10, npz:PATH or folder:PATH.")
    ] = DEFAULT.dataset,
    preset: Annotated[str, typer.Option(help=f"Search-space preset: {', '.join(PRESETS)}.")] = DEFAULT.preset,
    hypernet: Annotated[
        str, typer.Option(help=f"HyperNet capacity: {', '.join(HYPERNET_SIZES)}.")
    ] = DEFAULT.hypernet,
    epochs: EpochsOption = DEFAULT.epochs,
    max_steps: MaxStepsOption = DEFAULT.max_steps,
    batch_size: BatchSizeOption = DEFAULT.batch_size,
    lr: Annotated[float, typer.Option(help="HyperNet Adam learning rate.")] = DEFAULT.lr,
    checkpoint_every: CheckpointEveryOption = DEFAULT.checkpoint_every,
    eval_archs: EvalArchsOption = DEFAULT.eval_archs,
    archs: ArchsOption = DEFAULT.archs,
    strategy: Annotated[
        str, typer.Option(help=f"Search strategy: {', '.join(STRATEGIES)} (staged: random, perturb, Markov).")
    ] = DEFAULT.strategy,
    racing: Annotated[
        bool, typer.Option(help="Score by successive halving over validation images.")
    ] = DEFAULT.racing,
    race_top_k: Annotated[int, typer.Option(help="Racing keeps this many best exact.")] = DEFAULT.race_top_k,
    search_batch: Annotated[
        int | None, typer.Option(help="Candidates scored together [default: 16, 64 racing].")
    ] = DEFAULT.search_batch,
    chunk: Annotated[
        int | None,
        typer.Option(help="Candidates per chunk that workers share [default: 8, 16 racing]."),
    ] = DEFAULT.chunk,
    score_images: ScoreImagesOption = DEFAULT.score_images,
    z_draws: Annotated[int, typer.Option(help="Random z draws averaged per score.")] = DEFAULT.z_draws,
    bn_recalibration: Annotated[
        int, typer.Option(help="BN recalibration batches per score, 0: off.")
    ] = DEFAULT.bn_recalibration,
    commit_every: CommitEveryOption = DEFAULT.commit_every,
    seed: SeedOption = DEFAULT.seed,
    name: Annotated[
        str | None, typer.Option(help="Experiment name [default: data set, preset and time].")
    ] = DEFAULT.name,
    val_size: Annotated[
        float | None, typer.Option(help="Validation split carved from train: a fraction or a count.")
    ] = DEFAULT.val_size,
    synthetic_train: SyntheticTrainOption = DEFAULT.synthetic_train,
    synthetic_test: SyntheticTestOption = DEFAULT.synthetic_test,
    image_size: Annotated[
        int | None, typer.Option(help="Resize images to this square side.")
    ] = DEFAULT.image_size,
    data_root: Annotated[
        str | None, typer.Option(help="Download folder of torchvision data sets.")
    ] = DEFAULT.data_root,
    weights: Annotated[
        str,
        typer.Option(help="hypernet: SMASH's generated weights; shared: plain weight sharing (nb201 presets)."),
    ] = DEFAULT.weights,
    truth: Annotated[
        str | None,
        typer.Option(help="A benchmark table (CSV, NAS-Bench-201 layout) giving each scored cell's accuracy."),
    ] = DEFAULT.truth,
    truth_column: Annotated[
        str | None,
        typer.Option(help=f"The table's accuracy column: {', '.join(TRUTH_COLUMNS)} [default: from --dataset]."),
    ] = DEFAULT.truth_column,
    detach_: DetachOption = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Create an experiment: train a HyperNet, then search architectures with it."""
    given = locals()  # every option named like a SearchRequest field
    request = SearchRequest(**{field.name: given[field.name] for field in dataclasses.fields(SearchRequest)})
    # Settings first: a usage error needs neither the database nor the data set.
    plan = plan_search(request)
    check_device(device, threads)
    # The data set too, before the database: a refused search creates no database.
    shape = dataset_shape(request)
    check_search(plan, shape)
    database = open_db(db)
    err = stderr()
    created = queue_search(database, request, plan, shape)
    err.print(
        f"experiment {created.experiment_id} ({created.name}): queued HyperNet training "
        f"(job {created.train_job_id}) and search (job {created.search_job_id})"
    )
    pid = hand_over(database, created.job_ids, detach_=detach_, device=device, threads=threads, console=err)
    if detach_:
        err.print("follow with `smash jobs`; browse with `smash ls`")
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
        title = f"best architectures of experiment {created.experiment_id}"
        stdout().print(_best_table(database, created.experiment_id, 10, title)[0])


@command
def demo(
    epochs: EpochsOption = DEMO_SEARCH.epochs,
    max_steps: MaxStepsOption = DEMO_SEARCH.max_steps,
    lr: Annotated[
        float, typer.Option(help="HyperNet Adam learning rate (above the paper's 1e-3: the demo's run is short).")
    ] = DEMO_SEARCH.lr,
    archs: ArchsOption = DEMO_SEARCH.archs,
    retrain_epochs: Annotated[int, typer.Option(help="Epochs to retrain the best one.")] = DEMO_RETRAIN.epochs,
    top: Annotated[int, typer.Option(help="Rows of the final table.")] = DEMO_TOP,
    batch_size: BatchSizeOption = DEMO_SEARCH.batch_size,
    retrain_batch_size: Annotated[
        int, typer.Option(help="Retraining batch size.")
    ] = DEMO_RETRAIN.batch_size,
    synthetic_train: SyntheticTrainOption = DEMO_SEARCH.synthetic_train,
    synthetic_test: SyntheticTestOption = DEMO_SEARCH.synthetic_test,
    val_size: Annotated[
        float | None, typer.Option(help="Validation split: a fraction or a count [default: 10%].")
    ] = DEMO_SEARCH.val_size,
    score_images: ScoreImagesOption = DEMO_SEARCH.score_images,
    eval_archs: EvalArchsOption = DEMO_SEARCH.eval_archs,
    checkpoint_every: CheckpointEveryOption = DEMO_SEARCH.checkpoint_every,
    commit_every: CommitEveryOption = DEMO_SEARCH.commit_every,
    seed: SeedOption = DEMO_SEARCH.seed,
    name: Annotated[str | None, typer.Option(help="Experiment name [default: demo-<time>].")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    db: DbOption = None,
) -> None:
    """A whole SMASH run on the synthetic data set with the tiny preset, in a few minutes.

    Trains a small HyperNet, scores random architectures with generated weights,
    retrains the best one from scratch and shows its test accuracy beside its score.
    """
    request = dataclasses.replace(
        DEMO_SEARCH,
        epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
        checkpoint_every=checkpoint_every, eval_archs=eval_archs, archs=archs,
        score_images=score_images, commit_every=commit_every, seed=seed, val_size=val_size,
        synthetic_train=synthetic_train, synthetic_test=synthetic_test, name=name,
    )  # fmt: skip
    retrain = dataclasses.replace(DEMO_RETRAIN, epochs=retrain_epochs, batch_size=retrain_batch_size, seed=seed)
    check_int(top, "--top", low=1)
    plan_search(request)
    plan_retrain(config_to_dict(retrain))
    check_device(device, threads)
    shape = dataset_shape(request)
    check_search(plan_search(request), shape)
    if retrain_batch_size > shape.train_images:
        fail(f"--retrain-batch-size {retrain_batch_size} is more than the {shape.train_images} training images", EXIT_USAGE)
    database = open_db(db)
    err = stderr()
    if request.name is None:
        with database.session() as session:
            request = dataclasses.replace(
                request, name=unique_name(session, f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
            )
    created = queue_search(database, request, plan_search(request), shape)
    err.print(
        f"demo experiment {created.experiment_id} ({created.name}): training a HyperNet on "
        f"{synthetic_train} synthetic images, then scoring {archs} architectures"
    )
    run_foreground(database, created.job_ids, device=device, threads=threads, console=err)
    with database.session() as session:
        best = list_architectures(session, created.experiment_id, sort="err", limit=1).rows
        if not best:
            fail("the search scored no architectures")
        retrain_job = queue_retrain(session, best[0].id, config_to_dict(retrain)).id
        session.commit()
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
