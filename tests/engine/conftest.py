"""Shared engine fixtures: small synthetic data and a briefly trained tiny SMASH network."""

from __future__ import annotations

import pytest
import torch

from engine.data import DataConfig, Dataset, load_dataset


@pytest.fixture(scope="session")
def small_synthetic() -> Dataset:
    """800 training, 200 validation and 400 test images of the built-in synthetic set."""
    return load_dataset(DataConfig("synthetic", synthetic_train=1000, synthetic_test=400, val_size=200))


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """Tests run two at a time on two cores: one torch thread each avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
