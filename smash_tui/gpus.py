"""GPUs as the driver reports them, and which one a worker's ``cuda:N`` is (torch-free).

Name, memory and utilisation come from NVML (the optional extra ``gpu``:
``nvidia-ml-py``, imported as ``pynvml``: a library call, no process), else from
``nvidia-smi``. Workers read their own GPU here and send the figures with their
heartbeat (``storage.workers.GpuReading``), so the app and ``smash info`` show them
for workers on every host; the app reads this host's GPUs itself only for a worker
that sent none.

A worker's ``cuda:N`` is the N-th device its ``CUDA_VISIBLE_DEVICES`` lets it see, not
nvidia-smi's N: a worker started with ``CUDA_VISIBLE_DEVICES=2,3`` computes on GPU 3
as ``cuda:1``. ``visible_gpu`` maps a device through that variable (indices, GPU
UUIDs or their prefixes; a MIG instance's UUID is matched only when the driver lists
it), and ``identify`` prefers the UUID torch reports for the device, which is exact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # imported where used: the app keeps SQLAlchemy off its start-up path
    from storage.workers import GpuIdentity, GpuReading, WorkerInfo

MIB: Final = 1 << 20


@dataclass(frozen=True)
class GpuStatus:
    """One GPU as NVML or ``nvidia-smi`` reports it."""

    index: int  # the driver's index (nvidia-smi's; CUDA_VISIBLE_DEVICES renumbers it for a worker)
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    memory_used_mib: float  # memory in use, MiB
    memory_total_mib: float  # memory on the card, MiB
    utilization_pct: float | None  # GPU utilisation over the last sample; None if not reported
    uuid: str | None = None  # "GPU-..."; None when the source did not say

    def reading(self) -> GpuReading:
        """The figures a worker's heartbeat carries."""
        from storage.workers import GpuReading

        return GpuReading(self.memory_used_mib, self.memory_total_mib, self.utilization_pct)


NVIDIA_SMI_QUERY: Final = (
    "--query-gpu=index,name,memory.used,memory.total,utilization.gpu,uuid",
    "--format=csv,noheader,nounits",
)


def parse_nvidia_smi(text: str) -> list[GpuStatus]:
    """The GPUs in ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` output.

    Reads ``NVIDIA_SMI_QUERY``'s six fields, or the first five of them. Lines that
    cannot be read (a driver message, "[N/A]" memory) are skipped.
    """
    gpus = []
    for line in text.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) not in (5, 6):
            continue
        index, name, used, total, utilization = fields[:5]
        uuid = fields[5] if len(fields) == 6 and fields[5].startswith(("GPU-", "MIG-")) else None
        try:
            gpus.append(
                GpuStatus(
                    int(index),
                    name,
                    float(used),
                    float(total),
                    float(utilization) if utilization.replace(".", "", 1).isdigit() else None,
                    uuid,
                )
            )
        except ValueError:
            continue
    return gpus


