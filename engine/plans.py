"""What users ask for, checked and turned into job configs, without loading a data set.

`smash search` and the app's new-search form build a `SearchRequest` (its field
defaults are every option's default) and call `plan_search`; `smash retrain` and the
app's retrain dialog call `plan_retrain`. Both raise `ConfigError` with one line
naming the setting, before anything is queued. Torch-free, like `engine.params`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.config import (
    DEFAULT_HYPERNET,
    HYPERNET_SIZES,
    PATH_KINDS,
    RACING_BATCH,
    DataConfig,
    HyperNetConfig,
    RaceConfig,
    RetrainConfig,
    ScoreConfig,
    SearchConfig,
    TrainConfig,
)
from engine.errors import ConfigError, DatasetError
from engine.nb201.space import (
    KIND as NB201_KIND,  # the kind that benchmark tables and weight sharing serve
)
from engine.params import (
    COMMIT_EVERY,
    WEIGHT_MODES,
    SearchParams,
    TrainParams,
    check_batch,
    check_int,
    check_text,
    check_typed,
    config_from_dict,
)
from engine.space import InvalidSearchSpace
from engine.spaces import Space, get_preset
from engine.truth import TRUTH_COLUMNS, TruthConfig, column_for, load_truth

_Config = TypeVar("_Config")




@dataclass(frozen=True)
class SearchRequest:
    """A new experiment as `smash search` and the app's new-search form ask for it.

    Every default is read off the engine config that owns the setting, so the command
    line, the form and the job JSON cannot drift apart (a test checks the first two).
    """

    dataset: str = DataConfig.dataset  # synthetic, cifar10, cifar100, stl10, npz:PATH or folder:PATH
    preset: str = "small"  # search-space preset (engine.space.PRESETS)
    hypernet: str = DEFAULT_HYPERNET  # HyperNet capacity, a key of HYPERNET_SIZES
    epochs: int = TrainConfig.epochs  # HyperNet training epochs
    max_steps: int | None = TrainConfig.max_steps  # HyperNet step budget
    batch_size: int = TrainConfig.batch_size  # HyperNet training batch
    lr: float = TrainConfig.lr  # HyperNet Adam learning rate
    checkpoint_every: int = TrainConfig.checkpoint_every  # HyperNet steps between checkpoints
    eval_archs: int = TrainConfig.eval_archs  # random architectures evaluated at each epoch end
    archs: int = SearchConfig.architectures  # search budget: architectures to score
    strategy: str = SearchConfig.strategy  # search strategy (engine.config.STRATEGIES)
    racing: bool = False  # successive halving over validation images instead of full scores
    race_top_k: int = RaceConfig.top_k  # racing keeps the ranking's head this long exact
    search_batch: int | None = None  # candidates per scoring batch (None: SearchConfig.batch, RACING_BATCH racing)
    chunk: int | None = None  # candidates per chunk job that workers share (None: CHUNK_RACING racing, else CHUNK_FULL)
    score_images: int | None = ScoreConfig.images  # validation images per score (None: all)
    z_draws: int = ScoreConfig.z_draws  # z draws averaged per score
    bn_recalibration: int = ScoreConfig.bn_recalibration_batches  # BN recalibration batches (0: off)
    commit_every: int = COMMIT_EVERY  # scored architectures per database commit
    seed: int = TrainConfig.seed  # seed of the whole experiment
    val_size: float | None = DataConfig.val_size  # validation carve-out: fraction or count (None: usual)
    synthetic_train: int = DataConfig.synthetic_train  # synthetic training images
    synthetic_test: int = DataConfig.synthetic_test  # synthetic test images
    image_size: int | None = DataConfig.image_size  # resize images to this square side
    data_root: str | None = DataConfig.root  # download cache of torchvision data sets
    name: str | None = None  # experiment name (None: made up from the data set, preset and time)
    weights: str = "hypernet"  # one of WEIGHT_MODES ("shared": the weight-sharing baseline, nb201 only)
    truth: str | None = None  # a benchmark table (CSV) of the preset's cells: each score's truth
    truth_column: str | None = None  # its accuracy column, a key of TRUTH_COLUMNS (None: from the data set)


@dataclass(frozen=True)
class SearchPlan:
    """A validated search request: what the experiment and its two jobs will hold."""

    space: Space  # the preset's search space
    data: DataConfig  # the data set and its carve-out
    hypernet: HyperNetConfig  # the HyperNet's capacity
    train: TrainParams  # the train job's parameters
    search: SearchParams  # the search job's parameters
    weights: str = "hypernet"  # one of WEIGHT_MODES
    truth: TruthConfig | None = None  # the benchmark table, checked


def plan_search(request: SearchRequest) -> SearchPlan:
    """Check every setting of a request and build the experiment's configs; reads no data.

    Raises:
        ConfigError: the first setting that cannot work, with its ``field`` set to the
            request field's name.
    """
    fields = typing.get_type_hints(SearchRequest)
    for item in dataclasses.fields(SearchRequest):
        check_typed(getattr(request, item.name), fields[item.name], item.name.replace("_", "-"), item.name)
    check_int(request.seed, "seed", field="seed", low=0)
    if request.name is not None:
        check_text(request.name, "name", field="name")
    if request.data_root is not None:
        check_text(request.data_root, "data-root", field="data_root")
    try:
        space = get_preset(request.preset)
    except InvalidSearchSpace as exc:
        raise ConfigError(str(exc), "preset") from None
    if request.hypernet not in HYPERNET_SIZES:
        raise ConfigError(
            f"unknown HyperNet size {request.hypernet!r} (one of {', '.join(HYPERNET_SIZES)})", "hypernet"
        )
    data = _data_config(request)
    train = _request_config(TrainConfig, "train", request, _TRAIN_FIELDS)
    search = _request_config(SearchConfig, "search", request, _SEARCH_FIELDS)
    score = _request_config(ScoreConfig, "score", request, _SCORE_FIELDS)
    race = _request_config(RaceConfig, "race", request, {"top_k": "race_top_k"})
    weights, truth = _weights_and_truth(request, space, data)
    check_int(request.commit_every, "commit-every", field="commit_every", low=1)
    if request.chunk is not None:
        check_int(request.chunk, "chunk", field="chunk", low=1)
    params = SearchParams(
        search=search, score=score, racing=request.racing, race=race, commit_every=request.commit_every, chunk=request.chunk
    )
    return SearchPlan(space, data, HYPERNET_SIZES[request.hypernet], TrainParams(train), params, weights, truth)


# Which request field gives each config field (config field -> request field).
_TRAIN_FIELDS = {
    name: name for name in ("epochs", "max_steps", "batch_size", "lr", "checkpoint_every", "eval_archs", "seed")
}
_SEARCH_FIELDS = {"strategy": "strategy", "architectures": "archs", "batch": "search_batch", "seed": "seed"}
_SCORE_FIELDS = {
    "images": "score_images", "z_draws": "z_draws", "bn_recalibration_batches": "bn_recalibration", "seed": "seed"
}


def _request_config(cls: type[_Config], what: str, request: SearchRequest, fields: dict[str, str]) -> _Config:
    """A config built from request fields; an error names the request's option."""
    values = {key: getattr(request, name) for key, name in fields.items()}
    if cls is SearchConfig and request.search_batch is None:  # racing needs many candidates at once
        values["batch"] = RACING_BATCH if request.racing else SearchConfig.batch
    try:
        return config_from_dict(cls, values, what)
    except ConfigError as exc:
        detail = str(exc).split(": ", 1)[-1]
        if exc.field is None:
            raise ConfigError(detail) from None
        field = fields.get(exc.field, exc.field)
        detail = detail.removeprefix(f"{cls.__name__}.{exc.field} ")  # type: ignore[attr-defined]
        raise ConfigError(f"--{field.replace('_', '-')} {detail}", field) from None


