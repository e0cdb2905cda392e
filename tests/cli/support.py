"""Helpers of the CLI tests: running `smash` in-process and as a process, tiny budgets, dumps."""

from __future__ import annotations

import csv
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from engine.config import HYPERNET_SIZES
from engine.data import DataConfig
from engine.families import resnet_style
from engine.nb201.cell import Cell, all_cells
from engine.params import ExperimentSpec
from engine.probe import probe_dataset
from engine.space import PRESETS
from smash_tui.cli import app
from storage.db import Database
from storage.records import ArchitectureIn, add_architectures, create_experiment

# The smallest budgets that still exercise every loop (a few seconds each on two cores).
TINY_DATA = ["--synthetic-train", "300", "--synthetic-test", "100", "--val-size", "100"]
TINY_SEARCH = [
    "--preset",
    "tiny",
    "--hypernet",
    "compact",
    "--batch-size",
    "25",
    "--score-images",
    "50",
    "--eval-archs",
    "1",
    "--device",
    "cpu",
    *TINY_DATA,
]
DEMO = [
    "demo",
    "--epochs",
    "1",
    "--max-steps",
    "4",
    "--archs",
    "6",
    "--retrain-epochs",
    "1",
    "--batch-size",
    "25",
    "--retrain-batch-size",
    "25",
    "--score-images",
    "50",
    "--eval-archs",
    "1",
    "--top",
    "6",
    "--device",
    "cpu",
    *TINY_DATA,
]
SMASH = [sys.executable, "-c", "from smash_tui.cli import main; main()"]


def smash(db: str, *args: str) -> Result:
    """Run ``smash ARGS --db DB`` in this process."""
    return CliRunner().invoke(app, [*args, "--db", db])


def smash_process(
    db: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``smash ARGS --db DB`` as a separate process and wait for it."""
    return subprocess.run(
        [*SMASH, *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start_worker(db: str, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """Start ``smash worker`` on one CPU thread with fast heartbeats; output goes to ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [
                *SMASH,
                "worker",
                "--db",
                db,
                "--device",
                "cpu",
                "--threads",
                "1",
                "--heartbeat",
                "0.3",
                "--poll",
                "0.3",
                *options,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.05
) -> object:
    """Poll until ``condition()`` is truthy and return it; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def dump(path: Path) -> str:
    """The whole SQLite database as SQL text, to compare before and after a command."""
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def assert_one_line_error(result: Result | subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and one ``error: ...`` line, without a traceback."""
    stderr = result.stderr
    exit_code = (
        result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    )
    assert exit_code == code, (exit_code, result.stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr + result.stdout
    return lines[0]


def retrain_experiment(db: Database, count: int) -> tuple[int, list[int]]:
    """An experiment on tiny synthetic data with ``count`` small ResNet-style architectures.

    No HyperNet and no jobs: what retrain jobs need, cheap to train (a second or two
    per epoch on one core).

    Returns:
        The experiment id and the architecture ids.
    """
    space = PRESETS["tiny"]
    data = DataConfig("synthetic", synthetic_train=200, synthetic_test=50, val_size=50)
    shape = probe_dataset(data)
    assert shape is not None
    spec = ExperimentSpec(space, data, HYPERNET_SIZES["compact"], 0, **shape.to_dict())
    archs = [resnet_style(space, ops_per_block=ops) for ops in range(1, count + 1)]
    with db.session() as session:
        experiment = create_experiment(
            session,
            "retrains",
            dataset="synthetic",
            preset="tiny",
            search_space=space.to_dict(),
            config=spec.config(),
            seed=0,
        )
        ids = add_architectures(
            session,
            experiment.id,
            [
                ArchitectureIn(
                    hash=arch.hash,
                    spec=arch.to_json(),
                    params=1,
                    flops=1,
                    depth=arch.depth,
                    num_ops=arch.num_ops,
                )
                for arch in archs
            ],
        )
        session.commit()
        return experiment.id, [ids[arch.hash] for arch in archs]


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Terminate a process that may still run; its exit code."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def retrain_args(architecture_id: int, epochs: int, *extra: str) -> Sequence[str]:
    """``smash retrain`` arguments on the tiny data."""
    return ["retrain", str(architecture_id), "--epochs", str(epochs), "--batch-size", "25", *extra]


# nb201 ------------------------------------------------------------------------------------------

# `TINY_SEARCH` on the nb201-tiny preset (C=8, N=1): the same data, HyperNet and budgets.
NB201_SEARCH = ["--preset", "nb201-tiny", *TINY_SEARCH[2:]]
# The columns of NAS-Bench-201's exported table, in its order (`engine.truth`).
TRUTH_HEADER = [
    "CIFAR10TestAccuracy200Epochs",
    "CIFAR100TestAccuracy200Epochs",
    "ImageNetTestAccuracy200Epochs",
    "ArchitectureString",
    "UniqueString",
]


def bench_accuracy(cell: Cell) -> float:
    """The test tables' CIFAR-10 accuracy of a cell: a fixed function of its benchmark class.

    Quarter percents, exact in binary, so the mean over a class's rows is the value itself.
    """
    return (int(hashlib.sha256(cell.unique_string.encode()).hexdigest()[:8], 16) % 400) / 4


def write_truth_table(path: Path, keep: Callable[[Cell], bool] = lambda _cell: True) -> Path:
    """A table of every cell that `keep` accepts, in the benchmark's CSV layout.

    CIFAR-10 holds `bench_accuracy`; CIFAR-100 and ImageNet hold half and a third of it.
    """
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(TRUTH_HEADER)
        for cell in all_cells():
            if keep(cell):
                accuracy = bench_accuracy(cell)
                writer.writerow([accuracy, accuracy / 2, accuracy / 3, cell.to_string(), cell.unique_string])
    return path
