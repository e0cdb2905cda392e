"""What the app's forms ask for: defaults and rules are the engine's (no Textual, no database).

The defaults are the engine's (``engine.plans.SearchRequest``, ``engine.config``) and
so are the rules (``plan_search``, ``plan_retrain``): the command line and the app
cannot disagree on what a setting may be. All of it is torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.config import RetrainConfig, ScoreConfig
from engine.errors import ConfigError
from engine.params import config_from_dict
from engine.plans import SearchRequest, plan_retrain, plan_search


class FormError(ValueError):
    """A form field holds a value that cannot be used; the message is one line.

    Args:
        field: The field's name (its widget id without the form prefix).
        message: What is wrong, for the user.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def whole(text: str, field: str, label: str, *, minimum: int = 1) -> int:
    """Parse a whole number of at least ``minimum``.

    Args:
        text: What the user typed.
        field: The field's name, carried by the error.
        label: The field's name as the user sees it.
        minimum: The smallest value allowed.

    Raises:
        FormError: When it is not a whole number or is too small.
    """
    value = text.strip().replace("_", "").replace(",", "")
    try:
        number = int(value)
    except ValueError:
        raise FormError(field, f"{label} must be a whole number, got {text.strip()!r}") from None
    if number < minimum:
        if number < 0:
            raise FormError(field, f"{label} cannot be negative, got {number}")
        raise FormError(field, f"{label} must be at least {minimum}, got {number}")
    return number


