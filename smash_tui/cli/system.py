"""``smash info`` (version, paths, database, device, workers) and ``smash tui`` (the app)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import typer
from rich.table import Table

from smash_tui import __version__
from smash_tui.cli.common import DbOption, JsonOption, command, stdout
from smash_tui.cli.render import worker_json, workers_table
from smash_tui.gpus import gpu_status
from smash_tui.runner.launch import ALIVE_WITHIN_S
from storage.db import FILES_ENV, data_dir, open_database, redact_url, resolve_url
from storage.errors import StorageError
from storage.queries import job_labels
from storage.workers import alive_workers


@command
def info(json_: JsonOption = False, db: DbOption = None) -> None:
    """Print the version, paths, database URL (password hidden), device and alive workers."""
    url = resolve_url(db)  # a malformed --db is refused before torch loads
    from engine.device import device_report

    report: dict[str, Any] = {
        "version": __version__,
        "data_dir": str(data_dir()),
        "database": redact_url(url),
        **device_report(),
    }
    workers = []
    jobs: dict[int, str] = {}
    try:
        with open_database(url) as database:
            report["files_dir"] = str(database.files_dir)
            report["files_setting"] = (
                f"{FILES_ENV}" if os.environ.get(FILES_ENV) else f"{FILES_ENV} not set: the default"
            )
            report["logs_dir"] = str(database.logs_dir)
            workers = alive_workers(database, ALIVE_WITHIN_S)
            with database.session() as session:
                jobs = job_labels(session, (worker.current_job_id for worker in workers))
            report["workers_alive"] = len(workers)
    except StorageError as exc:
        report["database_error"] = str(exc)
    # Workers send their GPU's figures with their heartbeat; this host's GPUs are read
    # only for a CUDA worker of this host that sent none (one started before they did).
    host = socket.gethostname()
    silent_here = any(w.device.startswith("cuda") and w.host == host and not w.gpu_reported for w in workers)
    local_gpus = gpu_status() if silent_here else []
    report["workers"] = [worker_json(worker, local_gpus, jobs) for worker in workers]
    if json_:
        typer.echo(json.dumps(report))
    else:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        devices = ", ".join(report["devices"]) or "none"
        rows = [
            ("smash", report["version"]),
            ("data folder", report["data_dir"]),
            ("database", report["database"]),
            ("files", f"{report.get('files_dir', '-')} ({report.get('files_setting', '-')})"),
            ("logs", report.get("logs_dir", "-")),
            ("torch", report["torch"]),
            ("CUDA", f"{report['cuda_version'] or '-'} (available: {report['cuda_available']})"),
            ("GPUs", devices),
            ("default device", report["default_device"]),
            ("CPU threads", str(report["threads"])),
            ("workers alive", str(report.get("workers_alive", "-"))),
        ]
        for name, value in rows:
            table.add_row(name, value)
        out = stdout()
        out.print(table)
        if workers:
            out.print(workers_table(workers, local_gpus, jobs))
    if "database_error" in report:
        raise StorageError(report["database_error"])


@command
def tui(db: DbOption = None) -> None:
    """Open the terminal command center on the database (what bare `smash` does)."""
    from smash_tui.tui.app import run_app  # Textual loads only when the app is wanted

    run_app(db)
