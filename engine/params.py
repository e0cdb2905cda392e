"""Job parameters, the experiment they run in, and the validation of every setting (torch-free).

A job arrives as JSON: the experiment's (`ExperimentSpec`, stored on the experiment)
and the job's parameters (`TrainParams`, `SearchParams`, `ScoreParams`,
`RetrainParams`, stored on the job). Every config may be partial; missing fields take
the defaults of the dataclasses in `engine.config`::

    train    {"train": TrainConfig}
    search   {"search": SearchConfig, "score": ScoreConfig, "racing": bool,
              "race": RaceConfig, "commit_every": int, "chunk": int | null}
    chunk    a part of a search's scoring (`ChunkParams`), queued by the search itself
    score    {"architecture_ids": [int, ...], "score": ScoreConfig, "checkpoint_id": int | null}
    retrain  {"architecture_id": int, "retrain": RetrainConfig}

This is the one validation layer of the project: `config_from_dict` checks every
value's type and range against the config's annotations (numbers finite and within
float32, integers within what the database stores, text free of control characters) before the config
checks its own rules; `plan_search` and `plan_retrain` turn what a user asked for into
job parameters. The command line and the app call them before anything is queued, and
the worker parses the stored JSON again before it runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.config import (
    FLOAT_MAX,
    INT_MAX,
    LEGACY_STRATEGIES,
    DataConfig,
    HyperNetConfig,
    RaceConfig,
    RetrainConfig,
    ScoreConfig,
    SearchConfig,
    TrainConfig,
)
from engine.errors import ConfigError, first_line
from engine.spaces import Space, space_from_dict
from engine.truth import TruthConfig

_Config = TypeVar("_Config")
MAX_TEXT = 1000  # longest text setting (names, paths): a longer one is a mistake or an attack
COMMIT_EVERY = 8  # scored architectures per database commit (what a crash may lose)
# Candidates per chunk job of a search (`engine.fanout` says what makes a size good).
CHUNK_FULL = 8  # full scoring: enough to hide a claim's cost, small enough to share a batch out
CHUNK_RACING = 16  # racing: a chunk races its candidates and the search's leaders together
WEIGHT_MODES = ("hypernet", "shared")  # SMASH's generated weights, or plain weight sharing (nb201)


# Values ------------------------------------------------------------------------------------


def check_text(value: Any, what: str, *, field: str | None = None, empty: bool = False) -> str:
    """A text setting: a string, free of control characters, not absurdly long.

    Raises:
        ConfigError: naming the setting.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text, got {_shown(value)}", field)
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{what} is {len(value)} characters long; at most {MAX_TEXT}", field)
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") for char in value):
        raise ConfigError(f"{what} contains control or invisible characters: {value!r}", field)
    if not empty and not value.strip():
        raise ConfigError(f"{what} is empty", field)
    return value


def check_int(
    value: Any, what: str, *, field: str | None = None, low: int = -INT_MAX, high: int = INT_MAX
) -> int:
    """An integer setting within [low, high] (by default what a database integer holds).

    Raises:
        ConfigError: naming the setting.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {_shown(value)}", field)
    if value > high:
        raise ConfigError(f"{what} is too large: {value} (at most {high})", field)
    if value < low:
        raise ConfigError(f"{what} must be at least {low}, got {value}", field)
    return value


def check_float(value: Any, what: str, *, field: str | None = None) -> float:
    """A finite number that float32 holds (integers are accepted).

    Raises:
        ConfigError: naming the setting.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {_shown(value)}", field)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {_shown(value)}", field)
    if abs(number) > FLOAT_MAX:
        raise ConfigError(f"{what} is too large: {number:g} (at most {FLOAT_MAX:.4g})", field)
    return number