def number(text: str, field: str, label: str) -> float:
    """Parse a number such as ``0.1`` or ``5e-2`` (its range is the engine's to check).

    Raises:
        FormError: When it is not a number.
    """
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        raise FormError(field, f"{label} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class RetrainSettings:
    """What the retrain dialog asks for."""

    epochs: int  # passes over the training split
    batch_size: int  # images per step
    lr: float  # peak learning rate

    def config(self) -> dict[str, Any]:
        """The RetrainConfig fields these settings give (the rest take the engine's defaults)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


# What the dialogs show at first: the engine's defaults, as the command line's.
RETRAIN_DEFAULTS = RetrainSettings(RetrainConfig.epochs, RetrainConfig.batch_size, RetrainConfig.lr)


def _form_error(error: ConfigError, fields: dict[str, str]) -> FormError:
    """A setting refused by the engine, shown beside the form field that holds it."""
    return FormError(fields.get(error.field or "", next(iter(fields.values()))), str(error))


def parse_retrain(
    epochs: str, batch_size: str, lr: str, *, train_images: int | None = None
) -> RetrainSettings:
    """Validate the retrain dialog with the engine's rules (`engine.plans.plan_retrain`).

    Args:
        train_images: The experiment's training split, when known: one batch must fit,
            as `smash retrain` requires.

    Raises:
        FormError: Naming the first bad field.
    """
    settings = RetrainSettings(
        epochs=whole(epochs, "epochs", "epochs"),
        batch_size=whole(batch_size, "batch-size", "batch size"),
        lr=number(lr, "lr", "learning rate"),
    )
    try:
        plan_retrain(settings.config(), train_images)
    except ConfigError as error:
        raise _form_error(error, {"epochs": "epochs", "batch_size": "batch-size", "lr": "lr"}) from None
    return settings


@dataclass(frozen=True)
class ScoreSettings:
    """What the score-again dialog asks for."""

    z_draws: int  # random z draws averaged per score
    bn_recalibration: int  # BN recalibration batches per score (0: off)
    images: int | None  # validation images per score (None: all)

    def config(self) -> dict[str, Any]:
        """The ScoreConfig fields these settings give."""
        return {"z_draws": self.z_draws, "bn_recalibration_batches": self.bn_recalibration, "images": self.images}


SCORE_DEFAULTS = ScoreSettings(ScoreConfig.z_draws, ScoreConfig.bn_recalibration_batches, ScoreConfig.images)


def parse_score(z_draws: str, bn_recalibration: str, images: str) -> ScoreSettings:
    """Validate the score-again dialog with the engine's rules (an empty images field: all).

    Raises:
        FormError: Naming the first bad field.
    """
    settings = ScoreSettings(
        z_draws=whole(z_draws, "z-draws", "z draws"),
        bn_recalibration=whole(bn_recalibration, "bn-recalibration", "BN recalibration batches", minimum=0),
        images=whole(images, "images", "images") if images.strip() else None,
    )
    try:
        config_from_dict(ScoreConfig, settings.config(), "score")
    except ConfigError as error:
        fields = {"z_draws": "z-draws", "bn_recalibration_batches": "bn-recalibration", "images": "images"}
        raise _form_error(error, fields) from None
    return settings


@dataclass(frozen=True)
class SearchSettings:
    """What the new-search form asks for."""

    dataset: str  # data set id, e.g. "synthetic" or "npz:/abs/path.npz"
    preset: str  # one of engine.space.PRESETS
    epochs: int  # HyperNet training epochs
    archs: int  # architectures to score
    strategy: str  # one of engine.config.STRATEGIES
    name: str | None  # experiment name; None lets smash pick one
    seed: int  # seed of every random choice
    weights: str  # one of engine.params.WEIGHT_MODES: SMASH's HyperNet, or plain weight sharing
    truth: str | None  # a benchmark table (absolute path); None: none
    truth_column: str | None  # its accuracy column (engine.truth.TRUTH_COLUMNS); None: from the data set

    def cli_args(self) -> list[str]:
        """The `smash search` options that create this experiment."""
        args = [
            "--dataset",
            self.dataset,
            "--preset",
            self.preset,
            "--epochs",
            str(self.epochs),
            "--archs",
            str(self.archs),
            "--strategy",
            self.strategy,
            "--seed",
            str(self.seed),
            "--weights",
            self.weights,
        ]
        if self.name:
            args += ["--name", self.name]
        if self.truth is not None:
            args += ["--truth", self.truth]
        if self.truth_column is not None:
            args += ["--truth-column", self.truth_column]
        return args


# The form asks for a few of `smash search`'s settings, with its defaults.
SEARCH_DEFAULTS = SearchSettings(
    **{field.name: getattr(SearchRequest(), field.name) for field in dataclasses.fields(SearchSettings)}
)


def parse_search(
    *,
    dataset: str,
    preset: str,
    epochs: str,
    archs: str,
    strategy: str,
    name: str,
    seed: str,
    weights: str = SEARCH_DEFAULTS.weights,
    truth: str = "",
    truth_column: str | None = None,
) -> SearchSettings:
    """Validate the new-search form with the engine's rules (`engine.plans.plan_search`).

    Paths must exist (``~`` is expanded); they are made absolute, since the worker that
    loads them may run in another directory. A benchmark table is read and checked
    as `smash search --truth` checks it (a missing column, a cell string that does
    not parse, an accuracy outside 0-100 are refused beside the field).

    Args:
        truth: The table's path; empty: none.
        truth_column: A key of ``engine.truth.TRUTH_COLUMNS``; None: the data set's.

    Raises:
        FormError: Naming the first bad field.
    """
    request = SearchRequest(
        dataset=dataset.strip(),
        preset=preset,
        epochs=whole(epochs, "epochs", "HyperNet epochs"),
        archs=whole(archs, "archs", "architectures"),
        strategy=strategy,
        name=name.strip() or None,
        seed=whole(seed, "seed", "seed", minimum=0),
        weights=weights,
        truth=truth.strip() or None,
        truth_column=truth_column,
    )
    try:
        plan = plan_search(request)
    except ConfigError as error:
        fields = {key: key for key in ("dataset", "preset", "epochs", "archs", "strategy", "name", "seed")}
        fields |= {"weights": "weights", "truth": "truth", "truth_column": "truth-column"}
        raise _form_error(error, fields) from None
    return SearchSettings(
        dataset=plan.data.dataset,
        preset=request.preset,
        epochs=request.epochs,
        archs=request.archs,
        strategy=request.strategy,
        name=request.name,
        seed=request.seed,
        weights=plan.weights,
        # The table as the engine resolved it: absolute, and its column named even when
        # the data set chose it, so the worker compares with exactly what was checked.
        truth=None if plan.truth is None else plan.truth.path,
        truth_column=None if plan.truth is None else plan.truth.column,
    )
