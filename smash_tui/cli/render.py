"""Text renderings for the command line: an architecture's diagram, tables, progress bars.

Everything returns rich renderables (or plain values for JSON); nothing here touches
the database or torch, so the Textual app may reuse it.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from smash_tui.gpus import GpuStatus, worker_gpu
from storage.errors import first_line
from storage.models import Experiment, Job
from storage.queries import ArchitectureDetail, ArchitectureRow
from storage.workers import WorkerInfo

_STATE_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "done": "green",
    "failed": "red",
    "cancelled": "dim",
}


def human(value: float | int | None, digits: int = 3) -> str:
    """A count with a k/M/G suffix: 1234567 -> "1.23M"; None -> "-"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    number = float(value)
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            return f"{number / threshold:.{digits}g}{suffix}"
    return f"{number:.{digits}g}" if not float(number).is_integer() else str(int(number))


def percent(value: float | None, digits: int = 2) -> str:
    """A percentage with fixed decimals; None -> "-"."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """Seconds as "1h02m", "3m05s" or "42s"; None -> "-"."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def when(moment: datetime | None) -> str:
    """A UTC timestamp in local time, to the second; None -> "-"."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def plural(count: int, noun: str) -> str:
    """ "1 epoch", "5 epochs"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- architectures -----------------------------------------------------------------------------


def _conv(conv: dict[str, Any] | None) -> str:
    """One conv of an op body: "3x3", "5x3 d2", "3x3 d1x2 g4"."""
    if conv is None:
        return ""
    kh, kw = conv["kernel"]
    dh, dw = conv["dilation"]
    text = f"{kh}x{kw}"
    if (dh, dw) != (1, 1):
        text += f" d{dh}" if dh == dw else f" d{dh}x{dw}"
    if conv["groups"] > 1:
        text += f" g{conv['groups']}"
    return text


def _path(first: dict[str, Any] | None, second: dict[str, Any] | None) -> str:
    parts = [_conv(conv) for conv in (first, second) if conv is not None]
    return " > ".join(parts) if parts else "-"


def _banks(indices: Iterable[int]) -> str:
    return " ".join(str(index) for index in indices)


