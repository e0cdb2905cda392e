"""``smash worker --ddp``: the processes of one ``torchrun`` launch train one job together.

    torchrun --standalone --nproc_per_node 2 --no-python smash worker --ddp

Each process is a rank (`engine.distributed.World`: NCCL on GPUs, gloo on CPUs), rank
r on ``cuda:LOCAL_RANK`` when there are GPUs. Rank 0 is an ordinary worker that claims
``train`` jobs only: it registers, heartbeats, honours pause and cancel, and writes the
checkpoints, metrics and progress. After each look at the queue it tells the other
ranks the job it claimed (or that there is none, or that it is leaving); they read the
same job and experiment from the database and run the same training loop with a
reporter that writes nothing. A stop asked of any rank (SIGTERM, a pause) stops every
rank at the same step (`World.agree`), so the checkpoint is consistent and the job is
resumed later on any number of ranks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

import torch

from engine.device import resolve_device, set_threads
from engine.distributed import World, join_world, leave_world, local_rank
from engine.errors import ConfigError
from engine.jobs import ScoredArchitecture
from smash_tui.runner import handlers
from smash_tui.runner.config import WorkerConfig
from smash_tui.runner.worker import Worker
from storage import records
from storage.db import Database

log = logging.getLogger("smash.worker")


def rank_device(name: str) -> torch.device:
    """This rank's device for a ``--device`` value: ``cuda:LOCAL_RANK`` on GPUs.

    Raises:
        ConfigError: A numbered GPU (ranks take theirs by LOCAL_RANK), or one this host lacks.
    """
    text = name.strip().lower()
    if text.startswith("cuda:"):
        raise ConfigError(
            f"--device {name} with --ddp: each rank takes cuda:LOCAL_RANK; choose the GPUs "
            "with CUDA_VISIBLE_DEVICES"
        )
    device = resolve_device(text)
    if device.type == "cuda":
        return resolve_device(f"cuda:{local_rank()}")
    return device


def run_ddp_worker(db: Database, config: WorkerConfig, observer: object = None) -> int:
    """Be one rank of a DDP launch until rank 0 leaves (see the module docstring).

    Returns:
        The exit code: rank 0's worker's, 0 on the other ranks.
    """
    if config.kinds not in (None, ("train",)):
        raise ConfigError("--ddp trains HyperNets only: its workers take train jobs (--kinds train)")
    device = rank_device(config.device)
    if config.threads is not None:
        set_threads(config.threads)
    world = join_world(device)
    try:
        if world.is_main:
            worker = Worker(
                db,
                dataclasses.replace(config, device=str(device), kinds=("train",)),
                observer=observer,
                world=world,
            )
            restore = worker.install_signal_handlers()
            try:
                return worker.run()
            finally:
                restore()
        return _follow(db, device, world)
    finally:
        leave_world(world)


class _Silent:
    """The reporter of a rank other than 0: rank 0 reports; this one only hears stops."""

    def __init__(self, world: World, stop: threading.Event) -> None:
        self.world = world
        self._stop = stop

    def progress(self, fraction: float, text: str, eta_s: float | None = None) -> None:
        pass

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def event(self, message: str, level: str = "info") -> None:
        pass

    def checkpoint(self, step: int, path: str, metrics: Mapping[str, float]) -> None:
        pass

    def scored(self, results: Sequence[ScoredArchitecture]) -> None:
        pass

    def should_stop(self) -> bool:
        return self._stop.is_set()


def _follow(db: Database, device: torch.device, world: World) -> int:
    """A rank other than 0: train every job rank 0 announces, until it leaves."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()  # rank 0 gets the signal too (torchrun forwards it) and says when to leave

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    handler = _rank_log(db, world)
    try:
        while True:
            job_id = world.broadcast_int(None)
            if job_id < 0:
                return 0
            if job_id == 0:
                continue
            with db.session() as session:
                job = records.get_job(session, job_id)
                experiment = records.get_experiment(session, job.experiment_id)
            log.info("rank %d: training job %d with rank 0", world.rank, job_id)
            try:
                handlers.train(db, device, _Silent(world, stop), job, experiment)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - rank 0 records the failure; stay for the next job
                log.warning("rank %d: job %d failed here", world.rank, job_id, exc_info=True)
    finally:
        logging.getLogger("smash").removeHandler(handler)
        handler.close()


def _rank_log(db: Database, world: World) -> logging.Handler:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"ddp-rank{world.rank}-{os.getpid()}")
    handler = logging.FileHandler(db.logs_dir / f"worker-{name}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("smash")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler
