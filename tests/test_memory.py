"""memory.py: a batch whose activations cannot fit is refused (training) or evaluated in smaller batches (evaluation)
before any work, with the largest batch that fits. The machine's memory is injected: the same on every machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import one_line_error

from googlenet import memory
from googlenet.checkpoint import load_checkpoint
from googlenet.config import ConfigError
from googlenet.data import Augment, Dataset, Split
from googlenet.evaluate import evaluate_all
from googlenet.model import GoogLeNet

ARGS = {"num_classes": 10, "in_channels": 1, "aux_logits": True, "dropout": 0.4, "dropout_aux": 0.7, "init": "caffe"}


def test_activations_are_measured_from_the_network_and_scaled_with_the_pixels():
    outputs = []
    model = GoogLeNet(**ARGS).train()
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in leaves]
    with torch.no_grad():
        model(torch.zeros(1, 1, 224, 224))
    for h in hooks:
        h.remove()
    exact = memory.TRAIN_FACTOR * memory.FLOAT_BYTES * sum(outputs)
    assert exact <= memory.activation_bytes(ARGS, 224, True) <= 1.1 * exact  # scaled from 64 px: within 10%
    assert memory.activation_bytes(ARGS, 32, True) < memory.activation_bytes(ARGS, 224, True)
    assert memory.activation_bytes(ARGS, 224, False) < memory.activation_bytes(ARGS, 224, True) / 4


def test_the_estimate_leaves_the_random_stream_alone():
    """A run's initial weights must not depend on whether the estimate was cached (an earlier run in the process)."""
    torch.manual_seed(0)
    memory.activation_bytes({**ARGS, "num_classes": 7}, 64, True)  # a model made (not cached before), dropout drawn
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after)


def test_a_batch_that_cannot_fit_is_refused_with_the_largest_that_does(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: 8 * 10**9)
    cpu = torch.device("cpu")
    fits = memory.largest_batch(ARGS, 1024, cpu, train=True)
    assert fits == 8 * 10**9 // memory.activation_bytes(ARGS, 1024, True) and 0 < fits < 256
    memory.check_batch_fits(ARGS, 1024, fits, cpu, True, "--batch-size")  # fits: no error
    with pytest.raises(
        ConfigError, match=rf"--batch-size 256 at 1024 px needs about .* GB .*use --batch-size {fits} or"
    ):
        memory.check_batch_fits(ARGS, 1024, 256, cpu, True, "--batch-size")
    monkeypatch.setattr(memory, "available_memory", lambda device: None)  # not known: never refused
    memory.check_batch_fits(ARGS, 1024, 256, cpu, True, "--batch-size")


def test_train_refuses_before_making_the_run_directory(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(memory, "available_memory", lambda device: 8 * 10**9)
    argv = ["train", "--image-size", "1024", "--batch-size", "256", "--device", "cpu", "--project", "P"]
    line = one_line_error(capsys, argv, tmp_path)
    assert "--batch-size 256 at 1024 px needs about" in line and "use --batch-size" in line
    assert not (tmp_path / "P").exists()


def test_evaluation_uses_batches_that_fit(trained_run: Path, mnist_raw, monkeypatch, capsys):
    """A checkpoint's eval_batch_size that cannot fit here is evaluated in smaller batches, with the same figures."""
    state = load_checkpoint(trained_run / "weights" / "best.pt")
    _, test = mnist_raw
    few = Split(test.images[:60], test.labels[:60])
    data = Dataset("mnist", [str(i) for i in range(10)], few, few, few, 1, 28, Augment())
    cpu = torch.device("cpu")
    want = evaluate_all(state, data, cpu, ("test",))["test"]
    per_image = memory.activation_bytes(state["model_args"], 32, False)
    monkeypatch.setattr(memory, "available_memory", lambda device: 7 * per_image)
    got = evaluate_all(state, data, cpu, ("test",))["test"]
    assert (
        f"evaluating in batches of 7: the run's {state['config']['eval_batch_size']} at 32 px"
        in capsys.readouterr().out
    )
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
