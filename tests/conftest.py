"""Shared fixtures: the built-in MNIST (loaded once per session) and the test data folder.

The machine the suite runs on may have only a couple of CPU cores, so the
expensive things (reading MNIST, which decompresses and MD5-checks 55 MB) are
session-scoped (once per pytest-xdist worker) and the models run at 32-64 px
unless a test needs 224 px.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from googlenet import data
from googlenet.cli import main
from googlenet.config import TrainConfig
from googlenet.data import datasets
from googlenet.model import GoogLeNet

DATA_DIR = Path(__file__).parent / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (pyproject's `-n auto`) each worker takes its share of torch's threads: on two cores,
    two workers of one thread each, not four threads on two cores."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests first, the order otherwise kept: pytest-xdist hands whole modules out in this order
    (`--dist loadfile --no-loadscope-reorder`), so the longest start first and the workers end together."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """tests/data: fixture copies (e.g. the seed README's summary table)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_raw() -> tuple[data.Split, data.Split]:
    """The package's MNIST as (train 60k, test 10k), MD5-checked."""
    return datasets._load_mnist()


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
    """A run directory trained for 3 batches of 32 by the real CLI (seconds), shared by the session: its files,
    checkpoints and report are what test_train, test_report, test_evaluate, predict, export and hub read."""
    root = tmp_path_factory.getbasetemp() / "trained"
    argv = ["train", "--epochs", "1", "--limit-train-batches", "3", "--limit-eval-batches", "1"]
    argv += ["--batch-size", "32", "--eval-batch-size", "100"]
    assert main([*argv, "--device", "cpu", "--project", str(root), "--name", "t", "--exist-ok"]) == 0
    return root / "t"


@contextlib.contextmanager
def one_thread_here(cwd: Path) -> Iterator[pytest.MonkeyPatch]:
    """Run in this process, in `cwd` and with one torch thread, what would otherwise be a process of its own with
    OMP_NUM_THREADS=1 (seconds of imports saved). --deterministic's process-wide settings (torch's flag,
    CUBLAS_WORKSPACE_CONFIG) are undone on the way out. Yields the MonkeyPatch, for more patches."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))  # restored after
        torch.set_num_threads(1)
        try:
            yield mp
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(False)


def model_args(num_classes: int = 10, in_channels: int = 1) -> dict:
    return {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "aux_logits": True,
        "dropout": 0.4,
        "dropout_aux": 0.7,
        "init": "caffe",
    }


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


# ------------------------------------------------ bad input: one line, exit 2, nothing written

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def one_line_error(capsys, argv: list[str], root: Path) -> str:
    """In-process: exit 2, one stderr line 'googlenet CMD: error: ...' (after argparse's usage, if any), nothing on disk
    changed."""
    before = snapshot(root)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"googlenet {argv[0]}: error: "), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    assert snapshot(root) == before
    return lines[-1]


def run_cli(cwd: Path, *argv: str, timeout: float = 120) -> str:
    """A real process (for what only a process shows: a hang, a signal): exit 2, one stderr line, nothing written."""
    before = snapshot(cwd)
    proc = subprocess.run(
        [sys.executable, "-m", "googlenet", *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert snapshot(cwd) == before
    return lines[0]