def architecture_diagram(spec: dict[str, Any], image_size: int | None = None) -> RenderableType:
    """The architecture: an nb201 cell node by node, or a banks network block by block.

    A banks block shows its banks, and per op its reads -> 1x1 -> body -> writes.

    Args:
        spec: The architecture as parsed JSON (``to_dict`` form of its kind).
        image_size: Input side in pixels, to show each block's resolution; None omits it.
    """
    if spec.get("kind") == "nb201":
        from engine.nb201.cell import Cell, describe_cell  # torch-free

        lines = describe_cell(Cell.from_dict(spec))
        return Text("\n".join(lines))
    parts: list[RenderableType] = [
        Text(
            f"stem: {spec['stem_kernel']}x{spec['stem_kernel']} conv -> "
            f"{spec['blocks'][0]['in_channels']} channels",
            style="bold",
        )
    ]
    blocks = spec["blocks"]
    for index, block in enumerate(blocks):
        bank = block["bank_size"]
        filled = block["in_channels"] // bank
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for name, justify in (
            ("op", "right"),
            ("reads", "left"),
            ("1x1", "right"),
            ("path A", "left"),
            ("path B", "left"),
            ("units", "right"),
            ("new", "left"),
            ("sum", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for number, op in enumerate(block["ops"]):
            new = [bank_ for bank_ in op["writes"] if bank_ >= filled]
            summed = [bank_ for bank_ in op["writes"] if bank_ < filled]
            filled += len(new)
            convs = op["convs"]
            table.add_row(
                str(number),
                _banks(op["reads"]),
                str(op["bottleneck"]),
                _path(convs[0], convs[1]),
                _path(convs[2], convs[3]),
                str(op["units"]),
                _banks(new) or "-",
                _banks(summed) or "-",
            )
        side = f" · {image_size // 2**index}x{image_size // 2**index} px" if image_size else ""
        header = (
            f"block {index}{side} · input {block['in_channels']} ch in "
            f"{block['in_channels'] // bank} bank(s) of {bank} · {len(block['ops'])} ops · "
            f"{filled} banks at the end ({filled * bank} ch)"
        )
        parts += [Text(""), Text(header, style="bold"), table]
        if index < len(blocks) - 1:
            parts.append(
                Text(
                    f"transition: BN, ReLU, 1x1 conv {filled * bank} -> "
                    f"{blocks[index + 1]['in_channels']} ch, 2x2 average pool"
                )
            )
        else:
            parts.append(
                Text(f"head: BN, ReLU, global average pool, linear from {filled * bank} ch")
            )
    parts.append(
        Text(
            "each op: reads banks -> 1x1 conv -> path A + path B -> units channels written to "
            "banks, 'new' ones allocated, 'sum' ones added into; kxk kernel, d dilation, "
            "g groups, > stacked convs",
            style="dim",
        )
    )
    return Group(*parts)


def architecture_report(
    detail: ArchitectureDetail, experiment: Experiment, image_size: int | None
) -> RenderableType:
    """Everything ``smash show`` prints: sizes, the diagram, scores and retrains."""
    row = detail.row
    summary = Text.assemble(
        (f"architecture {row.id}", "bold"),
        f" · experiment {experiment.id} ({experiment.name}) · hash {row.hash[:12]}\n",
        f"params {human(row.params)} ({row.params:,}) · FLOPs {human(row.flops)} per image · "
        f"depth {row.depth} · ops {row.ops} · found by {row.source} · "
        f"SMASH error {percent(row.err)}%{_partial_note(detail)} · "
        f"retrained test accuracy {percent(row.acc)}%"
        + ("" if row.bench is None else f" · benchmark accuracy {percent(row.bench)}% (not trained here)"),
    )
    parts: list[RenderableType] = [summary, Text("")]
    parts.append(architecture_diagram(json.loads(detail.spec), image_size))
    scores = Table(title="scores (generated weights)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("id", "checkpoint", "job", "method", "err %", "loss", "images", "z", "when"):
        scores.add_column(
            name, justify="left" if name in ("method", "when") else "right", no_wrap=name == "when"
        )
    for score in detail.scores:
        scores.add_row(
            str(score.id),
            str(score.checkpoint_id or "-"),
            str(score.job_id or "-"),
            score.method,
            percent(score.err),
            percent(score.loss, 3),
            str(score.images),
            str(score.z_draws),
            when(score.created_at),
        )
    parts += [Text(""), scores if detail.scores else Text("no scores yet", style="dim")]
    retrains = Table(title="retrains (from scratch)", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("id", "job", "epochs", "best val %", "test %", "finished", "weights"):
        retrains.add_column(
            name,
            justify="left" if name in ("weights", "finished") else "right",
            no_wrap=name == "finished",
            overflow="fold",
        )
    for retrain in detail.retrains:
        finished = when(retrain.finished_at) if retrain.finished_at else "running or paused"
        retrains.add_row(
            str(retrain.id),
            str(retrain.job_id),
            f"{len(retrain.curve)}/{retrain.epochs}",
            percent(retrain.best_val_acc),
            percent(retrain.test_acc),
            finished,
            retrain.weights_path or "-",
        )
    parts += [Text(""), retrains if detail.retrains else Text("never retrained", style="dim")]
    return Group(*parts)


def _partial_note(detail: ArchitectureDetail) -> str:
    """Why an error is partial, when it is: racing dropped the candidate early."""
    if not detail.row.partial or not detail.scores:
        return ""
    return f" (partial: racing dropped it after {detail.scores[-1].images:,} images)"


def row_dict(row: ArchitectureRow) -> dict[str, Any]:
    """A browser row as JSON-able values (the keys of ``smash ls --json``)."""
    return asdict(row)


def architectures_table(rows: Sequence[ArchitectureRow], title: str = "") -> Table:
    """The ``smash ls`` table; a ``bench %`` column where a benchmark table gave truths."""
    bench = any(row.bench is not None for row in rows)
    # The bench column makes eleven: with one space between columns instead of two they
    # still fit 80 characters, where rich would otherwise cut every number to "43.…".
    table = Table(title=title or None, box=box.SIMPLE_HEAD, title_justify="left", collapse_padding=bench)
    names = ["id", "err %", "loss", "params", "FLOPs", "depth", "ops", "acc %"]
    names += ["bench %"] if bench else []
    for name in [*names, "retrain", "source"]:
        table.add_column(name, justify="left" if name in ("retrain", "source") else "right")
    for row in rows:
        cells = [
            str(row.id),
            percent(row.err) + ("*" if row.partial else ""),
            percent(row.loss, 3),
            human(row.params),
            human(row.flops),
            str(row.depth),
            str(row.ops),
            percent(row.acc),
        ]
        cells += [percent(row.bench)] if bench else []
        table.add_row(*cells, row.retrain_state or "-", row.source)
    captions = []
    if any(row.partial for row in rows):
        # Sorted by error, these follow every complete score (storage.queries).
        captions.append("* partial: racing dropped it after part of the validation images")
    if bench:
        captions.append("bench: the benchmark table's accuracy (not retrained here)")
    if captions:
        table.caption = "; ".join(captions)
        table.caption_justify = "left"
    return table


# --- jobs, experiments, workers ----------------------------------------------------------------


def job_dict(job: Job) -> dict[str, Any]:
    """A job as JSON-able values (the objects of ``smash jobs --json``)."""
    return {
        "id": job.id,
        "experiment_id": job.experiment_id,
        "kind": job.kind,
        "state": job.state,
        "requested": job.requested,
        "priority": job.priority,
        "depends_on_id": job.depends_on_id,
        "progress": job.progress,
        "progress_text": job.progress_text,
        "eta_seconds": job.eta_seconds,
        "attempts": job.attempts,
        "worker_id": job.worker_id,
        "error": job.error,
        "params": job.params,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat()


def jobs_table(jobs: Sequence[Job]) -> Table:
    """The ``smash jobs`` table: one line per job (``--json`` has every field)."""
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("id", "exp", "kind", "state", "done", "eta", "worker", "status or error"):
        table.add_column(
            name,
            justify="right" if name in ("id", "exp", "done", "eta") else "left",
            # Only the last column gives way on a narrow terminal.
            no_wrap=True,
            min_width={"kind": 7, "state": 9, "status or error": None}.get(name, len(name)),
            overflow="ellipsis",
        )
    for job in jobs:
        state = Text(job.state, style=_STATE_STYLES.get(job.state, ""))
        if job.requested:
            state.append(f" ({job.requested})", style="dim")
        status = Text(first_line(job.error), style="red") if job.error else Text(job.progress_text)
        table.add_row(
            str(job.id),
            str(job.experiment_id),
            job.kind,
            state,
            f"{100 * job.progress:.0f}%",
            duration(job.eta_seconds) if job.state == "running" else "",
            _short_worker(job.worker_id) if job.state == "running" else "",
            status,
        )
    return table


def _short_worker(worker_id: str | None) -> str:
    """ "host:pid:uuid8" without the uuid, which only tells restarts apart."""
    if not worker_id:
        return ""
    return worker_id.rsplit(":", 1)[0]


def experiments_table(experiments: Sequence[Experiment]) -> Table:
    """The ``smash experiments`` table."""
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("id", "name", "data set", "preset", "status", "created"):
        table.add_column(
            name,
            justify="right" if name == "id" else "left",
            no_wrap=True,
            min_width=9 if name == "data set" else None,
        )
    for experiment in experiments:
        table.add_row(
            str(experiment.id),
            experiment.name,
            experiment.dataset,
            experiment.preset,
            Text(experiment.status, style=_STATE_STYLES.get(experiment.status, "")),
            when(experiment.created_at),
        )
    return table


def workers_table(
    workers: Sequence[WorkerInfo], local_gpus: Sequence[GpuStatus] = (), jobs: Mapping[int, str] | None = None
) -> Table:
    """Alive workers on every host, for ``smash info``: device, GPU, memory, load, job.

    Args:
        workers: The alive workers.
        local_gpus: This host's GPUs, for a worker of this host that sent no GPU figures.
        jobs: How each current job is shown (``storage.queries.job_labels``).
    """
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("worker", "host", "device", "GPU", "memory", "busy", "job", "last heartbeat"):
        table.add_column(name, no_wrap=name != "GPU")
    host = socket.gethostname()
    for worker in workers:
        gpu = worker_gpu(worker, list(local_gpus), host)
        memory = (
            f"{gpu.memory_used_mib / 1024:.1f}/{gpu.memory_total_mib / 1024:.0f} GiB"
            if gpu is not None and gpu.memory_total_mib
            else "-"
        )
        busy = f"{gpu.utilization_pct:.0f} %" if gpu is not None and gpu.utilization_pct is not None else "-"
        job = worker.current_job_id
        table.add_row(
            worker.id,
            worker.host,
            worker.device,
            gpu.name if gpu is not None else "-",
            memory,
            busy,
            "idle" if job is None else (jobs or {}).get(job, f"job {job}"),
            when(worker.heartbeat_at),
        )
    return table


def worker_json(
    worker: WorkerInfo, local_gpus: Sequence[GpuStatus] = (), jobs: Mapping[int, str] | None = None
) -> dict[str, object]:
    """An alive worker for ``smash info --json``: its row, its job's label and its GPU's latest figures."""
    gpu = worker_gpu(worker, list(local_gpus), socket.gethostname())
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "device": worker.device,
        "current_job_id": worker.current_job_id,
        "job": None if worker.current_job_id is None else (jobs or {}).get(worker.current_job_id),
        "heartbeat_at": worker.heartbeat_at.isoformat(),
        "gpu": None
        if gpu is None
        else {
            "index": worker.gpu_index,
            "uuid": worker.gpu_uuid,
            "name": gpu.name,
            "memory_used_mib": gpu.memory_used_mib if gpu.memory_total_mib else None,
            "memory_total_mib": gpu.memory_total_mib or None,
            "utilization_pct": gpu.utilization_pct,
        },
    }


# --- foreground progress -----------------------------------------------------------------------


class JobProgress:
    """Progress bars of a foreground worker (a ``WorkerObserver``), one per job.

    Args:
        console: Where to draw (the CLI uses stderr, keeping stdout for results).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self._tasks: dict[int, TaskID] = {}
        self._last_wait = ""

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def _task(self, job_id: int, kind: str = "") -> TaskID:
        if job_id not in self._tasks:
            self._tasks[job_id] = self.progress.add_task(
                f"job {job_id} {kind}".strip(), total=100.0, status="starting"
            )
        return self._tasks[job_id]

    def job_started(self, job_id: int, kind: str, experiment_id: int) -> None:
        del experiment_id  # one foreground run shows one experiment's jobs
        self.progress.update(self._task(job_id, kind), status="starting")

    def job_progress(self, job_id: int, fraction: float, text: str) -> None:
        self.progress.update(self._task(job_id), completed=100.0 * fraction, status=text)

    def job_ended(self, job_id: int, state: str, message: str) -> None:
        task = self._task(job_id)
        status = f"{state}: {message}" if message else state
        if state == "done":
            self.progress.update(task, completed=100.0, status=status)
        else:
            self.progress.update(task, status=status)
        self.progress.stop_task(task)

    def waiting(self, text: str) -> None:
        if text != self._last_wait:
            self._last_wait = text
            self.progress.console.print(f"[dim]waiting: {text}[/dim]")
