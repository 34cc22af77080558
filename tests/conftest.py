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
from googlenet.cli import main
from googlenet.config import TrainConfig
from googlenet.model import GoogLeNet

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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory trained for 3 batches by the real CLI (~20-40 s on 2 cores), shared by the session."""
    root = tmp_path_factory.getbasetemp() / "trained"
    argv = ["train", "--epochs", "1", "--limit-train-batches", "3", "--limit-eval-batches", "1"]
    assert main([*argv, "--device", "cpu", "--project", str(root), "--name", "t", "--exist-ok"]) == 0
    return root / "t"


def model_args(num_classes: int = 10, in_channels: int = 1) -> dict:
    return {"num_classes": num_classes, "in_channels": in_channels, "aux_logits": True, "dropout": 0.4, "dropout_aux": 0.7, "init": "caffe"}


def checkpoint_state(num_classes: int = 10, in_channels: int = 1) -> dict:
    """What fit() saves, minus the optimiser: a real model's weights and the metadata the tools read."""
    torch.manual_seed(0)
    margs = model_args(num_classes, in_channels)
    return {
        "model": GoogLeNet(**margs).state_dict(),
        "model_args": margs,
        "averaged_model": None,
        "config": TrainConfig(image_size=32, in_channels=in_channels).to_dict(),
        "preprocess": data.Preprocess(32, in_channels, 1, 28, (0.13,), (0.31,)).to_dict(),
        "classes": [str(i) for i in range(num_classes)],
        "dataset": "mnist",
        "epoch": 1,
        "best_epoch": 1,
        "best_acc": 0.5,
        "results": [],
    }
