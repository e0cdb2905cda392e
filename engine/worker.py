"""The torch side of the background worker: one job, run with the engine loops.

A job arrives as plain values: the experiment (`ExperimentSpec`, stored as JSON on the
experiment) and the job's parameters (`TrainParams`, `SearchParams`, `ScoreParams`,
`RetrainParams`, stored as JSON on the job). It reports through a `JobReporter`:
progress, metric points, activity-log lines, checkpoints and scored architectures. The
database side (`smash_tui.worker_process`) implements the reporter with `storage`;
nothing here knows about SQL, terminals or processes.

Job parameters, as JSON (every config may be partial; missing fields take the
dataclass defaults)::

    train    {"train": TrainConfig}
    search   {"search": SearchConfig, "score": ScoreConfig, "racing": bool,
              "race": RaceConfig, "commit_every": int}
    score    {"architecture_ids": [int, ...], "score": ScoreConfig, "checkpoint_id": int | null}
    retrain  {"architecture_id": int, "retrain": RetrainConfig}

Every loop polls `JobReporter.should_stop` between steps; a stopped loop has written
its checkpoint, and running the same job again resumes from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from engine.arch import Architecture
from engine.checkpoint import CheckpointError
from engine.cost import architecture_cost
from engine.data import DataConfig, Dataset, DeviceImages, load_dataset
from engine.device import autocast_context
from engine.events import CheckpointSaved, TrainEval, TrainProgress
from engine.hypernet import HyperNetConfig
from engine.network import DerivedNet, build_model
from engine.retrain import RetrainConfig, RetrainEpoch, RetrainResult, retrain
from engine.score import (
    RaceConfig,
    Racer,
    Score,
    ScoreConfig,
    Scorer,
    arch_seed,
    bn_recalibrated,
    recalibration_batches,
)
from engine.search import Result, ScoreBatch, SearchConfig, run_search
from engine.space import SearchSpace
from engine.train import TrainConfig, build_smash, load_smash, train_hypernet

_Config = TypeVar("_Config")

# Seconds after which buffered scores are handed over even if fewer than commit_every.
SCORE_FLUSH_S = 5.0


class ConfigError(ValueError):
    """A setting or job parameter that cannot work; the message is one line for the user."""


class DeviceError(ConfigError):
    """A device that does not exist on this machine."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Configs as JSON ---------------------------------------------------------------------------


def config_from_dict(cls: type[_Config], data: Mapping[str, Any] | None, what: str) -> _Config:
    """Build a frozen config dataclass from (possibly partial) JSON.

    Args:
        cls: The dataclass, e.g. TrainConfig.
        data: Field values; lists become tuples; missing fields keep their defaults.
        what: What the config is, named in error messages (e.g. "train").

    Raises:
        ConfigError: An unknown field, a value of the wrong type, or a value the config refuses.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what}: expected an object of settings, got {type(data).__name__}")
    fields = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{what}: unknown setting(s) {', '.join(unknown)}")
    values = {
        key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
    }
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {first_line(exc)}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-able values (tuples become lists when serialised)."""
    return dataclasses.asdict(config)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    return value


def _params(params: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise ConfigError(f"{kind} job: params must be an object, got {type(params).__name__}")
    return params


@dataclass(frozen=True)
class ExperimentSpec:
    """What every job of an experiment shares: the space, the data and the HyperNet."""

    space: SearchSpace  # what sampled architectures may contain
    data: DataConfig  # the data set and its validation carve-out
    hypernet: HyperNetConfig  # capacity of the HyperNet
    seed: int  # seed of every random choice in the experiment
    num_classes: int  # classifier outputs, from the data set
    in_channels: int  # image channels, from the data set
    image_size: int  # side of the square images in pixels, from the data set

    def config(self) -> dict[str, Any]:
        """The experiment's ``config`` JSON (the space and the seed are stored beside it)."""
        return {
            "data": config_to_dict(self.data),
            "hypernet": config_to_dict(self.hypernet),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }

    @classmethod
    def from_record(
        cls, search_space: Mapping[str, Any], config: Mapping[str, Any], seed: int
    ) -> ExperimentSpec:
        """The spec of a stored experiment.

        Args:
            search_space: The experiment's ``search_space`` JSON.
            config: The experiment's ``config`` JSON (see ``config``).
            seed: The experiment's seed.

        Raises:
            ConfigError: The stored values do not describe an experiment.
        """
        try:
            space = SearchSpace.from_dict(dict(search_space))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"search space: {first_line(exc)}") from None
        try:
            sizes = {
                key: _int(config[key], key) for key in ("num_classes", "in_channels", "image_size")
            }
        except KeyError as exc:
            raise ConfigError(f"experiment config lacks {exc.args[0]!r}") from None
        return cls(
            space=space,
            data=config_from_dict(DataConfig, config.get("data"), "data"),
            hypernet=config_from_dict(HyperNetConfig, config.get("hypernet"), "hypernet"),
            seed=_int(seed, "seed"),
            **sizes,
        )


