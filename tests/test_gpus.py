"""GPUs: NVML with nvidia-smi as the fallback, a worker's cuda:N through its
CUDA_VISIBLE_DEVICES, and GPU figures that travel with the worker's heartbeat."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from smash_tui import gpus
from smash_tui.gpus import GpuStatus, identify, read_gpu, visible_gpu, worker_gpu
from smash_tui.runner import worker as worker_module
from smash_tui.runner.handlers import HANDLERS
from smash_tui.runner.worker import Worker, WorkerConfig
from smash_tui.submit import queue_retrain
from storage.db import open_database
from storage.models import Worker as WorkerRow
from storage.workers import (
    GpuIdentity,
    GpuReading,
    alive_workers,
    register_worker,
    worker_heartbeat,
)
from tests.cli.support import retrain_experiment, smash

UUIDS = ("GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000",
         "GPU-cccc3333-0000-0000-0000-000000000000", "GPU-dddd4444-0000-0000-0000-000000000000")
FOUR = [GpuStatus(i, "NVIDIA H100 80GB HBM3", 1000.0 * i, 81559.0, 10.0 * i, UUIDS[i]) for i in range(4)]


def _fake_nvml(monkeypatch: pytest.MonkeyPatch, busy_fails: bool = False) -> types.ModuleType:
    """A `pynvml` module with two GPUs, put where `import pynvml` finds it."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    boards = [("NVIDIA A100-SXM4-40GB", UUIDS[0], 2 << 30, 40 << 30, 55), ("NVIDIA A100-SXM4-40GB", UUIDS[1], 1 << 30, 40 << 30, 3)]

    def utilization(handle: int) -> Any:
        if busy_fails:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=boards[handle][4], memory=0)

    nvml.NVMLError = NVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(boards)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda handle: boards[handle][0].encode()  # type: ignore[attr-defined]  # older bindings: bytes
    nvml.nvmlDeviceGetUUID = lambda handle: boards[handle][1]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=boards[handle][2], total=boards[handle][3], free=boards[handle][3] - boards[handle][2]
    )
    nvml.nvmlDeviceGetUtilizationRates = utilization  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml


