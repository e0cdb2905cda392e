"""Scale-out on the CPU: one search scored by 1 and by 2 workers, and 2-process DDP training.

Part 1 (fan-out). One HyperNet is trained briefly, then the same search of K random
architectures is scored twice from copies of that database, against the same
checkpoint: once by one ``smash worker`` process and once by two, each on one CPU
thread. The workers are started and alive before the search is resumed, so the wall
time is from the search's start to its end (each worker loading the checkpoint and
the validation images included: that is what a chunk on a fresh worker costs).
Reported side by side: wall time, architectures per minute, the speed-up, and the
achieved GFLOP/s of the derived networks' forward passes (each architecture's FLOPs
per image, as stored, times the images it was scored on; the HyperNet's weight
generation is not counted). The two runs must store the same scores.

Part 2 (DDP). ``scripts/ddp_smoke.py`` under ``torchrun --nproc_per_node 2`` (gloo,
one thread a process): two processes train the HyperNet with a global batch of B,
each on B/2, against one process on B; steps and images per second of both, and the
largest weight difference after the same steps.

A 2-core machine has 2 cores for 2 workers only when nothing else runs: the load
average at the start is recorded beside the figures, and so is how many cores the
workers had on average while scoring (their CPU seconds over the wall time, from
/proc): two workers that had one core between them cannot be twice as fast.

    python benchmarks/scale_out.py --archs 60 --out scale_out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from results import SHARED_DATA, write_result  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from engine.plans import SearchRequest  # noqa: E402
from smash_tui.cli.search import create_search  # noqa: E402
from smash_tui.runner.worker import Worker, WorkerConfig  # noqa: E402
from storage.control import request_pause, resume  # noqa: E402
from storage.db import normalize_url, open_database  # noqa: E402
from storage.models import Architecture, Job, Score  # noqa: E402
from storage.workers import alive_workers  # noqa: E402

SMASH = [sys.executable, "-c", "from smash_tui.cli import main; main()"]
DEFAULT_DATA = SHARED_DATA / "cifar10-subset"


def _trained(url: str, args: argparse.Namespace) -> int:
    """Train the HyperNet of a new experiment in this process; its search stays paused. Its id."""
    dataset = f"npz:{args.data}" if args.data is not None else "synthetic"
    db = open_database(url)
    try:
        created = create_search(
            db,
            SearchRequest(
                dataset=dataset,
                preset=args.preset,
                hypernet="compact",
                epochs=1,
                max_steps=args.train_steps,
                batch_size=32,
                eval_archs=1,
                archs=args.archs,
                chunk=args.chunk,
                score_images=args.score_images,
                bn_recalibration=0,
                seed=0,
                val_size=args.score_images,
                name="scale-out",
            ),
        )
        with db.session() as session:
            request_pause(session, created.search_job_id)
            session.commit()
        code = Worker(db, WorkerConfig(device="cpu", kinds=("train",), once=True, threads=1)).run()
        if code != 0:
            raise SystemExit(f"training the HyperNet failed (worker exit {code})")
        return created.search_job_id
    finally:
        db.dispose()


def _copy(source: Path, target: Path) -> str:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return normalize_url(str(target))


def _cpu_s(pid: int) -> float | None:
    """CPU seconds a process has used (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _score_with(url: str, search_id: int, workers: int, logs: Path) -> dict[str, Any]:
    """Resume the search once `workers` worker processes are up; time it to its end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*SMASH, "worker", "--db", url, "--device", "cpu", "--threads", "1", "--poll", "0.2"]
    processes = []
    for i in range(workers):
        with open(logs / f"{workers}-{i}.out", "ab") as out:
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    db = open_database(url)
    try:
        deadline = time.monotonic() + 120
        while len(alive_workers(db, 30)) < workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} workers did not start; see {logs}")
            time.sleep(0.1)
        idle_cpu = [_cpu_s(p.pid) for p in processes]
        with db.session() as session:
            resume(session, search_id)
            session.commit()
        start = time.perf_counter()
        while True:
            with db.session() as session:
                state = session.scalar(select(Job.state).where(Job.id == search_id))
            if state in ("done", "failed", "cancelled"):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
        # CPU the workers got while scoring: on a busy machine two workers may share one core.
        used = [_cpu_s(p.pid) for p in processes]
        cpu = None if None in used or None in idle_cpu else sum(used) - sum(idle_cpu)  # type: ignore[arg-type]
        if state != "done":
            raise SystemExit(f"the search ended {state}; see {logs}")
        with db.session() as session:
            rows = session.execute(
                select(Architecture.hash, Architecture.flops, Score.images, Score.error).join(
                    Score, Score.architecture_id == Architecture.id
                )
            ).all()
            chunk_workers = session.scalar(
                select(func.count(func.distinct(Job.worker_id))).where(Job.parent_id == search_id)
            )
    finally:
        db.dispose()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    flops = sum(int(f or 0) * int(images) for _, f, images, _ in rows)
    return {
        "workers": workers,
        "architectures": len(rows),
        "wall_s": wall,
        "archs_per_min": 60.0 * len(rows) / wall,
        "gflop_per_s": flops / wall / 1e9,
        "worker_cpu_s": cpu,  # CPU seconds of the workers between the search's start and end
        "cores_busy": None if cpu is None else cpu / wall,  # how many cores the workers had on average
        "workers_that_scored_chunks": int(chunk_workers or 0),
        "scores": sorted((h, e) for h, _, _, e in rows),
    }


def _ddp(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """scripts/ddp_smoke.py on two gloo processes: its report, with images per second."""
    out = work / "ddp.json"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "scripts" / "ddp_smoke.py"), "--device", "cpu", "--threads", "1",
         "--steps", str(args.ddp_steps), "--batch", str(args.ddp_batch), "--work", str(work / "ddp"),
         "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if not out.is_file():
        raise SystemExit("the DDP run failed:\n" + result.stdout[-2000:] + result.stderr[-2000:])
    report = json.loads(out.read_text())
    report["ddp_images_per_s"] = report["ddp_steps_per_s"] * report["global_batch"]
    report["one_process_images_per_s"] = report["one_process_steps_per_s"] * report["global_batch"]
    report["passed"] = result.returncode == 0
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=60, help="K: architectures the search scores")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                        help="a folder with train.npz and test.npz (default: the shared CIFAR-10 subset, else synthetic)")  # fmt: skip
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--score-images", type=int, default=500, help="validation images each architecture is scored on")
    parser.add_argument("--chunk", type=int, default=None, help="candidates per chunk (default: smash search's)")
    parser.add_argument("--train-steps", type=int, default=20, help="HyperNet steps before the search")
    parser.add_argument("--ddp-steps", type=int, default=20)
    parser.add_argument("--ddp-batch", type=int, default=256, help="global batch of the DDP run (each of 2 processes: half)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="scale-out-") as scratch:
        work = Path(scratch)
        os.environ["SMASH_FILES"] = str(work / "files")  # one files root for every copy
        os.environ["SMASH_HOME"] = str(work / "home")
        logs = work / "logs"
        logs.mkdir()
        torch.set_num_threads(1)
        template = work / "template.db"
        search_id = _trained(normalize_url(str(template)), args)
        print(f"fan-out: {args.archs} architectures, preset {args.preset}, {args.score_images} images each, "
              f"data {args.data or 'synthetic'}; load average {load}")  # fmt: skip
        runs = {n: _score_with(_copy(template, work / f"{n}.db"), search_id, n, logs) for n in (1, 2)}
        same = runs[1]["scores"] == runs[2]["scores"]
        for run in runs.values():
            print(f"  {run['workers']} worker(s): {run['wall_s']:.1f} s wall, {run['archs_per_min']:.1f} archs/min, "
                  f"{run['gflop_per_s']:.2f} GFLOP/s, {run['cores_busy'] or float('nan'):.2f} cores busy, "
                  f"chunks scored by {run['workers_that_scored_chunks']}")  # fmt: skip
            run.pop("scores")
        speedup = runs[2]["archs_per_min"] / runs[1]["archs_per_min"]
        print(f"  speed-up {speedup:.2f}x; the same scores stored: {same}")
        ddp = _ddp(args, work)
        print(f"DDP: 2 gloo processes, global batch {ddp['global_batch']}, {ddp['steps']} steps: "
              f"{ddp['ddp_steps_per_s']:.2f} steps/s ({ddp['ddp_images_per_s']:.0f} images/s) vs one process "
              f"{ddp['one_process_steps_per_s']:.2f} steps/s ({ddp['one_process_images_per_s']:.0f} images/s); "
              f"weights max abs diff {ddp['ddp_weights_max_abs_diff']:.2e}")  # fmt: skip

    result = {
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "torch": torch.__version__, "load_average_at_start": load},  # fmt: skip
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "one_worker": runs[1],
        "two_workers": runs[2],
        "one_worker_archs_per_min": runs[1]["archs_per_min"],
        "two_workers_archs_per_min": runs[2]["archs_per_min"],
        "speedup": speedup,
        "same_scores": same,
        "ddp": ddp,
        "ddp_weights_max_abs_diff": ddp["ddp_weights_max_abs_diff"],
        "ddp_steps_per_s": ddp["ddp_steps_per_s"],
        "one_process_steps_per_s": ddp["one_process_steps_per_s"],
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
