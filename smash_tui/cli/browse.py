"""Commands that read results: ``experiments``, ``ls``, ``show`` and ``export``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.config import INT_MAX
from smash_tui.cli.common import (
    EXIT_USAGE,
    DbOption,
    ExperimentOption,
    JsonOption,
    command,
    fail,
    open_db,
    parse_id,
    resolve_experiment,
    stderr,
    stdout,
)
from smash_tui.cli.render import (
    architecture_report,
    architectures_table,
    experiments_table,
    percent,
    plural,
    row_dict,
)
from storage.models import Job
from storage.queries import (
    RetrainInfo,
    architecture_detail,
    count_architectures,
    list_architectures,
    list_experiments,
    parse_filter,
    parse_sort,
)
from storage.records import get_experiment, latest_train_checkpoint


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
            help="Sort field (id, err, loss, params, flops, depth, ops, acc); '-' prefix descends."
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


_SNIPPET = '''"""Rebuild architecture {architecture_id} of experiment {experiment!r} and load its weights.

Weights: {weights_note}
Needs torch and the smash package (its `engine`). The model takes float images
(N, {in_channels}, {image_size}, {image_size}) with values in [0, 1], normalised with MEAN and STD below
(the training split's per-channel statistics): see `normalise`.

    python load_model.py    # rebuilds the model and classifies a random batch
"""

from pathlib import Path

import torch

from engine.arch import Architecture
from engine.network import build_model

HERE = Path(__file__).resolve().parent
NUM_CLASSES = {num_classes}
IN_CHANNELS = {in_channels}
IMAGE_SIZE = {image_size}
MEAN = {mean}
STD = {std}
CLASSES = {classes}


def load_model(device: str = "cpu") -> torch.nn.Module:
    """The network of architecture.json with the weights of weights.pt, in eval mode."""
    arch = Architecture.from_json((HERE / "architecture.json").read_text())
    model = build_model(arch, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    state = torch.load(HERE / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], shape (N, C, H, W), normalised as in training."""
    mean = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


if __name__ == "__main__":
    model = load_model()
    with torch.no_grad():
        logits = model(normalise(torch.rand(4, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)))
    print([CLASSES[i] for i in logits.argmax(1).tolist()])
'''


def _best_retrain(retrains: tuple[RetrainInfo, ...]) -> RetrainInfo | None:
    finished = [
        retrain
        for retrain in retrains
        if retrain.test_acc is not None
        and retrain.weights_path is not None
        and Path(retrain.weights_path).is_file()
    ]
    return max(finished, key=lambda retrain: (retrain.test_acc, retrain.id), default=None)


@command
def export(
    architecture: Annotated[str, typer.Argument(help="Architecture id (see `smash ls`).")],
    directory: Annotated[
        Path, typer.Argument(help="Folder to write into (created; must be empty).")
    ],
    db: DbOption = None,
) -> None:
    """Write architecture.json, weights.pt (a state_dict) and load_model.py into a folder.

    The weights are those of the architecture's best finished retrain. An
    architecture never retrained gets the weights SMASH generates for it (what its
    score measured, not trained on their own); the snippet says which.
    """
    from engine.arch import Architecture
    from engine.checkpoint import load_weights, save_weights
    from engine.errors import ConfigError
    from engine.jobs import get_dataset, smash_initialised_model
    from engine.params import ExperimentSpec, config_from_dict
    from engine.score import ScoreConfig

    architecture_id = parse_id(architecture, "architecture")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(f"{directory} exists and is not an empty folder", EXIT_USAGE)
    database = open_db(db)
    with database.session() as session:
        detail = architecture_detail(session, architecture_id)
        experiment = get_experiment(session, detail.experiment_id)
        hypernet = latest_train_checkpoint(session, experiment.id)
        # The generated weights are rebuilt as the newest score against that HyperNet
        # measured them: its z seed and BatchNorm recalibration.
        newest = next(
            (
                score
                for score in reversed(detail.scores)
                if hypernet is not None and score.checkpoint_id == hypernet.id and score.job_id is not None
            ),
            None,
        )
        job = session.get(Job, newest.job_id) if newest is not None else None
        score_params = job.params.get("score") if job is not None else None
    spec = ExperimentSpec.from_record(experiment.search_space, experiment.config, experiment.seed)
    try:
        score_config = config_from_dict(ScoreConfig, score_params or {"seed": experiment.seed}, "score")
    except ConfigError as error:
        fail(f"architecture {architecture_id}: its scoring job's settings cannot be read: {error}")
    arch = Architecture.from_json(detail.spec)
    best = _best_retrain(detail.retrains)
    data = get_dataset(spec.data)
    # Everything is loaded and checked before the folder is touched.
    if best is not None:
        assert best.weights_path is not None
        weights_file = Path(best.weights_path)
        load_weights(weights_file)
        model = None
        note = (
            f"retrained from scratch for {plural(len(best.curve), 'epoch')} (retrain {best.id}, job "
            f"{best.job_id}); test accuracy {percent(best.test_acc)}%."
        )
    else:
        if hypernet is None:
            fail(
                f"architecture {architecture_id} was never retrained and experiment "
                f"{experiment.id} has no trained HyperNet to generate its weights"
            )
        model = smash_initialised_model(
            spec, arch, Path(hypernet.path), score=score_config, data=data
        )
        note = (
            f"NOT trained on their own: generated by the SMASH HyperNet (checkpoint "
            f"{hypernet.id}), as scored by the search. Retrain (`smash retrain "
            f"{architecture_id}`) for real weights."
        )
    snippet = _SNIPPET.format(
        architecture_id=architecture_id,
        experiment=experiment.name,
        weights_note=note,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        mean=tuple(round(value, 6) for value in data.mean),
        std=tuple(round(value, 6) for value in data.std),
        classes=tuple(data.classes),
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "architecture.json").write_text(arch.to_json(indent=2) + "\n")
    if model is None:
        shutil.copyfile(weights_file, directory / "weights.pt")
    else:
        save_weights(model, directory / "weights.pt")
    (directory / "load_model.py").write_text(snippet)
    stderr().print(f"exported architecture {architecture_id} to {directory}: weights {note}")
