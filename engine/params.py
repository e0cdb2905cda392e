"""Job parameters and the experiment they run in, as plain values (torch-free).

A job arrives as JSON: the experiment's (`ExperimentSpec`, stored on the experiment)
and the job's parameters (`TrainParams`, `SearchParams`, `ScoreParams`,
`RetrainParams`, stored on the job). Every config may be partial; missing fields take
the defaults of the dataclasses in `engine.config`::

    train    {"train": TrainConfig}
    search   {"search": SearchConfig, "score": ScoreConfig, "racing": bool,
              "race": RaceConfig, "commit_every": int}
    score    {"architecture_ids": [int, ...], "score": ScoreConfig, "checkpoint_id": int | null}
    retrain  {"architecture_id": int, "retrain": RetrainConfig}

Parsing refuses what cannot work with a one-line `ConfigError`. The front ends parse
before they queue and the worker parses again before it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.config import (
    DataConfig,
    HyperNetConfig,
    RaceConfig,
    RetrainConfig,
    ScoreConfig,
    SearchConfig,
    TrainConfig,
)
from engine.errors import ConfigError, first_line
from engine.space import SearchSpace

_Config = TypeVar("_Config")


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


__all__ = [
    "ConfigError",
    "ExperimentSpec",
    "RetrainParams",
    "ScoreParams",
    "SearchParams",
    "TrainParams",
    "config_from_dict",
    "config_to_dict",
    "score_method",
]
