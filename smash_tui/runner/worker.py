"""The worker: claims jobs from the database and runs them with the engine.

``Worker.run`` registers the process, then claims and runs jobs until it is told to
stop (SIGTERM, Ctrl-C, ``stop()``) or, with ``once``, until nothing is left to claim.
A background thread sends heartbeats every few seconds (job progress, the worker's
own liveness), picks up pause and cancel requests, and requeues jobs of workers that
went silent. The engine loops poll ``should_stop`` between steps; a stopped job has
checkpointed and is marked paused, cancelled or requeued, and the next claim resumes
it from its checkpoint.

Everything the job produces is written as it comes: metric points in batches,
checkpoints, scored architectures in small committed batches (a ``kill -9`` loses
at most the last uncommitted handful), activity-log events. Logs go to a file under
the database's logs folder, never to a terminal; a foreground caller watches through
a ``WorkerObserver`` instead.

Metric names: train jobs ``loss``, ``accuracy``, ``lr``, ``images_per_s`` (per report
step) and ``val_error``, ``val_loss`` (per epoch end); retrain jobs ``train_loss``,
``train_acc``, ``val_acc``, ``lr``, ``images_per_s`` (per epoch).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
from sqlalchemy import select

from engine.arch import InvalidArchitecture
from engine.checkpoint import CheckpointError
from engine.device import cuda_identity, resolve_device, set_threads, sticky_device_error
from engine.distributed import SINGLE, World
from engine.errors import (
    ChunkError,
    ConfigError,
    DatasetError,
    DeviceMemoryError,
    RetrainError,
    first_line,
)
from engine.space import InvalidSearchSpace
from engine.train import TrainingDiverged
from smash_tui import gpus
from smash_tui.runner.config import WorkerConfig
from smash_tui.runner.handlers import HANDLERS, Finalizer
from smash_tui.runner.reporter import JobContext
from storage import queue, records, workers
from storage.db import Database
from storage.errors import JobStateError, StorageError
from storage.models import Job
from storage.queries import list_jobs

log = logging.getLogger("smash.worker")

# Errors whose message is meant for the user as it is; anything else is a bug or an
# accident of the environment and gets its type name and a pointer to the log.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatasetError,
    CheckpointError,
    InvalidArchitecture,
    InvalidSearchSpace,
    TrainingDiverged,
    RetrainError,
    StorageError,
    ChunkError,
    DeviceMemoryError,
)
# `Worker.run`'s exit status when its device failed for good (a sticky CUDA error): its
# job went back to the queue for a fresh worker.
EXIT_DEVICE_FAILED = 1  # the command line's "failure"


class WorkerObserver(Protocol):
    """What a foreground caller sees of a worker (called from the worker's thread)."""

    def job_started(self, job_id: int, kind: str, experiment_id: int) -> None:
        """A job was claimed and is starting (or resuming)."""

    def job_progress(self, job_id: int, fraction: float, text: str) -> None:
        """A running job reported progress."""

    def job_ended(self, job_id: int, state: str, message: str) -> None:
        """A job ended here: done, failed, paused, cancelled, queued (requeued) or lost."""

    def waiting(self, text: str) -> None:
        """Nothing to claim now; the worker waits for the jobs it was given."""




class Worker:
    """A worker process's main loop (see the module docstring).

    Args:
        db: The database to take jobs from.
        config: Device, kinds, timings.
        observer: Told about jobs as they run (the foreground CLI's progress bars).
    """

    def __init__(
        self,
        db: Database,
        config: WorkerConfig = WorkerConfig(),
        observer: Any = None,
        world: World = SINGLE,
    ) -> None:
        self.db = db
        self.config = config
        # The ranks of a `smash worker --ddp` launch; this worker is rank 0 and tells the
        # others (`smash_tui.runner.ddp`) which job to train with it.
        self.world = world
        self.observer: WorkerObserver | None = observer
        self.worker_id: str | None = None
        self.log_path: Path | None = None
        self.interrupted = False  # stopped by Ctrl-C: the foreground CLI exits with 130
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._heartbeat_kick = threading.Event()
        # The running job, and a chunk of it that its search runs here (`run_nested`).
        self._contexts: list[JobContext] = []
        self._device: torch.device | None = None
        self._gpu: workers.GpuIdentity | None = None  # its GPU, when it computes on one
        self._lock: workers.WorkerLock | None = None
        self.jobs_run = 0  # jobs claimed by this worker (``smash worker --once`` reports none)
        self.device_failure: str | None = None  # why the device became unusable, if it did

    # --- control ---

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: the current job checkpoints and is requeued."""
        return self._stop.is_set()

    def stop(self, *, interrupted: bool = False) -> None:
        """Ask the worker to stop after the current step (safe from a signal handler)."""
        self.interrupted = self.interrupted or interrupted
        self._stop.set()
        self._wake.set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Make SIGTERM and SIGINT stop the worker gracefully; a second Ctrl-C aborts at once.

        Returns:
            A function that restores the previous handlers.
        """
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, _frame: FrameType | None) -> None:
            if signum == signal.SIGINT and self.stopping:
                raise KeyboardInterrupt
            log.info("received %s: stopping after the current step", signal.Signals(signum).name)
            self.stop(interrupted=signum == signal.SIGINT)

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def notify(self, method: str, *args: Any) -> None:
        """Call an observer method, if there is an observer; its errors never stop a job."""
        if self.observer is None:
            return
        try:
            getattr(self.observer, method)(*args)
        except Exception:  # noqa: BLE001 - a display problem must not fail the job
            log.warning("observer %s failed", method, exc_info=True)

    # --- the main loop ---

    def run(self) -> int:
        """Register, claim and run jobs until stopped (or, with ``once``, until none is left).

        Returns:
            0; 130 when Ctrl-C stopped it; ``EXIT_DEVICE_FAILED`` when a sticky CUDA error
            made its device unusable (its job was requeued: see ``device_failure``).

        Raises:
            ConfigError: The device does not exist here.
            StorageError: The database cannot be used.
        """
        self._device = resolve_device(self.config.device)
        if self.config.threads is not None:
            set_threads(self.config.threads)
        label = str(self._device)
        if self.world.size > 1:
            label += f" (ddp, {self.world.size} processes)"
        self._gpu = self._identify_gpu(self._device)
        self.worker_id = workers.register_worker(self.db, device=label, gpu=self._gpu)
        # Held until the process ends: other processes on this host then know at once.
        self._lock = workers.hold_worker_lock(self.db, self.worker_id)
        try:
            handler = self._open_log()
        except BaseException:  # e.g. an unwritable files root: leave no worker row that looks alive
            self.world.broadcast_int(-1)  # the other ranks leave
            workers.stop_worker(self.db, self.worker_id)
            raise
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="smash-heartbeat", daemon=True
        )
        log.info(
            "worker %s started on %s (database %s, pid %d)",
            self.worker_id,
            self._device,
            self.db.redacted_url,
            os.getpid(),
        )
        heartbeat.start()
        try:
            self._take_from_lost_workers()
            while not self.stopping:
                job_id = queue.claim(
                    self.db, self.worker_id, kinds=self.config.kinds, job_ids=self.config.job_ids
                )
                self.world.broadcast_int(job_id or 0)  # the other ranks train it too (0: none)
                if job_id is not None:
                    self.jobs_run += 1
                    self._run_job(job_id)
                    continue
                if self._nothing_left():
                    break
                self._wake.wait(self.config.poll_s)
                self._wake.clear()
        finally:
            self.world.broadcast_int(-1)  # the other ranks leave
            self._heartbeat_stop.set()
            self._heartbeat_kick.set()
            heartbeat.join(timeout=30)
            try:
                workers.stop_worker(self.db, self.worker_id)
            except StorageError:
                log.warning("could not record the worker's stop", exc_info=True)
            if self._lock is not None:
                self._lock.release()
            log.info("worker %s stopped", self.worker_id)
            logging.getLogger("smash").removeHandler(handler)
            handler.close()
        if self.device_failure is not None:
            return EXIT_DEVICE_FAILED
        return 130 if self.interrupted else 0

    def _take_from_lost_workers(self) -> None:
        """Requeue the jobs of workers that are gone: at once for this host's, else once stale."""
        for job_id in workers.requeue_gone_workers(self.db):
            log.warning(
                "took job %d from a worker of this host whose process is gone "
                "(its events say whether it was requeued or failed)",
                job_id,
            )
        for job_id in workers.requeue_stale(self.db, self.config.stale_after_s):
            log.warning(
                "took job %d from a worker that stopped sending heartbeats "
                "(its events say whether it was requeued or failed)",
                job_id,
            )

    def _open_log(self) -> logging.Handler:
        assert self.worker_id is not None
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self.worker_id)
        self.log_path = self.db.logs_dir / f"worker-{name}.log"
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("smash")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # never to a terminal: a UI may own it
        return handler

    def _nothing_left(self) -> bool:
        """Whether the loop should end now that nothing could be claimed."""
        if self.config.job_ids is None:
            return self.config.once
        with self.db.session() as session:
            jobs = session.scalars(
                select(Job)
                .where(Job.id.in_(self.config.job_ids))
                .order_by(Job.id)
                .execution_options(populate_existing=True)
            ).all()
            waiting_on: list[str] = []
            for job in jobs:
                if job.state == "running":
                    waiting_on.append(f"job {job.id} ({job.kind}) runs on worker {job.worker_id}")
                elif job.state == "queued":
                    dependency = (
                        None
                        if job.depends_on_id is None
                        else records.get_job(session, job.depends_on_id)
                    )
                    if dependency is None or dependency.state in ("queued", "running"):
                        waiting_on.append(f"job {job.id} ({job.kind}) is queued")
        if not waiting_on:
            return True
        self.notify("waiting", "; ".join(waiting_on))
        return False

    # --- heartbeats ---

    @staticmethod
    def _identify_gpu(device: torch.device) -> workers.GpuIdentity | None:
        """The physical GPU this worker computes on (None for a CPU worker), to register."""
        if device.type != "cuda":
            return None
        uuid, name = cuda_identity(device)
        try:
            return gpus.identify(str(device), uuid=uuid, name=name)
        except Exception:  # noqa: BLE001 - a driver query must not keep a worker from starting
            log.warning("could not read this worker's GPU from the driver", exc_info=True)
            return workers.GpuIdentity(uuid=uuid, name=name)

    def _gpu_reading(self) -> workers.GpuReading | None:
        """This worker's GPU's memory and load now (NVML, else nvidia-smi), for the heartbeat."""
        if self._gpu is None:
            return None
        try:
            return gpus.read_gpu(self._gpu)
        except Exception:  # noqa: BLE001 - the heartbeat goes on without the figures
            log.debug("could not read the GPU's figures", exc_info=True)
            return None

    def _heartbeat_loop(self) -> None:
        assert self.worker_id is not None
        stale_every = max(1.0, min(30.0, self.config.stale_after_s / 2))
        last_stale_check = time.monotonic()
        while True:
            self._heartbeat_kick.wait(self.config.heartbeat_s)
            self._heartbeat_kick.clear()
            if self._heartbeat_stop.is_set():
                return
            try:
                workers.worker_heartbeat(self.db, self.worker_id, gpu=self._gpu_reading())
                for context in list(self._contexts):
                    control = self._send_progress(context)
                    if context in self._contexts:
                        context.apply(control)
                if time.monotonic() - last_stale_check >= stale_every:
                    last_stale_check = time.monotonic()
                    self._take_from_lost_workers()
            except Exception:  # noqa: BLE001 - a busy database must not kill the heartbeat
                log.warning("heartbeat failed", exc_info=True)

    # --- one job ---

    def run_nested(self, job_id: int, parent: JobContext) -> None:
        """Run a chunk of the running search here, claimed by its coordinator while it waits.

        The chunk has its own heartbeats and transitions (done, failed, requeued), stops
        when the search stops, and tells the foreground observer nothing. Afterwards the
        worker's current job is the search again.
        """
        self._run_job(job_id, parent)
        assert self.worker_id is not None
        try:
            workers.set_current_job(self.db, self.worker_id, parent.job_id)
        except StorageError:
            log.warning("could not record job %d as current again", parent.job_id, exc_info=True)

    def _tell(self, context: JobContext, method: str, *args: Any) -> None:
        """Notify the observer of a job's own start and end (a nested chunk's stay unseen)."""
        if context.parent is None:
            self.notify(method, *args)

    def _run_job(self, job_id: int, parent: JobContext | None = None) -> None:
        with self.db.session() as session:
            job = records.get_job(session, job_id)
            experiment = records.get_experiment(session, job.experiment_id)
            if experiment.status != "running":
                records.set_experiment_status(session, experiment.id, "running")
            session.commit()
        context = JobContext(self, job, parent)
        self._contexts.append(context)
        self._heartbeat_kick.set()  # a pause asked for before the claim is seen at once
        log.info("job %d (%s) claimed, attempt %d", job.id, job.kind, job.attempts)
        self._tell(context, "job_started", job.id, job.kind, job.experiment_id)
        try:
            assert self._device is not None
            finalize = HANDLERS[job.kind](self.db, self._device, context, job, experiment)
            context.flush_metrics()
            self._last_heartbeat(context)
            if finalize is None or context.taken_away:
                state = self._stopped(context)
                self._tell(context, "job_ended", job.id, state, "")
            else:
                self._finish(context, finalize)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a failed job
            if sticky_device_error(exc):
                self._device_failed(context, exc)
            else:
                self._failed(context, exc)
        except BaseException:
            # A second Ctrl-C: give the job back rather than leave it running until stale.
            self._give_back(context)
            raise
        finally:
            self._contexts.remove(context)
            if parent is None:
                self._update_experiment_status(job.experiment_id)

    def _last_heartbeat(self, context: JobContext) -> None:
        """Write the job's final progress text, which the periodic heartbeat may not have sent."""
        assert self.worker_id is not None
        if context.pending_progress()[1] is not None:
            context.apply(self._send_progress(context))

    def _send_progress(self, context: JobContext) -> queue.Control:
        """One job heartbeat with the job's latest progress; returns what the user asked of it."""
        assert self.worker_id is not None
        fraction, text, eta = context.pending_progress()
        return queue.heartbeat(self.db, context.job_id, self.worker_id, progress=fraction, progress_text=text, eta=eta)

    def _finish(self, context: JobContext, finalize: Finalizer) -> None:
        assert self.worker_id is not None
        try:
            with self.db.session() as session:
                queue.finish(session, context.job_id, worker_id=self.worker_id)
                finalize(session)
                session.commit()
        except JobStateError as exc:
            log.warning("job %d: results not marked done: %s", context.job_id, exc)
            self._tell(context, "job_ended", context.job_id, "lost", str(exc))
            return
        log.info("job %d (%s) done", context.job_id, context.kind)
        self._tell(context, "job_ended", context.job_id, "done", "")

    def _stopped(self, context: JobContext) -> str:
        """Mark a job that stopped on request: paused, cancelled or back in the queue."""
        assert self.worker_id is not None
        if context.taken_away:
            log.warning(
                "job %d was taken away from this worker; its results stop here", context.job_id
            )
            return "lost"
        try:
            with self.db.session() as session:
                job = records.get_job(session, context.job_id)
                if job.requested == "cancel":
                    job = queue.mark_cancelled(session, job.id, worker_id=self.worker_id)
                elif job.requested == "pause":
                    job = queue.mark_paused(session, job.id, worker_id=self.worker_id)
                else:
                    # Shutting down, or a pause withdrawn in the meantime: back to the queue.
                    job = queue.requeue(session, job.id, worker_id=self.worker_id)
                # The queue closes a cancelled retrain and updates the browser's state.
                session.commit()
        except JobStateError as exc:
            log.warning("job %d: could not record its stop: %s", context.job_id, exc)
            return "lost"
        log.info("job %d (%s) stopped: now %s", context.job_id, context.kind, job.state)
        return job.state

    def _failed(self, context: JobContext, exc: Exception) -> None:
        assert self.worker_id is not None
        if isinstance(exc, USER_ERRORS):
            message = first_line(exc)
            log.error("job %d (%s) failed: %s", context.job_id, context.kind, message, exc_info=exc)
        else:
            message = f"{type(exc).__name__}: {first_line(exc)} (traceback in {self.log_path})"
            log.error("job %d (%s) failed", context.job_id, context.kind, exc_info=exc)
        try:
            context.flush_metrics()
        except Exception:  # noqa: BLE001 - the failure itself matters more than its last points
            log.warning("job %d: could not write its last metrics", context.job_id, exc_info=True)
        try:
            with self.db.session() as session:
                if context.retrain_id is not None:
                    records.fail_retrain(session, context.retrain_id)
                queue.fail(session, context.job_id, message, worker_id=self.worker_id)
                session.commit()
        except Exception as error:  # noqa: BLE001 - a worker must outlive a job it cannot record
            log.warning("job %d: could not record its failure: %s", context.job_id, error)
        self._tell(context, "job_ended", context.job_id, "failed", message)

    def _device_failed(self, context: JobContext, exc: Exception) -> None:
        """A sticky CUDA error: the job goes back to the queue, not failed, and this worker ends.

        After such an error every CUDA call of this process fails, so every later job
        here would fail the same way. The job is not to blame: it is requeued without
        counting as a lost worker, and a fresh worker process (a new CUDA context) takes it.
        """
        assert self.worker_id is not None
        reason = first_line(exc, 300)
        self.device_failure = (
            f"device {self._device} failed with a CUDA error after which this process cannot use it "
            f"({reason}); job {context.job_id} went back to the queue and worker {self.worker_id} exits"
        )
        log.error("job %d (%s): %s", context.job_id, context.kind, self.device_failure, exc_info=exc)
        try:
            context.flush_metrics()
        except Exception:  # noqa: BLE001 - the database matters, not the last points
            log.warning("job %d: could not write its last metrics", context.job_id, exc_info=True)
        state = "queued"
        try:
            with self.db.session() as session:
                state = queue.requeue(session, context.job_id, worker_id=self.worker_id).state
                records.add_event(
                    session,
                    f"job {context.job_id} {'requeued' if state == 'queued' else state}, not failed: "
                    f"worker {self.worker_id}'s device failed ({reason}); the worker exits and "
                    "a fresh one takes the job",
                    level="warning",
                    job_id=context.job_id,
                )
                session.commit()
        except Exception:  # noqa: BLE001 - the stale timeout requeues it otherwise
            log.warning("job %d: could not requeue it", context.job_id, exc_info=True)
        self._tell(context, "job_ended", context.job_id, state, self.device_failure)
        self.stop()

    def _give_back(self, context: JobContext) -> None:
        assert self.worker_id is not None
        try:
            with self.db.session() as session:
                queue.requeue(session, context.job_id, worker_id=self.worker_id)
                session.commit()
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.warning("job %d: could not requeue it", context.job_id, exc_info=True)

    def _update_experiment_status(self, experiment_id: int) -> None:
        try:
            with self.db.session() as session:
                states = {job.state for job in list_jobs(session, experiment_id)}
                if states & {"queued", "running", "paused"}:
                    status = "running"
                elif "failed" in states:
                    status = "failed"
                elif states == {"cancelled"}:
                    status = "cancelled"
                else:
                    status = "done"
                records.set_experiment_status(session, experiment_id, status)
                session.commit()
        except StorageError:
            log.warning("could not update experiment %d's status", experiment_id, exc_info=True)
