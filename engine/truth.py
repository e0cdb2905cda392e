"""Benchmark truth tables: published accuracies of architectures that nobody here trained.

A truth table is a CSV in the layout of NAS-Bench-201's exported table: one row per
cell, its benchmark string in ``ArchitectureString``, its class in ``UniqueString``
(optional: computed when absent) and one accuracy column per data set. The accuracy
of a class is the mean over its cells in the table (they differ only by training
noise in the benchmark's runs), so every cell of a class gets one number.

Torch-free: the command line checks a table before anything is queued, and the
worker looks scored cells up in it.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from engine.config import DataConfig
from engine.errors import ConfigError
from engine.nb201.cell import Cell, InvalidCell

# The table's accuracy column for each data set it covers (`--truth-column`).
TRUTH_COLUMNS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
STRING_COLUMN = "ArchitectureString"
CLASS_COLUMN = "UniqueString"
MAX_ROWS = 1_000_000  # a table larger than this is not a benchmark of this space


@dataclass(frozen=True)
class TruthConfig:
    """Which benchmark table gives an experiment's truths, and which of its columns."""

    path: str  # the CSV file (absolute)
    column: str  # a key of TRUTH_COLUMNS: the data set whose accuracies are used

    @property
    def label(self) -> str:
        """How the truth is named to users, e.g. "benchmark CIFAR-10 test accuracy"."""
        return f"{Path(self.path).name}: {TRUTH_COLUMNS[self.column]}"


def column_for(data: DataConfig) -> str | None:
    """The truth column a data set's search is compared with, when its kind says it."""
    return data.kind if data.kind in ("cifar10", "cifar100") else None


@dataclass(frozen=True)
class TruthTable:
    """Accuracy (percent) of every class of cells a table lists."""

    config: TruthConfig  # where it came from
    by_class: dict[str, float]  # cell hash -> mean accuracy of its class in the table
    cells: int  # rows read

    def accuracy(self, cell: Cell) -> float | None:
        """The table's accuracy of `cell`'s class, or None when the table lacks it."""
        return self.by_class.get(cell.hash)


def load_truth(config: TruthConfig) -> TruthTable:
    """Read and check a truth table; every problem is one line naming the file and row.

    Raises:
        ConfigError: a missing or unreadable file, a missing column, a row whose cell
            string does not parse or whose accuracy is not a number in [0, 100].
    """
    if config.column not in TRUTH_COLUMNS:
        raise ConfigError(
            f"unknown truth column {config.column!r} (one of {', '.join(TRUTH_COLUMNS)})", "truth_column"
        )
    path = Path(config.path)
    if not path.is_file():
        raise ConfigError(f"truth table {path} does not exist or is not a file", "truth")
    wanted = TRUTH_COLUMNS[config.column]
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    rows = 0
    try:
        # utf-8-sig: a table saved by a spreadsheet starts with a byte-order mark, which
        # would otherwise become part of the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            header = reader.fieldnames or []
            missing = [name for name in (STRING_COLUMN, wanted) if name not in header]
            if missing:
                raise ConfigError(
                    f"truth table {path} has no column {missing[0]!r} (columns: {', '.join(header) or 'none'})",
                    "truth",
                )
            for line, row in enumerate(reader, start=2):
                rows += 1
                if rows > MAX_ROWS:
                    raise ConfigError(f"truth table {path} has more than {MAX_ROWS} rows", "truth")
                cell = _cell(row.get(STRING_COLUMN), path, line)
                accuracy = _accuracy(row.get(wanted), path, line, wanted)
                sums[cell.hash] += accuracy
                counts[cell.hash] += 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read truth table {path}: {exc}", "truth") from None
    if not rows:
        raise ConfigError(f"truth table {path} has no rows", "truth")
    by_class = {key: sums[key] / counts[key] for key in sums}
    return TruthTable(config, by_class, rows)


def _cell(text: str | None, path: Path, line: int) -> Cell:
    try:
        return Cell.from_string((text or "").strip())
    except InvalidCell as exc:
        raise ConfigError(f"truth table {path}, line {line}: {exc}", "truth") from None


def _accuracy(text: str | None, path: Path, line: int, column: str) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise ConfigError(f"truth table {path}, line {line}: {column} is not a number: {text!r}", "truth") from None
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ConfigError(f"truth table {path}, line {line}: {column} must be a percentage, got {value}", "truth")
    return value


__all__ = ["TRUTH_COLUMNS", "TruthConfig", "TruthTable", "column_for", "load_truth"]
