"""Shared fixtures: the built-in MNIST (loaded once per session) and the test data folder.

The machine the suite runs on may have only a couple of CPU cores, so the
expensive things (reading MNIST, which decompresses and MD5-checks 55 MB) are
session-scoped and the models run at 32-64 px unless a test needs 224 px.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from googlenet import data

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """tests/data: fixture copies (e.g. the seed README's summary table)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_raw() -> tuple[data.Split, data.Split]:
    """The package's MNIST as (train 60k, test 10k), MD5-checked."""
    return data._load_mnist()


@pytest.fixture(scope="session")
def mnist_seed_split() -> data.Dataset:
    """MNIST with the seed README's 70/30 train/validation split (seed 0)."""
    return data.load_dataset("mnist", val_fraction=0.3, seed=0)


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests reseed torch freely; keep one test's seeding from leaking into the next."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)
