"""The GPU check's CPU-runnable parts: its plan, its refusal without CUDA, its wheels, its imports.

`scripts/gpu_check.sh` runs on a lent GPU machine with Python 3.12, torch, numpy,
scipy, pytest, typer and rich, no network, and none of the database stack, which
travels as wheels fetched by `scripts/gpu_wheels.py`. What can be checked here is
checked here: the plan fits its time budget and result-file limit, the script stops
with one line when CUDA is missing, the wheel folder installs for Python 3.12 with no
index, and the engine, the storage layer and the worker import from such a folder
beside this machine's torch, without the packages the GPU machine lacks. Tests that
need PyPI (to fetch wheels for this machine's Python) skip when it is unreachable.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "gpu_check.sh"
WHEELS = ROOT / ".gpu-wheels"
# On the GPU image none of these exist (see the device tool's package list).
ABSENT_ON_GPU = ["textual", "textual_plotext", "plotext", "psycopg", "psycopg_binary", "pytest_textual_snapshot"]
CARRIED = ["platformdirs", "sqlalchemy", "alembic", "mako", "markupsafe", "typing_extensions"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_the_plan_fits_420_seconds_and_8_result_files() -> None:
    plan = _run(["bash", str(CHECK), "--plan"])
    assert plan.returncode == 0, plan.stdout + plan.stderr
    limits = [int(m) for m in re.findall(r"^  \S+\s+(\d+)s  ", plan.stdout, re.MULTILINE)]
    total = re.search(r"step limits together: (\d+)s \(budget (\d+)s\); results: (.*)$", plan.stdout, re.MULTILINE)
    assert total is not None, plan.stdout
    assert sum(limits) == int(total[1]) <= int(total[2]) == 420
    assert len(limits) >= 10  # cuda, install, tests, search, retrain, browse, 3 benchmarks, ddp, summary
    assert len(total[3].split()) <= 8
    # Every file written under $OUT is one of the announced results.
    written = set(re.findall(r'\$OUT/([\w.-]+)', CHECK.read_text()))
    assert written <= set(total[3].split()), written


def test_without_cuda_the_check_stops_at_once_with_one_line() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    result = _run(["bash", str(CHECK)], env=env, cwd="/")
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1 and "no CUDA device" in output, output


def test_the_ddp_step_runs_the_smoke_test_on_two_gpus_and_says_when_it_skips() -> None:
    text = CHECK.read_text()
    assert "skipped: $gpus GPU visible, the DDP smoke test needs two" in text
    assert 'torch.distributed.run --standalone --nproc_per_node 2 "$DDP_ENTRY"' in text
    assert (CHECK.parent / "ddp_smoke.py").is_file()  # what DDP_ENTRY names


def _block_absent(modules: list[str]) -> str:
    """Python source that makes `modules` unimportable, as on the GPU image."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def test_the_engine_imports_without_platformdirs() -> None:
    code = _block_absent(["platformdirs"]) + textwrap.dedent(
        """
        import engine.jobs, engine.train, engine.score, engine.retrain, engine.data
        from engine.config import DataConfig
        assert DataConfig("synthetic").root is None
        print("ok")
        """
    )
    result = _run([sys.executable, "-c", code], cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_worker_and_the_cli_import_without_the_app_or_postgres() -> None:
    code = _block_absent(ABSENT_ON_GPU) + textwrap.dedent(
        """
        import engine.jobs, storage.db, storage.queue, smash_tui.runner.worker, smash_tui.cli
        print("ok")
        """
    )
    result = _run([sys.executable, "-c", code], cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _wheels_for(python_version: str, dest: Path) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable: the wheels cannot be fetched")
    result = _run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "--python-version", python_version, "--dest", str(dest)])
    if result.returncode != 0:
        pytest.skip(f"could not fetch wheels: {result.stderr.strip().splitlines()[-1:]}")


@pytest.mark.slow
def test_the_wheel_folder_installs_for_python_312_with_no_index(tmp_path: Path) -> None:
    """What gpu_check.sh installs: the carried folder if there is one, else a fresh download."""
    folder = WHEELS if any(WHEELS.glob("sqlalchemy-*cp312*.whl")) else tmp_path / "wheels"
    if folder != WHEELS:
        _wheels_for("3.12", folder)
    size = sum(w.stat().st_size for w in folder.glob("*.whl"))
    assert size < 30 * 2**20
    names = {w.name.split("-")[0].lower() for w in folder.glob("*.whl")}
    assert names == set(CARRIED), names
    # Resolving from the folder alone proves it holds every dependency for 3.12.
    result = _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tmp_path / "site"),
         "--python-version", "3.12", "--only-binary=:all:", "--no-index", "--find-links", str(folder),
         "sqlalchemy", "alembic", "platformdirs"]
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "sqlalchemy").is_dir() and (tmp_path / "site" / "mako").is_dir()


@pytest.mark.slow
def test_engine_storage_and_runner_import_from_the_wheels_beside_this_torch(tmp_path: Path) -> None:
    """The same set for this machine's Python, installed with no index into a target folder."""
    folder = tmp_path / "wheels"
    _wheels_for(f"{sys.version_info.major}.{sys.version_info.minor}", folder)
    site = tmp_path / "site"
    install = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site), *map(str, folder.glob("*.whl"))])
    assert install.returncode == 0, install.stderr
    code = _block_absent(ABSENT_ON_GPU) + textwrap.dedent(
        f"""
        sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]
        import engine.jobs, storage.db, storage.queue, smash_tui.runner.worker, smash_tui.cli
        import torch, sqlalchemy, alembic, mako, platformdirs
        for module in (sqlalchemy, alembic, mako, platformdirs):
            assert module.__file__.startswith({str(site)!r}), module.__file__
        print("ok")
        """
    )
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
