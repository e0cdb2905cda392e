"""Fixtures every test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_per_worker() -> Iterator[None]:
    """pytest-xdist runs one worker per core, so each worker gets one torch thread.

    The test networks are tiny and overhead-bound: two OpenMP threads per worker on a
    shared 2-core machine spin against each other and run many times slower than one.
    Session scope, so module and session fixtures that train are covered too.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