def _weights_and_truth(request: SearchRequest, space: Space, data: DataConfig) -> tuple[str, TruthConfig | None]:
    """The weights mode and the benchmark table, checked against the space and the data set."""
    if request.weights not in WEIGHT_MODES:
        raise ConfigError(f"--weights must be one of {', '.join(WEIGHT_MODES)}, got {request.weights!r}", "weights")
    if request.weights == "shared" and space.kind != NB201_KIND:
        raise ConfigError("--weights shared (plain weight sharing) needs an nb201 preset", "weights")
    if request.truth is None:
        if request.truth_column is not None:
            raise ConfigError("--truth-column needs --truth (a benchmark table)", "truth_column")
        return request.weights, None
    if space.kind != NB201_KIND:
        raise ConfigError("--truth needs an nb201 preset: the table lists NAS-Bench-201 cells", "truth")
    if not Path(request.truth).expanduser().is_file():
        raise ConfigError(f"--truth: {request.truth} does not exist or is not a file", "truth")
    column = request.truth_column or column_for(data)
    if column is None:
        raise ConfigError(
            f"--truth-column is needed ({', '.join(TRUTH_COLUMNS)}): data set {data.dataset} does not say "
            "which of the table's accuracies to compare with",
            "truth_column",
        )
    truth = TruthConfig(str(Path(request.truth).expanduser().resolve()), column)
    load_truth(truth)  # a malformed table is refused here, before anything is written
    return request.weights, truth


