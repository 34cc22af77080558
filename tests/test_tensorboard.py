"""--tensorboard: the per-epoch scalars of results.csv, readable by TensorBoard; a one-line error without the
package."""

from __future__ import annotations

import builtins
import csv
from pathlib import Path

import pytest

from googlenet.cli import main

QUICK = ["--epochs", "2", "--limit-train-batches", "2", "--limit-eval-batches", "1", "--device", "cpu", "--no-plots"]


def test_tensorboard_logs_every_epoch(tmp_path: Path, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    assert main(["train", "--tensorboard", *QUICK, "--project", str(tmp_path), "--name", "tb"]) == 0
    board = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    board.Reload()
    with open(tmp_path / "tb" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for tag, column in (("loss/train", "train_loss"), ("accuracy/val", "val_acc")):
        events = board.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path: Path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert main(["train", "--tensorboard", *QUICK, "--project", str(tmp_path), "--name", "tb"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'googlenet[tensorboard]'" in err and err.count("\n") == 1
    assert not (tmp_path / "tb").exists()
