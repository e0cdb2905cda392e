"""Download the wheels that a bare GPU machine lacks, for `scripts/gpu_check.sh` to install offline.

The lent GPU machines run Python 3.12 with torch, numpy, scipy, pytest, typer and rich
but no network, and none of the database stack: platformdirs, SQLAlchemy, Alembic,
Mako (MarkupSafe, typing-extensions), which the product's storage layer needs. This
script, run where PyPI is reachable, downloads exactly those, pinned to the versions
installed here (so the GPU machine runs what the tests ran), as binary wheels for
CPython 3.12 on manylinux x86-64, into a git-ignored folder; then checks that every
dependency of every wheel (for that Python and platform, no extras) is in the folder
or on the image. Not torch, not the Textual app: the check does not need them.

    python scripts/gpu_wheels.py                 # -> .gpu-wheels/, about 5 MiB
    device run: carry [".gpu-wheels", ".gpu-data"], command "bash scripts/gpu_check.sh"

`--python-version 3.11 --dest DIR` fetches the same set for another Python (the tests
use it to install them for this machine's interpreter).
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".gpu-wheels"
# What the product needs and the GPU image lacks (or holds in another version), with the
# version to fall back on where this environment has none installed.
PACKAGES = {
    "platformdirs": "4.14.9",
    "sqlalchemy": "2.1.9",
    "alembic": "1.20.1",
    "mako": "1.4.3",
    "markupsafe": "3.0.4",
    "typing-extensions": "4.16.0",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


def pinned() -> list[str]:
    """name==version for every package, at the version installed here when there is one."""
    pins = []
    for name, fallback in PACKAGES.items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = fallback
        pins.append(f"{name}=={version}")
    return pins


def download(pins: list[str], dest: Path, python_version: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", python_version, "--implementation", "cp", *platforms,
         "--dest", str(dest), *pins],
        check=True,
    )


def requirements(wheel: Path) -> list[Requirement]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def missing_dependencies(dest: Path, python_version: str) -> list[str]:
    """Dependencies of the wheels in `dest` (for that Python on Linux x86-64) missing from it."""
    environment = default_environment()
    environment.update(python_version=python_version, python_full_version=f"{python_version}.0",
                       sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                       implementation_name="cpython", platform_python_implementation="CPython")
    present = {canonicalize_name(w.name.split("-")[0]) for w in dest.glob("*.whl")}
    missing = []
    for wheel in sorted(dest.glob("*.whl")):
        for requirement in requirements(wheel):
            needed = requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""})
            if needed and canonicalize_name(requirement.name) not in present:
                missing.append(f"{wheel.name} needs {requirement}")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST, help="folder for the wheels (emptied first)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12)")
    args = parser.parse_args()
    pins = pinned()
    # Download into a fresh folder and swap it in: one version of each package, no leftovers.
    with tempfile.TemporaryDirectory(dir=args.dest.parent if args.dest.parent.exists() else None) as tmp:
        fresh = Path(tmp) / "wheels"
        fresh.mkdir()
        try:
            download(pins, fresh, args.python_version)
        except subprocess.CalledProcessError:
            sys.exit(f"gpu_wheels: pip could not download {' '.join(pins)} (is PyPI reachable?)")
        if problems := missing_dependencies(fresh, args.python_version):
            sys.exit("gpu_wheels: dependencies missing from the folder: " + "; ".join(problems))
        shutil.rmtree(args.dest, ignore_errors=True)
        shutil.move(str(fresh), args.dest)
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels for Python {args.python_version}, {size / 2**20:.1f} MiB, in {args.dest}")


if __name__ == "__main__":
    main()