def _data_config(request: SearchRequest) -> DataConfig:
    values: dict[str, Any] = {
        "dataset": request.dataset,
        "val_size": request.val_size,
        "synthetic_train": request.synthetic_train,
        "synthetic_test": request.synthetic_test,
        "image_size": request.image_size,
        "root": request.data_root,
        "split_seed": DataConfig.split_seed,
    }
    try:
        data = DataConfig(**values)
    except DatasetError as exc:
        raise ConfigError(str(exc), "dataset" if "data set" in str(exc) else None) from None
    if data.kind in PATH_KINDS:
        assert data.path is not None
        path = data.path.expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"data set {request.dataset!r}: {path} does not exist", "dataset")
        if data.kind == "folder" and not path.is_dir():
            raise ConfigError(f"data set {request.dataset!r}: {path} is not a folder", "dataset")
        # Absolute: the worker that reads it may run in another directory.
        data = dataclasses.replace(data, dataset=f"{data.kind}:{path}")
    return data


def plan_retrain(settings: Mapping[str, Any], train_images: int | None = None) -> RetrainConfig:
    """A retrain's config from the settings a user gave (a partial RetrainConfig).

    Args:
        settings: e.g. {"epochs": 20, "batch_size": 50, "lr": 0.1, "seed": 0}.
        train_images: the experiment's training split, when known: one batch must fit.

    Raises:
        ConfigError: naming the first setting that cannot work.
    """
    if "seed" in settings:
        check_int(settings["seed"], "seed", field="seed", low=0)
    config = config_from_dict(RetrainConfig, settings, "retrain")
    check_batch(config.batch_size, train_images, "retrain")
    return config


# The demo's budget: the whole method in a few minutes on a laptop CPU.
DEMO_SEARCH = SearchRequest(
    dataset="synthetic",
    preset="tiny",
    epochs=6,
    lr=5e-3,  # above the paper's 1e-3: the run is short
    archs=60,
    eval_archs=2,
    checkpoint_every=100,
)
DEMO_RETRAIN = RetrainConfig(epochs=5)
DEMO_TOP = 10  # rows of the demo's final table



__all__ = ["DEMO_RETRAIN", "DEMO_SEARCH", "DEMO_TOP", "SearchPlan", "SearchRequest", "plan_retrain", "plan_search"]