def prepare_experiment(
    space: SearchSpace, data: DataConfig, hypernet: HyperNetConfig, seed: int
) -> tuple[ExperimentSpec, Dataset]:
    """Load the data set once to learn its shape and check it can be searched on.

    Called before anything is written, so that a bad data set never leaves an
    experiment behind.

    Raises:
        DatasetError: The data set cannot be loaded.
        ConfigError: It has no validation images to score architectures on.
    """
    dataset = get_dataset(data)
    if len(dataset.val) == 0:
        raise ConfigError(
            f"data set {data.dataset} has an empty validation split: "
            "architectures are scored on it, so set a validation size above 0"
        )
    spec = ExperimentSpec(
        space=space,
        data=data,
        hypernet=hypernet,
        seed=seed,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        image_size=dataset.image_size,
    )
    return spec, dataset


def check_batch_fits(dataset: Dataset, batch_size: int, what: str) -> None:
    """Refuse a batch size larger than the training split (the loops drop partial batches).

    Raises:
        ConfigError: Not one full batch fits.
    """
    if len(dataset.train) < batch_size:
        raise ConfigError(
            f"{what}: the training split has {len(dataset.train)} images, "
            f"fewer than one batch of {batch_size}"
        )


# Job parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainParams:
    """A ``train`` job: HyperNet training."""

    train: TrainConfig = TrainConfig()  # the training loop's settings

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {"train": config_to_dict(self.train)}

    @classmethod
    def from_params(cls, params: Any) -> TrainParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "train")
        return cls(train=config_from_dict(TrainConfig, params.get("train"), "train"))


@dataclass(frozen=True)
class SearchParams:
    """A ``search`` job: search strategies over a trained HyperNet."""

    search: SearchConfig = SearchConfig()  # strategy and budget
    score: ScoreConfig = ScoreConfig()  # how each candidate is scored
    racing: bool = False  # successive halving over validation images instead of full scores
    race: RaceConfig = RaceConfig()  # the racing settings, when racing
    commit_every: int = 8  # scored architectures per database commit (what a crash may lose)

    def __post_init__(self) -> None:
        if self.commit_every < 1:
            raise ConfigError(f"commit_every must be at least 1, got {self.commit_every}")

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {
            "search": config_to_dict(self.search),
            "score": config_to_dict(self.score),
            "racing": self.racing,
            "race": config_to_dict(self.race),
            "commit_every": self.commit_every,
        }

    @classmethod
    def from_params(cls, params: Any) -> SearchParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "search")
        racing = params.get("racing", False)
        if not isinstance(racing, bool):
            raise ConfigError(f"racing must be true or false, got {racing!r}")
        return cls(
            search=config_from_dict(SearchConfig, params.get("search"), "search"),
            score=config_from_dict(ScoreConfig, params.get("score"), "score"),
            racing=racing,
            race=config_from_dict(RaceConfig, params.get("race"), "race"),
            commit_every=_int(params.get("commit_every", 8), "commit_every"),
        )


