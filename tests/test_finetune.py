"""Starting from trained weights (train --weights, --freeze): the paper's own weights converted, checkpoints,
exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from googlenet.caffe import CAFFE_PREPROCESS, MODEL_ARGS
from googlenet.checkpoint import save_checkpoint
from googlenet.cli import main
from googlenet.config import ConfigError
from googlenet.files import file_sha1
from googlenet.model import GoogLeNet
from googlenet.pretrained import freeze_through, load_pretrained

QUICK = ["--epochs", "1", "--limit-train-batches", "2", "--limit-eval-batches", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> tuple[Path, dict]:
    """A 1000-class, 3-channel checkpoint shaped like `googlenet convert`'s output, random weights."""
    torch.manual_seed(0)
    weights = GoogLeNet(1000, 3).state_dict()
    path = tmp_path_factory.mktemp("weights") / "bvlc_googlenet.pt"
    margs = dict(MODEL_ARGS)  # what googlenet convert writes
    save_checkpoint(
        path,
        {
            "model": weights,
            "model_args": margs,
            "classes": [f"c{i}" for i in range(1000)],
            "preprocess": dict(CAFFE_PREPROCESS),
        },
    )
    return path, weights


@pytest.mark.slow
def test_fine_tune_converted_weights_on_mnist(imagenet_like, tmp_path: Path, capsys):
    path, source = imagenet_like
    argv = [
        "train",
        "--weights",
        str(path),
        "--freeze",
        "inception5b",
        *QUICK,
        "--project",
        str(tmp_path),
        "--name",
        "ft",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "re-initialised for 10 classes (the weights have 1000)" in out
    assert "were trained on 224 px images and this run trains on 32 px: pass --image-size 224" in out
    last = torch.load(tmp_path / "ft" / "weights" / "last.pt", weights_only=True)
    frozen = [k for k in source if not k.startswith(("fc.", "aux1.", "aux2."))]
    assert all(torch.equal(last["model"][k], source[k]) for k in frozen)  # everything up to inception5b kept as it was
    assert last["model"]["fc.weight"].shape == (10, 1024) and not torch.equal(
        last["model"]["aux1.fc1.0.weight"], source["aux1.fc1.0.weight"]
    )
    pre = last[
        "preprocess"
    ]  # the weights' input convention, at the run's image size, on grey digits copied to 3 channels
    assert (pre["in_channels"], pre["data_channels"], pre["channel_order"], pre["mean"]) == (
        3,
        1,
        "BGR",
        CAFFE_PREPROCESS["mean"],
    )
    assert last["config"]["weights"] == str(path) and last["config"]["freeze"] == "inception5b"
    # what was trained and where it started, in the log line, env.json, summary.md and REPORT.md
    run, sha1 = tmp_path / "ft", file_sha1(path)
    trainable = sum(p.numel() for k, p in last["model"].items() if k.startswith(("fc.", "aux1.", "aux2.")))
    total = sum(p.numel() for p in last["model"].values())
    assert f"{trainable:,} trainable parameters, {total - trainable:,} frozen (conv1 to inception5b)" in out
    assert f"from bvlc_googlenet.pt (sha1 {sha1})" in out
    env = json.loads((run / "env.json").read_text())
    assert env["parameters"] == {"total": total, "trainable": trainable, "frozen": total - trainable}
    assert env["weights"] == {"file": str(path.resolve()), "sha1": sha1}
    summary = (run / "summary.md").read_text()
    assert re.search(rf"Non-trainable params\s+\|\s+{total - trainable:,}", summary) and sha1 in summary
    report = (run / "REPORT.md").read_text()
    assert f"{trainable:,} of its {total:,} parameters trained, {total - trainable:,} frozen" in report
    assert f"from the weights of `bvlc_googlenet.pt` (sha1 {sha1})" in report


def test_load_pretrained_says_what_starts_afresh(capsys):
    torch.manual_seed(0)
    model = GoogLeNet(10, 1)
    export = GoogLeNet(7, 1, aux_logits=False).state_dict()  # an inference export of another task: no aux heads
    load_pretrained(model, export, "other.safetensors")
    out = capsys.readouterr().out
    assert "re-initialised for 10 classes (the weights have 7)" in out and "auxiliary heads are not in the file" in out
    assert torch.equal(model.conv1[0].weight, export["conv1.0.weight"])


def test_load_pretrained_keeps_the_classifier_of_the_same_task():
    torch.manual_seed(0)
    source = GoogLeNet(10, 1).state_dict()
    model = GoogLeNet(10, 1)
    load_pretrained(model, source, "same.pt")
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_freeze_through_a_layer():
    model = GoogLeNet(10, 1)
    freeze_through(model, "inception4e")
    assert not any(p.requires_grad for p in model.inception4e.parameters())
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert all(p.requires_grad for m in (model.inception5a, model.aux1, model.aux2, model.fc) for p in m.parameters())
    with pytest.raises(ConfigError, match="no such layer: use one of conv1, maxpool1"):
        freeze_through(model, "inception4f")


def test_bad_weights_and_freeze_are_one_line_errors(imagenet_like, tmp_path: Path, capsys):
    path, _ = imagenet_like
    cases = [
        (["--weights", str(tmp_path / "missing.pt")], "does not exist"),
        (
            ["--weights", str(path), "--in-channels", "1"],
            "conv1.0.weight has shape (64, 3, 7, 7), expected (64, 1, 7, 7)",
        ),
        (["--weights", str(path), "--freeze", "inception9z"], "GoogLeNet has no such layer"),
        (["--freeze", "inception4e"], "without --weights those are random: pass --weights FILE"),
    ]
    for extra, message in cases:
        assert main(["train", *extra, *QUICK, "--project", str(tmp_path), "--name", "bad"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("googlenet train: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()  # refused before the run directory was made


def test_converted_weights_export_load_through_hub_and_restart_from_safetensors(imagenet_like, tmp_path: Path, capsys):
    """The converted file is accepted by export and torch.hub; its safetensors export is a starting point too."""
    path, source = imagenet_like
    exported = tmp_path / "bvlc.safetensors"
    assert main(["export", str(path), "--format", "safetensors", "--output", str(exported)]) == 0
    assert "1000 classes" in capsys.readouterr().out
    hub = torch.hub.load(str(Path(__file__).parents[1]), "googlenet", source="local", checkpoint=str(path))
    assert torch.equal(hub.conv1[0].weight, source["conv1.0.weight"]) and not hub.training
    model = GoogLeNet(10, 3)
    from googlenet.checkpoint import read_weights

    weights, meta = read_weights(exported)
    assert meta["preprocess"]["channel_order"] == "BGR"
    load_pretrained(model, weights, str(exported))
    assert "auxiliary heads are not in the file" in capsys.readouterr().out
    assert torch.equal(model.inception5b.branch1[0].weight, source["inception5b.branch1.0.weight"])


def test_the_classifier_cannot_be_frozen():
    with pytest.raises(ConfigError, match="no such layer: use one of conv1, .*inception5b$"):
        freeze_through(GoogLeNet(10, 1), "fc")
