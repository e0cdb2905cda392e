"""What the app's forms ask for, and their validation (no Textual, no database).

The choices are the engine's own (``engine.space.PRESETS``, ``engine.config``),
read from its torch-free modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.config import BUILT_IN_KINDS, PATH_KINDS, STRATEGIES
from engine.space import PRESETS as ENGINE_PRESETS

PRESETS: Final = tuple(ENGINE_PRESETS)
BUILT_IN_DATASETS: Final = BUILT_IN_KINDS
PATH_DATASETS: Final = PATH_KINDS


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


def positive(text: str, field: str, label: str) -> float:
    """Parse a positive, finite number such as ``0.1`` or ``5e-2``.

    Raises:
        FormError: When it is not a number, not finite, or not above zero.
    """
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        raise FormError(field, f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise FormError(field, f"{label} must be finite, got {value!r}")
    if number < 0:
        raise FormError(field, f"{label} cannot be negative, got {value}")
    if number == 0:
        raise FormError(field, f"{label} must be above 0")
    return number


@dataclass(frozen=True)
class RetrainSettings:
    """What the retrain dialog asks for."""

    epochs: int  # passes over the training split
    batch_size: int  # images per step
    lr: float  # peak learning rate


def parse_retrain(epochs: str, batch_size: str, lr: str) -> RetrainSettings:
    """Validate the retrain dialog.

    Raises:
        FormError: Naming the first bad field.
    """
    return RetrainSettings(
        epochs=whole(epochs, "epochs", "epochs"),
        batch_size=whole(batch_size, "batch-size", "batch size"),
        lr=positive(lr, "lr", "learning rate"),
    )


def check_dataset(text: str) -> str:
    """A data set id the engine accepts: a built-in name, ``npz:FILE`` or ``folder:DIR``.

    Paths must exist (``~`` is expanded); they are made absolute, since the
    worker that loads them may run in another directory.

    Raises:
        FormError: For an unknown name or a missing path.
    """
    value = text.strip()
    if value in BUILT_IN_DATASETS:
        return value
    kind, _, path = value.partition(":")
    if kind in PATH_DATASETS and path.strip():
        resolved = Path(path.strip()).expanduser().resolve()
        if kind == "npz" and not resolved.is_file():
            raise FormError("dataset", f"no such file: {resolved}")
        if kind == "folder" and not resolved.is_dir():
            raise FormError("dataset", f"no such folder: {resolved}")
        return f"{kind}:{resolved}"
    choices = ", ".join(BUILT_IN_DATASETS + tuple(f"{kind}:PATH" for kind in PATH_DATASETS))
    shown = value or "(empty)"
    raise FormError("dataset", f"unknown data set {shown!r}: expected one of {choices}")


@dataclass(frozen=True)
class SearchSettings:
    """What the new-search form asks for."""

    dataset: str  # data set id, e.g. "synthetic" or "npz:/abs/path.npz"
    preset: str  # one of PRESETS
    epochs: int  # HyperNet training epochs
    archs: int  # architectures to score
    strategy: str  # one of STRATEGIES
    name: str | None  # experiment name; None lets smash pick one
    seed: int  # seed of every random choice

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
        ]
        if self.name:
            args += ["--name", self.name]
        return args


def parse_search(
    *, dataset: str, preset: str, epochs: str, archs: str, strategy: str, name: str, seed: str
) -> SearchSettings:
    """Validate the new-search form.

    Raises:
        FormError: Naming the first bad field.
    """
    checked = check_dataset(dataset)
    if preset not in PRESETS:
        raise FormError("preset", f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    if strategy not in STRATEGIES:
        raise FormError(
            "strategy", f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})"
        )
    return SearchSettings(
        dataset=checked,
        preset=preset,
        epochs=whole(epochs, "epochs", "HyperNet epochs"),
        archs=whole(archs, "archs", "architectures"),
        strategy=strategy,
        name=name.strip() or None,
        seed=whole(seed, "seed", "seed", minimum=0),
    )