@dataclass(frozen=True)
class ScoreParams:
    """A ``score`` job: (re)score given architectures against a HyperNet checkpoint."""

    architecture_ids: tuple[int, ...]  # the architectures to score
    score: ScoreConfig = ScoreConfig()  # e.g. more z draws, BN recalibration
    checkpoint_id: int | None = None  # the checkpoint; None: the experiment's latest

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {
            "architecture_ids": list(self.architecture_ids),
            "score": config_to_dict(self.score),
            "checkpoint_id": self.checkpoint_id,
        }

    @classmethod
    def from_params(cls, params: Any) -> ScoreParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "score")
        ids = params.get("architecture_ids")
        if not isinstance(ids, list) or not ids:
            raise ConfigError("score job: architecture_ids must be a non-empty list of ids")
        checkpoint = params.get("checkpoint_id")
        return cls(
            architecture_ids=tuple(_int(ident, "architecture id") for ident in ids),
            score=config_from_dict(ScoreConfig, params.get("score"), "score"),
            checkpoint_id=None if checkpoint is None else _int(checkpoint, "checkpoint_id"),
        )


@dataclass(frozen=True)
class RetrainParams:
    """A ``retrain`` job: train one architecture from scratch."""

    architecture_id: int  # the architecture to retrain
    retrain: RetrainConfig = RetrainConfig()  # optimiser, schedule and epochs

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {"architecture_id": self.architecture_id, "retrain": config_to_dict(self.retrain)}

    @classmethod
    def from_params(cls, params: Any) -> RetrainParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "retrain")
        if "architecture_id" not in params:
            raise ConfigError("retrain job: architecture_id is missing")
        return cls(
            architecture_id=_int(params["architecture_id"], "architecture_id"),
            retrain=config_from_dict(RetrainConfig, params.get("retrain"), "retrain"),
        )


# Reporting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredArchitecture:
    """A scored architecture with everything the browser shows about it."""

    spec: str  # the architecture as compact JSON
    hash: str  # its canonical hash
    params: int  # trainable parameters of the derived network
    flops: int  # forward FLOPs per image of the derived network
    depth: int  # layers on the longest path
    num_ops: int  # ops in the graph
    source: str  # how the search found it: random, perturb, markov, evolution, rescore
    error: float  # validation error with generated weights, percent
    loss: float  # mean validation loss
    images: int  # validation images it was measured on
    z_draws: int  # z draws averaged
    method: str  # how it was measured (see score_method)


class JobReporter(Protocol):
    """Where a running job reports; the worker writes it all to the database."""

    def progress(self, fraction: float, text: str, eta_s: float | None = None) -> None:
        """Fraction done (0..1), a short status line and the estimated seconds left."""

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Points of the job's time series at one step (or epoch)."""

    def event(self, message: str, level: str = "info") -> None:
        """A line for the activity log."""

    def checkpoint(self, step: int, path: str, metrics: Mapping[str, float]) -> None:
        """A checkpoint file was written atomically."""

    def scored(self, results: Sequence[ScoredArchitecture]) -> None:
        """A batch of newly scored architectures, to be committed together."""

    def should_stop(self) -> bool:
        """True when the job must checkpoint and return (pause, cancel, shutdown)."""


def score_method(base: str, config: ScoreConfig) -> str:
    """The score's method label: "full" or "racing", plus what differs from one plain pass.

    Scores are unique per (architecture, checkpoint, method), so a rescoring with more
    z draws, BN recalibration or another image count must carry another label.
    """
    parts = [base]
    if config.images is not None:
        parts.append(f"n{config.images}")
    if config.z_draws > 1:
        parts.append(f"z{config.z_draws}")
    if config.bn_recalibration_batches:
        parts.append(f"bn{config.bn_recalibration_batches}")
    return "+".join(parts)


def describe(
    arch: Architecture, spec: ExperimentSpec, score: Score, source: str, config: ScoreConfig
) -> ScoredArchitecture:
    """Size, cost and score of an architecture, ready to record."""
    cost = architecture_cost(arch, spec.num_classes, spec.in_channels, spec.image_size)
    return ScoredArchitecture(
        spec=arch.to_json(),
        hash=arch.hash,
        params=cost.params,
        flops=cost.flops,
        depth=arch.depth,
        num_ops=arch.num_ops,
        source=source,
        error=score.error,
        loss=score.loss,
        images=score.images,
        z_draws=score.z_draws,
        method=score_method(score.method, config),
    )


