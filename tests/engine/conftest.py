"""Shared engine fixtures: small synthetic data and a briefly trained tiny SMASH network."""

from __future__ import annotations

import pytest

from engine.data import DataConfig, Dataset, load_dataset


@pytest.fixture(scope="session")
def small_synthetic() -> Dataset:
    """800 training, 200 validation and 400 test images of the built-in synthetic set."""
    return load_dataset(DataConfig("synthetic", synthetic_train=1000, synthetic_test=400, val_size=200))