def _fake_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, output: str) -> Path:
    """An `nvidia-smi` on PATH that prints `output` for the query; no NVML."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return script


def test_nvml_is_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvml(monkeypatch)
    monkeypatch.setattr(gpus, "smi_status", lambda: pytest.fail("nvidia-smi ran although NVML answered"))
    assert gpus.gpu_status() == [
        GpuStatus(0, "NVIDIA A100-SXM4-40GB", 2048.0, 40960.0, 55.0, UUIDS[0]),
        GpuStatus(1, "NVIDIA A100-SXM4-40GB", 1024.0, 40960.0, 3.0, UUIDS[1]),
    ]


def test_nvml_without_utilisation_still_gives_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvml(monkeypatch, busy_fails=True)
    assert [(g.memory_used_mib, g.utilization_pct) for g in gpus.gpu_status()] == [(2048.0, None), (1024.0, None)]


def test_nvidia_smi_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_smi(
        monkeypatch,
        tmp_path,
        f"0, NVIDIA H100 80GB HBM3, 40960, 81559, 97, {UUIDS[0]}\n"
        f"1, NVIDIA H100 80GB HBM3, 3, 81559, [N/A], {UUIDS[1]}\n",
    )
    assert gpus.gpu_status() == [
        GpuStatus(0, "NVIDIA H100 80GB HBM3", 40960.0, 81559.0, 97.0, UUIDS[0]),
        GpuStatus(1, "NVIDIA H100 80GB HBM3", 3.0, 81559.0, None, UUIDS[1]),
    ]


@pytest.mark.parametrize(
    ("device", "visible", "expected"),
    [
        ("cuda:1", None, 1),  # every GPU visible: CUDA's numbers are the driver's
        ("cuda", None, 0),
        ("cuda:1", "2,3", 3),  # the dashboard used to show GPU 1 here
        ("cuda:0", "3", 3),
        ("cuda:1", f"{UUIDS[2]},{UUIDS[0]}", 0),
        ("cuda:0", "GPU-cccc", 2),  # a UUID prefix, as CUDA accepts
        ("cuda:0", "GPU-", None),  # a prefix of every GPU names none
        ("cuda:1", "0,-1,2", None),  # CUDA stops at the first entry that names no GPU
        ("cuda:0", "", None),  # no GPU visible
        ("cuda:0", "MIG-5f2b4c3e-1111-2222-3333-444455556666", None),  # a MIG instance: best effort
        ("cpu", "0", None),
    ],
)
def test_a_cuda_device_maps_through_cuda_visible_devices(device: str, visible: str | None, expected: int | None) -> None:
    found = visible_gpu(device, FOUR, visible)
    assert (found.index if found is not None else None) == expected


def test_a_worker_identifies_its_gpu_from_its_own_environment() -> None:
    # torch's UUID is exact whatever the environment says.
    assert identify("cuda:0", uuid=UUIDS[3][4:], name="H100", environ={"CUDA_VISIBLE_DEVICES": "1"}, gpus=FOUR) == (
        GpuIdentity(index=3, uuid=UUIDS[3], name="H100")
    )
    # Without it, the worker's CUDA_VISIBLE_DEVICES decides.
    assert identify("cuda:1", environ={"CUDA_VISIBLE_DEVICES": "0,2"}, gpus=FOUR) == GpuIdentity(
        index=2, uuid=UUIDS[2], name="NVIDIA H100 80GB HBM3"
    )
    mig = "MIG-5f2b4c3e-1111-2222-3333-444455556666"
    assert identify("cuda:0", name="H100 MIG 1g.10gb", environ={"CUDA_VISIBLE_DEVICES": mig}, gpus=FOUR) == (
        GpuIdentity(index=None, uuid=mig, name="H100 MIG 1g.10gb")
    )
    assert identify("cpu", environ={}, gpus=FOUR) is None
    assert read_gpu(GpuIdentity(index=2, uuid=UUIDS[2]), FOUR) == GpuReading(2000.0, 81559.0, 20.0)
    assert read_gpu(GpuIdentity(index=1), FOUR) == GpuReading(1000.0, 81559.0, 10.0)
    assert read_gpu(GpuIdentity(uuid="GPU-ffff"), FOUR) is None


def test_the_heartbeat_stores_the_gpu_figures(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    identity = GpuIdentity(index=3, uuid=UUIDS[3], name="NVIDIA H100 80GB HBM3")
    worker_id = register_worker(db, device="cuda:1", host="gpu-host-2", pid=7, gpu=identity)
    worker_heartbeat(db, worker_id, gpu=GpuReading(40960.0, 81559.0, 97.0))
    worker_heartbeat(db, worker_id)  # a heartbeat without figures keeps the last ones
    (info,) = alive_workers(db, 60)
    assert (info.gpu_index, info.gpu_uuid, info.gpu_name) == (3, UUIDS[3], "NVIDIA H100 80GB HBM3")
    assert (info.gpu_memory_used_mib, info.gpu_memory_total_mib, info.gpu_utilization_pct) == (40960.0, 81559.0, 97.0)
    # Shown for a worker on another host, where this host has no GPU to ask.
    gpu = worker_gpu(info, [], socket.gethostname())
    assert gpu is not None and gpus.gpu_text(gpu) == "NVIDIA H100 80GB HBM3 · 40.0/80 GiB · 97 % busy"
    db.dispose()


def test_a_cuda_worker_registers_its_gpu_and_reports_it_with_every_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_database(str(tmp_path / "smash.db"))
    _, archs = retrain_experiment(db, 1)
    with db.session() as session:
        job = queue_retrain(session, archs[0], {"epochs": 1, "batch_size": 25}).id
        session.commit()
    # A worker on cuda:1 of a process that sees GPUs 2 and 3: its GPU is the driver's 3.
    monkeypatch.setattr(worker_module, "resolve_device", lambda name: torch.device("cuda", 1))
    monkeypatch.setattr(worker_module, "cuda_identity", lambda device: (None, "NVIDIA H100 80GB HBM3"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(gpus, "gpu_status", lambda: FOUR)
    seen: list[tuple[Any, ...]] = []
    beat = threading.Event()

    def job_that_waits_for_heartbeats(database: Any, device: torch.device, context: Any, *rest: Any) -> Any:
        for _ in range(3):  # a few heartbeats while the job runs
            beat.clear()
            assert beat.wait(10)
        with database.session() as session:
            row = session.get(WorkerRow, context.worker.worker_id)
            seen.append((row.gpu_index, row.gpu_uuid, row.gpu_name, row.gpu_memory_used_mib, row.gpu_utilization_pct))
        return lambda session: None

    real_heartbeat = worker_module.workers.worker_heartbeat

    def heartbeat(*args: Any, **kwargs: Any) -> None:
        real_heartbeat(*args, **kwargs)
        beat.set()

    monkeypatch.setattr(worker_module.workers, "worker_heartbeat", heartbeat)
    monkeypatch.setitem(HANDLERS, "retrain", job_that_waits_for_heartbeats)
    assert Worker(db, WorkerConfig(device="cuda:1", once=True, heartbeat_s=0.05)).run() == 0
    assert seen == [(3, UUIDS[3], "NVIDIA H100 80GB HBM3", 3000.0, 30.0)]
    del job
    db.dispose()


def test_smash_info_lists_every_alive_worker_with_its_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = str(tmp_path / "smash.db")
    db = open_database(url)
    remote = register_worker(
        db, device="cuda:0", host="gpu-host-2", pid=7, gpu=GpuIdentity(2, UUIDS[2], "NVIDIA H100 80GB HBM3")
    )
    worker_heartbeat(db, remote, gpu=GpuReading(40960.0, 81559.0, 97.0))
    register_worker(db, device="cpu", host="cpu-host", pid=8)
    db.dispose()
    monkeypatch.setattr(gpus, "gpu_status", lambda: pytest.fail("no local worker needs this host's GPUs"))
    report = json.loads(smash(url, "info", "--json").stdout)
    assert report["workers_alive"] == 2
    by_host = {worker["host"]: worker for worker in report["workers"]}
    assert by_host["gpu-host-2"]["gpu"] == {
        "index": 2, "uuid": UUIDS[2], "name": "NVIDIA H100 80GB HBM3",
        "memory_used_mib": 40960.0, "memory_total_mib": 81559.0, "utilization_pct": 97.0,
    }
    assert by_host["cpu-host"]["gpu"] is None
    monkeypatch.setenv("COLUMNS", "200")
    text = smash(url, "info").stdout
    assert "gpu-host-2" in text and "NVIDIA H100 80GB HBM3" in text and "40.0/80 GiB" in text and "97 %" in text