class _ScoreBuffer:
    """Hands scored architectures to the reporter in small batches (a crash loses one batch)."""

    def __init__(self, reporter: JobReporter, every: int) -> None:
        self.reporter = reporter
        self.every = every
        self.items: list[ScoredArchitecture] = []
        self.last_flush = time.monotonic()

    def add(self, item: ScoredArchitecture) -> None:
        self.items.append(item)
        if len(self.items) >= self.every or time.monotonic() - self.last_flush >= SCORE_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.items:
            self.reporter.scored(self.items)
            self.items = []
        self.last_flush = time.monotonic()


# Devices and data ----------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """The device for a ``--device`` value: auto, cpu, cuda or cuda:N.

    Raises:
        DeviceError: An unknown name, or a GPU that this machine does not have.
    """
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise DeviceError(
            f"device {name!r} does not exist: this machine has {count} CUDA device(s)"
        )
    return torch.device(text)


def device_report() -> dict[str, Any]:
    """Torch version, CUDA availability and devices, for ``smash info``."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "threads": torch.get_num_threads(),
        "default_device": "cuda" if cuda else "cpu",
    }


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads (only when the user asks: torch picks well by default)."""
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


_datasets: dict[DataConfig, Dataset] = {}


def get_dataset(config: DataConfig) -> Dataset:
    """The loaded data set; the last one is kept, since a worker's jobs usually share it.

    Raises:
        DatasetError: It cannot be loaded.
    """
    if config not in _datasets:
        dataset = load_dataset(config)
        _datasets.clear()
        _datasets[config] = dataset
    return _datasets[config]


# The jobs ------------------------------------------------------------------------------------


def run_train(
    spec: ExperimentSpec,
    params: TrainParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    checkpoint_path: Path,
) -> bool:
    """Train the experiment's HyperNet, resuming from ``checkpoint_path`` when it exists.

    Metrics: loss, accuracy, lr, images_per_s at each report; val_error, val_loss at
    each epoch end.

    Returns:
        True when training finished; False when it stopped on request (checkpointed).

    Raises:
        DatasetError, ConfigError, CheckpointError, TrainingDiverged: the run cannot go on.
    """
    data = get_dataset(spec.data)
    check_batch_fits(data, params.train.batch_size, "HyperNet training")
    # The initial weights follow from the experiment's seed; the caller's RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = build_smash(spec.space, spec.num_classes, spec.in_channels, spec.hypernet, device)

    def on_progress(event: TrainProgress) -> None:
        reporter.metrics(
            event.step,
            {
                "loss": event.loss,
                "accuracy": event.accuracy,
                "lr": event.lr,
                "images_per_s": event.images_per_s,
            },
        )
        reporter.progress(
            event.step / max(event.total_steps, 1),
            f"step {event.step}/{event.total_steps} · loss {event.loss:.3f} · acc {event.accuracy:.1f}%",
            event.eta_s,
        )

    def on_eval(event: TrainEval) -> None:
        reporter.metrics(event.step, {"val_error": event.error, "val_loss": event.loss})
        reporter.event(
            f"HyperNet epoch {event.epoch}, step {event.step}: validation error {event.error:.2f}% "
            f"(loss {event.loss:.3f}) over {event.architectures} random architectures"
        )

    def on_checkpoint(event: CheckpointSaved) -> None:
        reporter.checkpoint(event.step, event.path, event.metrics)

    outcome = train_hypernet(
        net,
        data,
        params.train,
        checkpoint_path=checkpoint_path,
        on_progress=on_progress,
        on_eval=on_eval,
        on_checkpoint=on_checkpoint,
        should_stop=reporter.should_stop,
    )
    if outcome.finished and outcome.checkpoint is None:
        raise CheckpointError(f"training finished without writing {checkpoint_path}")
    return outcome.finished


def _scorer(
    spec: ExperimentSpec, config: ScoreConfig, device: torch.device, hypernet_path: Path
) -> Scorer:
    net, _ = load_smash(hypernet_path, device)
    data = get_dataset(spec.data)
    if len(data.val) == 0:
        raise ConfigError("the validation split is empty: there is nothing to score on")
    val = DeviceImages(data.val, device, data.mean, data.std)
    train = (
        DeviceImages(data.train, device, data.mean, data.std)
        if config.bn_recalibration_batches
        else None
    )
    return Scorer(net, val, config, train=train)


def run_search_job(
    spec: ExperimentSpec,
    params: SearchParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    hypernet_path: Path,
    known: Mapping[str, Score],
) -> bool:
    """Search over a trained HyperNet, reporting scored architectures in small batches.

    Args:
        spec: The experiment.
        params: Strategy, budget and scoring.
        reporter: Where results go.
        device: Where to score.
        hypernet_path: The HyperNet checkpoint to generate weights with.
        known: Scores already recorded against that checkpoint, by hash: never rescored,
            so a restarted search continues instead of starting over.

    Returns:
        True when the search ran to its end; False when it stopped on request.
    """
    scorer = _scorer(spec, params.score, device, hypernet_path)
    score_batch: ScoreBatch
    if params.racing:
        score_batch = Racer(scorer, params.race)  # every batch races against the best so far
    else:
        score_batch = scorer.score_many
    budget = params.search.budget
    buffer = _ScoreBuffer(reporter, params.commit_every)
    start = time.monotonic()
    state = {"new": 0, "best": math.inf}
    # A resumed search finds its earlier results among the known scores.
    already = min(len(known), budget)

    def on_result(result: Result) -> None:
        buffer.add(describe(result.arch, spec, result.score, result.source, params.score))
        state["new"] += 1
        if result.score.method == "full":  # a racing drop's partial error is no "best"
            state["best"] = min(state["best"], result.score.error)
        done = min(already + state["new"], budget)
        rate = state["new"] / max(time.monotonic() - start, 1e-9)
        reporter.progress(
            min(done / budget, 0.999),
            f"{done}/{budget} scored" + (f" · best {state['best']:.2f}%" if state["best"] < math.inf else ""),
            (budget - done) / rate if rate > 0 else None,
        )

    try:
        _, finished = run_search(
            spec.space,
            params.search,
            score_batch,
            known=dict(known),
            on_result=on_result,
            should_stop=reporter.should_stop,
        )
    finally:
        # Whatever was scored is kept, even when scoring the next one failed.
        buffer.flush()
    return finished


def run_score_job(
    spec: ExperimentSpec,
    params: ScoreParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    hypernet_path: Path,
    architectures: Sequence[Architecture],
) -> bool:
    """Score the given architectures (those not scored with this method yet).

    Returns:
        True when all were scored; False when it stopped on request.
    """
    scorer = _scorer(spec, params.score, device, hypernet_path)
    buffer = _ScoreBuffer(reporter, 8)
    try:
        for index, arch in enumerate(architectures):
            if reporter.should_stop():
                return False
            score = scorer.score(arch)
            buffer.add(describe(arch, spec, score, "rescore", params.score))
            reporter.progress(
                (index + 1) / len(architectures),
                f"{index + 1}/{len(architectures)} scored",
            )
    finally:
        buffer.flush()
    return True


def run_retrain_job(
    spec: ExperimentSpec,
    params: RetrainParams,
    arch: Architecture,
    reporter: JobReporter,
    *,
    device: torch.device,
    checkpoint_path: Path,
    weights_path: Path,
) -> RetrainResult | None:
    """Retrain an architecture from scratch, resuming from ``checkpoint_path`` when it exists.

    Metrics per epoch: train_loss, train_acc, val_acc, lr, images_per_s. The final
    weights go to ``weights_path`` as a plain ``state_dict``.

    Returns:
        The result, or None when the run stopped on request (checkpointed).

    Raises:
        DatasetError, RetrainError, CheckpointError: the run cannot go on.
    """
    data = get_dataset(spec.data)

    def on_epoch(event: RetrainEpoch) -> None:
        values = {
            "train_loss": event.train_loss,
            "train_acc": event.train_acc,
            "lr": event.lr,
            "images_per_s": event.images_per_s,
        }
        if event.val_acc is not None:
            values["val_acc"] = event.val_acc
        reporter.metrics(event.epoch, values)
        if event.epoch % params.retrain.checkpoint_every_epochs == 0 or event.epoch == event.epochs:
            reporter.checkpoint(event.epoch, str(checkpoint_path), values)
        val = f" · val {event.val_acc:.1f}%" if event.val_acc is not None else ""
        reporter.progress(
            event.epoch / event.epochs,
            f"epoch {event.epoch}/{event.epochs} · loss {event.train_loss:.3f}{val}",
            event.eta_s,
        )

    result = retrain(
        arch,
        data,
        params.retrain,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        should_stop=reporter.should_stop,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
    )
    if result is None:
        return None
    assert result.model is not None
    save_weights(result.model, weights_path)
    return result


# Weights -------------------------------------------------------------------------------------


def save_weights(model: nn.Module, path: Path) -> None:
    """Save a model's ``state_dict`` on the CPU, atomically (a temporary file, then a rename).

    Raises:
        CheckpointError: The file cannot be written.
    """
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write weights {path}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` saved by ``save_weights``, read without unpickling code.

    Raises:
        CheckpointError: The file is missing or unreadable.
    """
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types here (zip, pickle, EOF, OS)
        raise CheckpointError(f"weights file {path} is unreadable: {first_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} does not hold a state_dict")
    return state


