"""Data-parallel HyperNet training on two gloo processes equals one process with their batches together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "ddp_smoke.py"


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains_and_resume_on_one(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    # The check itself is scripts/ddp_smoke.py, which scripts/gpu_check.sh runs on two GPUs.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SMOKE), "--device", "cpu", "--steps", "8", "--stop-at", "3", "--batch", "64",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert (report["world_size"], report["steps"], report["global_batch"]) == (2, 8, 64)
    # 8 steps of a 2-process run, each rank on 32 images: the weights of one process on 64.
    assert report["ddp_weights_max_abs_diff"] <= 1e-5
    # Stopped by both ranks at step 3, resumed from its checkpoint on one process: the same.
    assert report["resumed_weights_max_abs_diff"] <= 1e-5
    assert report["weights_moved_max_abs"] >= 5e-5  # the weights did move: the comparison means something