def parse_id(text: str, noun: str) -> int:
    """A positive id typed by a user: ASCII digits only, within what the database holds.

    Raises:
        ConfigError: for anything else (`isdigit()` alone would accept '²' or Arabic digits).
    """
    value = text.strip()
    if not value or not value.isascii() or not value.isdigit():
        raise ConfigError(f"{noun} id must be a positive integer, got {text!r}")
    number = int(value)
    if not 1 <= number <= INT_MAX:
        raise ConfigError(f"{noun} id must be between 1 and {INT_MAX}, got {value}")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_typed(value: Any, hint: Any, what: str, field: str) -> Any:
    """Check a JSON value against a field's annotation; lists become tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return check_typed(value, options[0], what, field) if len(options) == 1 else value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{what} must be true or false, got {_shown(value)}", field)
        return value
    if hint is int:
        return check_int(value, what, field=field)
    if hint is float:
        return check_float(value, what, field=field)
    if hint is str:
        return check_text(value, what, field=field, empty=True)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{what} must be a list, got {_shown(value)}", field)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{what} needs {len(items)} values, got {len(value)}", field)
        return tuple(check_typed(v, h, f"{what}[{i}]", field) for i, (v, h) in enumerate(zip(value, items)))
    return value


def config_from_dict(cls: type[_Config], data: Mapping[str, Any] | None, what: str) -> _Config:
    """Build a frozen config dataclass from (possibly partial) JSON, checking every value.

    Args:
        cls: The dataclass, e.g. TrainConfig.
        data: Field values; missing fields keep their defaults.
        what: What the config is, named in error messages (e.g. "train").

    Raises:
        ConfigError: An unknown field, a value of the wrong type or out of range, or a
            value the config refuses; its ``field`` names the offending setting.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what}: expected an object of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"{what}: unknown setting(s) {', '.join(map(str, unknown))}")
    values = {key: check_typed(value, hints[key], f"{what}.{key}", key) for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {first_line(exc)}", getattr(exc, "field", None)) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-able values (tuples become lists when serialised)."""
    return dataclasses.asdict(config)


def _params(params: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise ConfigError(f"{kind} job: params must be an object, got {type(params).__name__}")
    return params


# The experiment --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentSpec:
    """What every job of an experiment shares: the space, the data and the HyperNet."""

    space: Space  # what sampled architectures may contain (a banks SearchSpace or an nb201 CellSpace)
    data: DataConfig  # the data set and its validation carve-out
    hypernet: HyperNetConfig  # capacity of the HyperNet
    seed: int  # seed of every random choice in the experiment
    num_classes: int  # classifier outputs, from the data set
    in_channels: int  # image channels, from the data set
    image_size: int  # side of the square images in pixels, from the data set
    train_images: int | None = None  # images to train on (None: an experiment stored before it was kept)
    val_images: int | None = None  # validation images architectures are scored on
    test_images: int | None = None  # test images of retrained networks
    weights: str = "hypernet"  # one of WEIGHT_MODES: SMASH's HyperNet, or plain weight sharing
    truth: TruthConfig | None = None  # a benchmark table giving each scored cell's accuracy

    def config(self) -> dict[str, Any]:
        """The experiment's ``config`` JSON (the space and the seed are stored beside it)."""
        return {
            "data": config_to_dict(self.data),
            "hypernet": config_to_dict(self.hypernet),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "test_images": self.test_images,
            "weights": self.weights,
            "truth": None if self.truth is None else {"path": self.truth.path, "column": self.truth.column},
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
            space = space_from_dict(search_space)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"search space: {first_line(exc)}") from None
        try:
            sizes = {key: check_int(config[key], key) for key in ("num_classes", "in_channels", "image_size")}
        except KeyError as exc:
            raise ConfigError(f"experiment config lacks {exc.args[0]!r}") from None
        splits = {
            key: None if config.get(key) is None else check_int(config[key], key)
            for key in ("train_images", "val_images", "test_images")
        }
        weights = config.get("weights", "hypernet")
        if weights not in WEIGHT_MODES:
            raise ConfigError(f"experiment config: unknown weights {weights!r} (one of {', '.join(WEIGHT_MODES)})")
        truth = config.get("truth")
        return cls(
            space=space,
            data=config_from_dict(DataConfig, config.get("data"), "data"),
            hypernet=config_from_dict(HyperNetConfig, config.get("hypernet"), "hypernet"),
            seed=check_int(seed, "seed"),
            **sizes,
            **splits,
            weights=weights,
            truth=None if truth is None else config_from_dict(TruthConfig, truth, "truth"),
        )


def check_batch(batch_size: int, train_images: int | None, what: str) -> None:
    """Refuse a batch larger than the training split (the loops drop partial batches).

    Does nothing when the split size is unknown (an experiment stored before it was
    kept): the worker checks again with the data in hand.

    Raises:
        ConfigError: not one full batch fits.
    """
    if train_images is not None and batch_size > train_images:
        raise ConfigError(
            f"{what}: the training split has {train_images} images, fewer than one batch of {batch_size}",
            "batch_size",
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
    commit_every: int = COMMIT_EVERY  # scored architectures per database commit (what a crash may lose)
    chunk: int | None = None  # candidates per chunk job (None: CHUNK_RACING when racing, else CHUNK_FULL)

    def __post_init__(self) -> None:
        if self.commit_every < 1:
            raise ConfigError(f"commit_every must be at least 1, got {self.commit_every}")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError(f"chunk must be at least 1, got {self.chunk}", "chunk")

    @property
    def chunk_size(self) -> int:
        """Candidates per chunk job."""
        if self.chunk is not None:
            return self.chunk
        return CHUNK_RACING if self.racing else CHUNK_FULL

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {
            "search": config_to_dict(self.search),
            "score": config_to_dict(self.score),
            "racing": self.racing,
            "race": config_to_dict(self.race),
            "commit_every": self.commit_every,
            "chunk": self.chunk,
        }

    @classmethod
    def from_params(cls, params: Any) -> SearchParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "search")
        racing = params.get("racing", False)
        if not isinstance(racing, bool):
            raise ConfigError(f"racing must be true or false, got {racing!r}")
        search = dict(params.get("search") or {})
        if search.get("strategy") in LEGACY_STRATEGIES:  # a job queued before the rename
            search["strategy"] = LEGACY_STRATEGIES[search["strategy"]]
        return cls(
            search=config_from_dict(SearchConfig, search, "search"),
            score=config_from_dict(ScoreConfig, params.get("score"), "score"),
            racing=racing,
            race=config_from_dict(RaceConfig, params.get("race"), "race"),
            commit_every=check_int(params.get("commit_every", COMMIT_EVERY), "commit_every"),
            chunk=None if params.get("chunk") is None else check_int(params["chunk"], "chunk", low=1),
        )


@dataclass(frozen=True)
class LeaderRecord:
    """A racing survivor that a chunk races its candidates against (see `engine.score.Leader`)."""

    error: float  # its full score
    loss: float
    images: int
    z_draws: int
    method: str
    rungs: tuple[tuple[int, float, float], ...]  # (images, wrong, loss) summed over the first images

    def to_params(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "loss": self.loss,
            "images": self.images,
            "z_draws": self.z_draws,
            "method": self.method,
            "rungs": [list(rung) for rung in self.rungs],
        }

    @classmethod
    def from_params(cls, value: Any) -> LeaderRecord:
        if not isinstance(value, Mapping):
            raise ConfigError(f"chunk job: a leader must be an object, got {_shown(value)}")
        try:
            rungs = tuple(
                (check_int(images, "leader rung images", low=1), check_float(wrong, "leader rung"), check_float(loss, "leader rung"))
                for images, wrong, loss in value["rungs"]
            )
            return cls(
                error=check_float(value["error"], "leader error"),
                loss=check_float(value["loss"], "leader loss"),
                images=check_int(value["images"], "leader images", low=1),
                z_draws=check_int(value["z_draws"], "leader z_draws", low=1),
                method=check_text(value["method"], "leader method"),
                rungs=rungs,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"chunk job: a leader cannot be read: {first_line(exc)}") from None


def _text_item(value: Any, what: str) -> str:
    """A text value of a chunk (architecture JSON is long: the kind's parser checks it)."""
    if not isinstance(value, str):
        raise ConfigError(f"chunk job: {what} must be text, got {_shown(value)}")
    return value


@dataclass(frozen=True)
class ChunkParams:
    """A ``chunk`` job: some of a search's candidates, scored by whichever worker claims it.

    The search that queues it (its parent job) has fixed everything a score depends on,
    so any worker, on any host, records the score its own worker would have.
    """

    index: int  # its number within the search, from 0
    checkpoint_id: int  # the HyperNet checkpoint every chunk of the search scores against
    architectures: tuple[str, ...]  # the candidates, as architecture JSON
    hashes: tuple[str, ...]  # their hashes, in the same order
    source: str  # how the search found them: random, perturb, markov, evolution
    score: ScoreConfig = ScoreConfig()  # how each is scored (batch size fixed by the search)
    racing: bool = False  # race the candidates (and the leaders) instead of full scores
    race: RaceConfig = RaceConfig()  # the racing settings
    leaders: tuple[LeaderRecord, ...] = ()  # the search's best survivors when the chunk was cut
    commit_every: int = COMMIT_EVERY  # scored architectures per database commit

    def to_params(self) -> dict[str, Any]:
        """The job's ``params`` JSON."""
        return {
            "index": self.index,
            "checkpoint_id": self.checkpoint_id,
            "architectures": list(self.architectures),
            "hashes": list(self.hashes),
            "source": self.source,
            "score": config_to_dict(self.score),
            "racing": self.racing,
            "race": config_to_dict(self.race),
            "leaders": [leader.to_params() for leader in self.leaders],
            "commit_every": self.commit_every,
        }

    @classmethod
    def from_params(cls, params: Any) -> ChunkParams:
        """Parse a job's ``params``; ConfigError when they cannot work."""
        params = _params(params, "chunk")
        architectures, hashes = params.get("architectures"), params.get("hashes")
        if not isinstance(architectures, list) or not isinstance(hashes, list) or len(architectures) != len(hashes):
            raise ConfigError("chunk job: architectures and hashes must be lists of the same length")
        racing = params.get("racing", False)
        if not isinstance(racing, bool):
            raise ConfigError(f"racing must be true or false, got {racing!r}")
        leaders = params.get("leaders") or []
        if not isinstance(leaders, list):
            raise ConfigError("chunk job: leaders must be a list")
        return cls(
            index=check_int(params.get("index"), "chunk index", low=0),
            checkpoint_id=check_int(params.get("checkpoint_id"), "checkpoint_id", low=1),
            architectures=tuple(_text_item(spec, "architecture") for spec in architectures),
            hashes=tuple(_text_item(hash_, "architecture hash") for hash_ in hashes),
            source=check_text(params.get("source", "random"), "source"),
            score=config_from_dict(ScoreConfig, params.get("score"), "score"),
            racing=racing,
            race=config_from_dict(RaceConfig, params.get("race"), "race"),
            leaders=tuple(LeaderRecord.from_params(leader) for leader in leaders),
            commit_every=check_int(params.get("commit_every", COMMIT_EVERY), "commit_every", low=1),
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
            architecture_ids=tuple(check_int(ident, "architecture id", low=1) for ident in ids),
            score=config_from_dict(ScoreConfig, params.get("score"), "score"),
            checkpoint_id=None if checkpoint is None else check_int(checkpoint, "checkpoint_id", low=1),
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
            architecture_id=check_int(params["architecture_id"], "architecture_id", low=1),
            retrain=config_from_dict(RetrainConfig, params.get("retrain"), "retrain"),
        )


def is_full_score(method: str) -> bool:
    """Whether a stored score's method label is a full score (not a racing drop's partial one)."""
    return method.partition("+")[0] == "full"


def best_full_error(errors_by_method: Iterable[tuple[str, float]]) -> float:
    """The lowest error among full scores, given (method label, error) pairs; inf for none.

    A racing drop's partial error was measured on fewer images and is no "best".
    """
    return min((error for method, error in errors_by_method if is_full_score(method)), default=math.inf)


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
    "CHUNK_FULL",
    "CHUNK_RACING",
    "COMMIT_EVERY",
    "ChunkParams",
    "LeaderRecord",
    "ConfigError",
    "ExperimentSpec",
    "RetrainParams",
    "ScoreParams",
    "SearchParams",
    "TrainParams",
    "check_batch",
    "check_float",
    "check_int",
    "check_typed",
    "check_text",
    "config_from_dict",
    "best_full_error",
    "config_to_dict",
    "is_full_score",
    "parse_id",
    "score_method",
]