def smash_initialised_model(
    spec: ExperimentSpec,
    arch: Architecture,
    hypernet_path: Path,
    *,
    score: ScoreConfig = ScoreConfig(bn_recalibration_batches=0),
    data: Dataset | None = None,
) -> DerivedNet:
    """The derived network of ``arch`` carrying the weights SMASH generates for it.

    The 1x1 weights come from the HyperNet with the first z draw that scoring with
    ``score`` uses; the rest are the shared weights' slices, and the BatchNorm
    statistics are the ones that scoring used: re-estimated on ``data``'s training
    images when ``score`` recalibrates them, else the shared ones. Not trained on its
    own: this is what the SMASH score measured.

    Raises:
        CheckpointError: The HyperNet checkpoint is missing, corrupt or of another space.
        ValueError: ``score`` recalibrates BatchNorm and no ``data`` was given.
    """
    net, _ = load_smash(hypernet_path, "cpu")
    if (net.num_classes, net.in_channels) != (spec.num_classes, spec.in_channels):
        raise CheckpointError(f"checkpoint {hypernet_path} was trained for another data set")
    if score.bn_recalibration_batches and data is None:
        raise ValueError("BatchNorm recalibration needs the data set")
    cpu = torch.device("cpu")
    model = build_model(arch, spec.num_classes, spec.in_channels)
    generator = torch.Generator().manual_seed(arch_seed(score.seed, arch, 0))
    # Generated and recalibrated exactly as scoring does it (same autocast, same batches).
    with torch.no_grad(), autocast_context(cpu, score.bf16):
        weights = net.generate(arch, generator=generator)
        if not score.bn_recalibration_batches:
            return model.load_from_smash(net, weights).eval()
        assert data is not None
        train = DeviceImages(data.train, cpu, data.mean, data.std)
        with bn_recalibrated(net, arch, weights, recalibration_batches(train, score)):
            return model.load_from_smash(net, weights).eval()

__all__ = [
    "ConfigError",
    "DeviceError",
    "ExperimentSpec",
    "JobReporter",
    "RetrainParams",
    "ScoreParams",
    "ScoredArchitecture",
    "SearchParams",
    "TrainParams",
    "check_batch_fits",
    "config_from_dict",
    "config_to_dict",
    "describe",
    "device_report",
    "first_line",
    "get_dataset",
    "load_weights",
    "prepare_experiment",
    "resolve_device",
    "run_retrain_job",
    "run_score_job",
    "run_search_job",
    "run_train",
    "save_weights",
    "score_method",
    "set_threads",
    "smash_initialised_model",
]