def smi_status(timeout_s: float = 2.0) -> list[GpuStatus]:
    """This host's GPUs from ``nvidia-smi``; empty without it or on error."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        result = subprocess.run(
            [executable, *NVIDIA_SMI_QUERY],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


_nvml_ready: dict[int, bool] = {}  # id(pynvml module) -> whether nvmlInit succeeded


def nvml_status() -> list[GpuStatus] | None:
    """This host's GPUs from NVML; None when ``pynvml`` is missing or the driver refuses."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]  # the optional extra "gpu"
    except ImportError:
        return None
    try:
        if not _nvml_ready.get(id(pynvml)):
            pynvml.nvmlInit()  # once per process: it opens the driver
            _nvml_ready[id(pynvml)] = True
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # noqa: BLE001 - NVMLError: MIG mode and some boards report none
                utilization = None
            gpus.append(
                GpuStatus(
                    index,
                    _text(pynvml.nvmlDeviceGetName(handle)),
                    memory.used / MIB,
                    memory.total / MIB,
                    utilization,
                    _text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
        return gpus
    except Exception:  # noqa: BLE001 - NVMLError (no driver, no permission): nvidia-smi may still work
        return None


def gpu_status() -> list[GpuStatus]:
    """This host's GPUs: from NVML when it is installed and answers, else from ``nvidia-smi``."""
    gpus = nvml_status()
    return gpus if gpus is not None else smi_status()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- which GPU a worker's device is -------------------------------------------------------------


def visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: None when unset (every GPU, in order), else
    its entries up to the first one that names no device (CUDA ignores the rest too)."""
    if value is None:
        return None
    entries = []
    for entry in value.split(","):
        entry = entry.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def _normal_uuid(uuid: str) -> str:
    uuid = uuid.strip().lower()
    return uuid if uuid.startswith(("gpu-", "mig-")) else f"gpu-{uuid}"


def by_uuid(uuid: str, gpus: Sequence[GpuStatus]) -> GpuStatus | None:
    """The GPU with this UUID, or the one GPU whose UUID starts so (CUDA accepts prefixes)."""
    wanted = _normal_uuid(uuid)
    found = [gpu for gpu in gpus if gpu.uuid is not None and _normal_uuid(gpu.uuid).startswith(wanted)]
    return found[0] if len(found) == 1 else None


def device_number(device: str) -> int | None:
    """N of "cuda:N" ("cuda" is 0); None for any other device."""
    kind, _, number = device.partition(":")
    if kind != "cuda":
        return None
    return int(number) if number.isdigit() else 0


def visible_gpu(device: str, gpus: Sequence[GpuStatus], cuda_visible_devices: str | None) -> GpuStatus | None:
    """The GPU behind ``cuda:N`` for a process with this ``CUDA_VISIBLE_DEVICES``.

    Integer entries are taken as the driver's indices, which they are where CUDA numbers
    GPUs in PCI order (``CUDA_DEVICE_ORDER=PCI_BUS_ID``, or GPUs of one model); a UUID is
    exact. A MIG instance is found only when the driver lists its UUID.
    """
    number = device_number(device)
    if number is None:
        return None
    entries = visible_devices(cuda_visible_devices)
    if entries is None:
        return next((gpu for gpu in gpus if gpu.index == number), None)
    if number >= len(entries):
        return None
    entry = entries[number]
    if entry.isdigit():
        return next((gpu for gpu in gpus if gpu.index == int(entry)), None)
    return by_uuid(entry, gpus)


def identify(
    device: str,
    *,
    uuid: str | None = None,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
    gpus: Sequence[GpuStatus] | None = None,
) -> GpuIdentity | None:
    """The physical GPU a worker computes on, to record when it registers; None for a CPU.

    Args:
        device: the worker's device, e.g. "cuda:1".
        uuid: the device's UUID as torch reports it (exact, whatever the environment).
        name: the device's name as torch reports it.
        environ: the worker's environment (its ``CUDA_VISIBLE_DEVICES``); None: this process's.
        gpus: this host's GPUs; None reads them.
    """
    from storage.workers import GpuIdentity

    if device_number(device) is None:
        return None
    gpus = gpu_status() if gpus is None else gpus
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    found = by_uuid(uuid, gpus) if uuid else None
    if found is None:
        found = visible_gpu(device, gpus, visible)
    if uuid is None:
        entries = visible_devices(visible) or []
        number = device_number(device) or 0
        if number < len(entries) and entries[number].startswith("MIG-"):
            uuid = entries[number]  # best effort: the instance, though its parent GPU is unknown here
    return GpuIdentity(
        index=found.index if found is not None else None,
        uuid=(found.uuid if found is not None and found.uuid else None) or (_gpu_uuid(uuid) if uuid else None),
        name=name or (found.name if found is not None else None),
    )


def _gpu_uuid(uuid: str) -> str:
    """A UUID in nvidia-smi's spelling ("GPU-" and lower-case hex, as torch gives it without the prefix)."""
    text = uuid.strip()
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def read_gpu(identity: GpuIdentity, gpus: Sequence[GpuStatus] | None = None) -> GpuReading | None:
    """A worker's GPU's figures now (its heartbeat sends them); None when none can be read."""
    gpus = gpu_status() if gpus is None else gpus
    found = by_uuid(identity.uuid, gpus) if identity.uuid else None
    if found is None and identity.index is not None:
        found = next((gpu for gpu in gpus if gpu.index == identity.index), None)
    return found.reading() if found is not None else None


# --- a worker's GPU, for display ------------------------------------------------------------


def gpu_of(device: str, gpus: list[GpuStatus]) -> GpuStatus | None:
    """The GPU behind a device string read as nvidia-smi's index ("cuda" is 0, "cuda:N" N).

    Right only for a worker that saw every GPU (no CUDA_VISIBLE_DEVICES): what is left to
    go by for a worker registered before workers recorded their GPU (see `worker_gpu`).
    """
    if not device.startswith("cuda") or not gpus:
        return None
    _, _, number = device.partition(":")
    index = int(number) if number.isdigit() else 0
    return next((gpu for gpu in gpus if gpu.index == index), None)


def worker_gpu(worker: WorkerInfo, local: list[GpuStatus], host: str) -> GpuStatus | None:
    """A worker's GPU and its figures, for any host.

    What the worker's heartbeat sent (its own NVML or nvidia-smi reading, on whatever
    host it runs); else, for a worker on this host that sent none, this host's reading
    of the GPU the worker registered (by UUID, else nvidia-smi's index, which the worker
    mapped through its own CUDA_VISIBLE_DEVICES); else only the name it registered.
    """
    if not worker.device.startswith("cuda"):
        return None
    if worker.gpu_reported:
        return GpuStatus(
            -1 if worker.gpu_index is None else worker.gpu_index,
            worker.gpu_name or "GPU",
            worker.gpu_memory_used_mib or 0.0,
            worker.gpu_memory_total_mib or 0.0,
            worker.gpu_utilization_pct,
            worker.gpu_uuid,
        )
    found = None
    if worker.host == host and local:
        if worker.gpu_uuid is not None:
            found = by_uuid(worker.gpu_uuid, local)
        if found is None and worker.gpu_index is not None:
            found = next((gpu for gpu in local if gpu.index == worker.gpu_index), None)
        if found is None and (worker.gpu_uuid, worker.gpu_index, worker.gpu_name) == (None, None, None):
            found = gpu_of(worker.device, local)  # registered before workers recorded their GPU
    if found is None and worker.gpu_name is not None:
        return GpuStatus(-1 if worker.gpu_index is None else worker.gpu_index, worker.gpu_name, 0.0, 0.0, None)
    return found


def gpu_text(gpu: GpuStatus) -> str:
    """The GPU in one phrase, as much as is known: e.g. NVIDIA H100 80GB HBM3 · 40.0/80 GiB · 97 % busy."""
    text = gpu.name
    if gpu.memory_total_mib:
        text += f" · {gpu.memory_used_mib / 1024:.1f}/{gpu.memory_total_mib / 1024:.0f} GiB"
    if gpu.utilization_pct is not None:
        text += f" · {gpu.utilization_pct:.0f} % busy"
    return text
