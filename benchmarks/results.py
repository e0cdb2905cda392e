"""What every benchmark does with its figures at the end: write them as JSON for `--out`.

Imported as `results` by the benchmark scripts (run as `python benchmarks/NAME.py`,
so this folder is first on `sys.path`; `storage.py` takes it off, lest it shadow the
storage package, and imports `benchmarks.results`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Real data for the benchmarks: ../shared/data beside the checkout (see its README).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_result(out: Path | None, result: dict[str, Any], indent: str = "  ") -> None:
    """Write `result` as indented JSON to `out` (creating its folder) and say so; None: nothing."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{indent}wrote {out}")
