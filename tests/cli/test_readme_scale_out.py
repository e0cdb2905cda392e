"""Every command of the README's "Several GPUs and hosts", run on the CPU as far as it goes.

The commands are read from the README itself and run in its order, each for real
with what this machine lacks put in: the test's database and files folder for the
shared ones, 2 CPU processes for the 8 GPUs of the training launch, CPU workers
(each started with its GPU's CUDA_VISIBLE_DEVICES, as on a GPU host) for
``smash workers --gpus all``, and a tiny data set and budget for the experiment.
The experiment must then train on the launch's two processes and fan out over the
workers.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from smash_tui.runner import launch
from smash_tui.runner.launch import LaunchedWorker
from storage.db import normalize_url, open_database, redact_url
from storage.models import Job, Score, Worker
from storage.workers import alive_workers
from tests.cli.support import SMASH, TINY_DATA, stop, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
# What the experiment needs to run here in seconds (later options win over the README's).
TINY_EXPERIMENT = [
    "--dataset", "synthetic", "--preset", "tiny", "--hypernet", "compact", "--archs", "12",
    "--max-steps", "4", "--batch-size", "16", "--eval-archs", "1", "--score-images", "20",
    "--chunk", "3", "--search-batch", "12", "--bn-recalibration", "0", *TINY_DATA,
]  # fmt: skip


def readme_commands() -> list[list[str]]:
    """The commands of the section's code block, comments left out."""
    text = README.read_text()
    section = text.split("## Several GPUs and hosts", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the section has no bash block"
    return [shlex.split(line) for line in block[1].splitlines() if line.strip() and not line.startswith("#")]


def test_the_section_shows_every_part_of_a_scale_out() -> None:
    commands = [" ".join(command) for command in readme_commands()]
    assert [c.split()[0] for c in commands] == ["export", "export", "smash", "torchrun", "smash", "smash"]
    assert commands[0].startswith("export SMASH_DB=postgresql://")
    assert commands[1].startswith("export SMASH_FILES=")
    assert "--no-python smash worker --ddp" in commands[3]
    assert commands[4].startswith("smash workers --gpus all")


@pytest.mark.slow
@pytest.mark.xdist_group("readme")
def test_every_command_of_several_gpus_and_hosts_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["OMP_NUM_THREADS"] = "1"
    url = normalize_url(str(tmp_path / "smash.db"))
    processes: list[subprocess.Popen[bytes]] = []
    launched: list[dict[str, Any]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def smash_here(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        wide = {**env, "COLUMNS": "400"}  # paths in tables uncut
        return subprocess.run([*SMASH, *args], env=wide, capture_output=True, text=True, timeout=timeout, check=False)

    def launch_on_cpu(db: Any, *, device: str, threads: Any, extra: tuple[str, ...], environment: dict[str, str]) -> LaunchedWorker:
        # A GPU worker as `smash workers` starts it, its GPU swapped for the CPU.
        launched.append({"device": device, "extra": extra, "environment": environment})
        output = logs / f"worker-{len(launched)}.out"
        command = [*SMASH, "worker", "--device", "cpu", "--threads", "1", "--poll", "0.3", "--heartbeat", "0.3", *extra]
        with open(output, "ab") as out:
            process = subprocess.Popen(command, env={**env, **environment}, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        return LaunchedWorker(pid=process.pid, output_path=output)

    try:
        for command in readme_commands():
            line = " ".join(command)
            if command[0] == "export":
                name, _, value = command[1].partition("=")
                if name == "SMASH_DB":
                    assert normalize_url(value).startswith("postgresql")  # a URL smash accepts
                    value = url  # this test's database
                elif name == "SMASH_FILES":
                    value = str(tmp_path / "shared-files")
                env[name] = value
                monkeypatch.setenv(name, value)
            elif command[0] == "torchrun":
                assert command[command.index("--nproc_per_node") + 1] == "8"
                args = [arg if arg != "8" else "2" for arg in command]  # 2 CPU processes for 8 GPUs
                args += ["--device", "cpu", "--threads", "1", "--poll", "0.3", "--heartbeat", "0.3"]
                with open(logs / "torchrun.out", "ab") as out:
                    processes.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT))
            elif command[:2] == ["smash", "workers"]:
                # In this process, so that the host's GPUs and the launch can be put in.
                from typer.testing import CliRunner

                from smash_tui.cli import app

                monkeypatch.setattr(launch, "visible_gpus", lambda: ["0", "1"])
                monkeypatch.setattr(launch, "launch_worker", launch_on_cpu)
                result = CliRunner().invoke(app, command[1:])
                assert result.exit_code == 0, line + "\n" + result.stderr
                assert result.stdout.count("started a worker on GPU") == 2
                assert [w["environment"] for w in launched] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
                assert all(w["device"] == "cuda:0" for w in launched)  # each sees its GPU alone
                # As on the hosts, the workers are up before anyone queues (the launch's rank 0 too).
                with open_database(url) as db:
                    wait_for(lambda: len(alive_workers(db, 30)) == 3, 90, "the launch and the workers")  # noqa: B023
            elif command[:2] == ["smash", "search"]:
                result = smash_here([*command[1:], *TINY_EXPERIMENT])
                stray = re.search(r"launched a background worker \(pid (\d+)", result.stderr)
                if stray:  # detached, in a session of its own: stopped by its pid
                    os.kill(int(stray[1]), signal.SIGTERM)
                assert result.returncode == 0, line + "\n" + result.stderr
                assert stray is None  # workers were alive: none started
            else:
                assert command[:2] == ["smash", "info"], f"a command this test does not know: {line}"
                result = smash_here(command[1:])
                assert result.returncode == 0, result.stderr
                assert redact_url(url) in result.stdout and str(tmp_path / "shared-files") in result.stdout

        db = open_database(url)
        try:

            def ended() -> bool:
                with db.session() as session:
                    states = session.scalars(select(Job.state).where(Job.parent_id.is_(None))).all()
                return len(states) == 2 and all(state in ("done", "failed") for state in states)

            wait_for(ended, 180, "the experiment's jobs", every=0.3)
            with db.session() as session:
                jobs = {job.kind: job for job in session.scalars(select(Job).where(Job.parent_id.is_(None)))}
                assert {kind: job.state for kind, job in jobs.items()} == {"train": "done", "search": "done"}, [
                    job.error for job in jobs.values()
                ]
                trainer = session.get(Worker, jobs["train"].worker_id)
                assert trainer is not None and trainer.device == "cpu (ddp, 2 processes)"
                chunks = session.scalars(select(Job).where(Job.parent_id == jobs["search"].id)).all()
                assert len(chunks) == 4 and {c.state for c in chunks} == {"done"}
                assert session.scalar(select(Score.id).where(Score.job_id == jobs["search"].id)) is not None
        finally:
            db.dispose()
    finally:
        for process in processes:
            stop(process)
