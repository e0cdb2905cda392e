"""``smash export``: an architecture, its weights and a loader script, in a folder.

The folder holds ``architecture.json``, ``weights.pt`` (a plain ``state_dict``),
``model.json`` (everything else: the experiment's name, the classes, the
normalisation, what the weights are) and ``load_model.py``. The script is the same
text for every export: no user text (an experiment's name, a class name from a
folder) is ever written into code, so running a colleague's export cannot run
anything its names were built to inject; it reads ``model.json`` at run time with
``json``, and the weights with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from smash_tui.cli.common import EXIT_USAGE, DbOption, command, fail, open_db, parse_id, stderr
from smash_tui.cli.render import percent, plural
from storage.db import Database
from storage.models import Job
from storage.queries import RetrainInfo, architecture_detail
from storage.records import get_experiment, latest_train_checkpoint

# What `load_model.py` says, constant: nothing of the export is interpolated into it.
LOADER = '''"""Rebuild the exported architecture and load its weights (see model.json for what they are).

Needs torch and the smash package (its `engine`). The model takes float images
(N, C, H, W) with values in [0, 1], normalised with the mean and std in model.json
(the training split's per-channel statistics): see `normalise`.

    python load_model.py    # rebuilds the model, says what its weights are, classifies a random batch
"""

import json
from pathlib import Path

import torch

from engine.kinds import kind_of, space_from_dict

HERE = Path(__file__).resolve().parent
INFO = json.loads((HERE / "model.json").read_text(encoding="utf-8"))


def load_model(device: str = "cpu") -> torch.nn.Module:
    """The network of architecture.json with the weights of weights.pt, in eval mode."""
    space = space_from_dict(INFO["space"])  # the search space it was scored in: its size, its kind
    kind = kind_of(space)
    arch = kind.parse((HERE / "architecture.json").read_text(encoding="utf-8"), space)
    model = kind.build_model(arch, INFO["num_classes"], INFO["in_channels"], space)
    state = torch.load(HERE / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], shape (N, C, H, W), normalised as in training."""
    mean = torch.tensor(INFO["mean"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(INFO["std"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


if __name__ == "__main__":
    model = load_model()
    print(f"architecture {INFO['architecture_id']} of experiment {INFO['experiment']!r}: weights {INFO['weights']}")
    side = INFO["image_size"]
    with torch.no_grad():
        logits = model(normalise(torch.rand(4, INFO["in_channels"], side, side)))
    print([INFO["classes"][i] for i in logits.argmax(1).tolist()])
'''


def _best_retrain(retrains: tuple[RetrainInfo, ...], database: Database) -> RetrainInfo | None:
    finished = [
        retrain
        for retrain in retrains
        if retrain.test_acc is not None
        and retrain.weights_path is not None
        and database.file_path(retrain.weights_path).is_file()
    ]
    return max(finished, key=lambda retrain: (retrain.test_acc, retrain.id), default=None)


def _check_folder(directory: Path) -> None:
    """Refuse a folder that is not empty, or that cannot be created and written, before any work."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(f"{directory} exists and is not an empty folder", EXIT_USAGE)
    parent = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        fail(f"cannot create {directory}: {parent} is not a folder", EXIT_USAGE)
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"cannot write into {parent}: permission denied", EXIT_USAGE)


@command
def export(
    architecture: Annotated[str, typer.Argument(help="Architecture id (see `smash ls`).")],
    directory: Annotated[Path, typer.Argument(help="Folder to write into (created; must be empty).")],
    db: DbOption = None,
) -> None:
    """Write architecture.json, weights.pt (a state_dict), model.json and load_model.py into a folder.

    The weights are those of the architecture's best finished retrain. An
    architecture never retrained gets the weights SMASH generates for it (what its
    score measured, not trained on their own); model.json says which.
    """
    from engine.checkpoint import load_weights, save_weights
    from engine.config import ScoreConfig
    from engine.errors import ConfigError
    from engine.jobs import get_dataset, smash_initialised_model
    from engine.kinds import kind_of
    from engine.params import ExperimentSpec, config_from_dict

    architecture_id = parse_id(architecture, "architecture")
    _check_folder(directory)
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
    arch = kind_of(spec.space).parse(detail.spec, spec.space)
    best = _best_retrain(detail.retrains, database)
    data = get_dataset(spec.data)
    # Everything is loaded and checked before the folder is touched.
    if best is not None:
        assert best.weights_path is not None
        weights_file = database.file_path(best.weights_path)
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
        hypernet_file = database.readable_file(hypernet.path, "HyperNet checkpoint")
        model = smash_initialised_model(spec, arch, hypernet_file, score=score_config, data=data)
        note = (
            f"NOT trained on their own: generated by the SMASH HyperNet (checkpoint "
            f"{hypernet.id}), as scored by the search. Retrain (`smash retrain "
            f"{architecture_id}`) for real weights."
        )
    info: dict[str, Any] = {
        "architecture_id": architecture_id,
        "experiment": experiment.name,
        "weights": note,
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "image_size": spec.image_size,
        "mean": [round(value, 6) for value in data.mean],
        "std": [round(value, 6) for value in data.std],
        "classes": list(data.classes),
        "space": spec.space.to_dict(),
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "architecture.json").write_text(arch.to_json(indent=2) + "\n", encoding="utf-8")
        if model is None:
            shutil.copyfile(weights_file, directory / "weights.pt")
        else:
            save_weights(model, directory / "weights.pt")
        (directory / "model.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (directory / "load_model.py").write_text(LOADER, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the export into {directory}: {exc.strerror or exc}")
    stderr().print(f"exported architecture {architecture_id} to {directory}: weights {note}")
