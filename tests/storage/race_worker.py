"""A minimal worker loop run in spawned processes by the claim race test.

It lives in its own module (not the test module) so that a spawned child can
import it by name whatever import mode pytest uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.db import open_database
from storage.queue import claim, finish
from storage.workers import register_worker


def drain(url: str, start: Any, out_path: str) -> None:
    """Claim and finish jobs until none is left; write the claimed ids to ``out_path``.

    Args:
        url: The database URL.
        start: A multiprocessing Event set when every racer is ready.
        out_path: JSON file for the list of claimed job ids.
    """
    db = open_database(url)
    worker_id = register_worker(db, device="cpu")
    start.wait(timeout=60)
    claimed: list[int] = []
    while (job_id := claim(db, worker_id)) is not None:
        with db.session() as session:
            finish(session, job_id, worker_id=worker_id)
            session.commit()
        claimed.append(job_id)
    db.dispose()
    Path(out_path).write_text(json.dumps(claimed))
