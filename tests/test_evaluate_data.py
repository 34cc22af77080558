"""`googlenet evaluate CHECKPOINT --dataset NAME|imagefolder:PATH`: other data than the training set's, matched by class
name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from googlenet.caffe import CAFFE_PREPROCESS, MODEL_ARGS
from googlenet.checkpoint import save_checkpoint
from googlenet.cli import main
from googlenet.data import Preprocess, load_dataset, load_evaluation_data
from googlenet.data.datasets import _load_mnist
from googlenet.model import GoogLeNet


def digit_folder(root: Path, names: dict[int, str], per_class: int = 3) -> Path:
    _, test = _load_mnist()
    for label, name in names.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(test.images[test.labels == label][:per_class]):
            Image.fromarray(image[0].numpy(), mode="L").save(root / name / f"{i}.png")
    return root


def test_a_folder_of_class_subfolders_is_all_test_split(trained_run: Path, tmp_path: Path, capsys):
    folder = digit_folder(tmp_path / "digits", {3: "3", 7: "7", 1: "1"})  # a subset of the classes, in another order
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(trained_run),
                "--dataset",
                f"imagefolder:{folder}",
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["classes"] == [str(i) for i in range(10)]
    support = result["splits"]["test"]["support"]
    assert sum(support) == 9 and [support[i] for i in (1, 3, 7)] == [3, 3, 3]  # labels follow the checkpoint's names
    assert "Top-5 accuracy" in capsys.readouterr().out


def test_unknown_class_names_are_refused(trained_run: Path, tmp_path: Path, capsys):
    folder = digit_folder(tmp_path / "letters", {0: "zero", 1: "1"})
    assert main(["evaluate", str(trained_run), "--dataset", f"imagefolder:{folder}", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has a class 'zero' that the checkpoint does not know" in err and err.count("\n") == 1


def test_a_converted_checkpoint_evaluates_on_synset_folders(tmp_path: Path, capsys):
    """BVLC's weights as `googlenet convert` writes them (random here): no training config, Caffe's preprocessing, wnid
    folders."""
    torch.manual_seed(0)
    margs = dict(MODEL_ARGS)  # what googlenet convert writes
    classes = [f"class {i}" for i in range(1000)]
    path = tmp_path / "bvlc.pt"
    save_checkpoint(
        path,
        {
            "model": GoogLeNet(**margs).state_dict(),
            "model_args": margs,
            "classes": classes,
            "preprocess": dict(CAFFE_PREPROCESS),
        },
    )
    rng = np.random.default_rng(0)
    for i in range(1000):
        (tmp_path / "val" / f"n{10000000 + i:08d}").mkdir(parents=True)
    for i in (5, 500):
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(
            tmp_path / "val" / f"n{10000000 + i:08d}" / "a.jpg"
        )
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(path),
                "--dataset",
                f"imagefolder:{tmp_path / 'val'}",
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "synset ids" in capsys.readouterr().out
    support = json.loads(out.read_text())["splits"]["test"]["support"]
    assert sum(support) == 2 and support[5] == support[500] == 1
    assert main(["evaluate", str(path), "--device", "cpu"]) == 2  # no training data recorded: --dataset is needed
    assert "pass --dataset NAME or imagefolder:PATH" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["val", "all"])
def test_a_plain_folder_has_no_validation_split(trained_run: Path, tmp_path: Path, capsys, split):
    folder = digit_folder(tmp_path / "digits", {0: "0", 1: "1"}, per_class=1)
    code = main(
        [
            "evaluate",
            str(trained_run),
            "--dataset",
            f"imagefolder:{folder}",
            "--split",
            split,
            "--output",
            str(tmp_path / "e.json"),
            "--device",
            "cpu",
        ]
    )
    assert code == (2 if split == "val" else 0)


def test_other_data_never_overwrites_the_runs_own_evaluation(trained_run: Path, tmp_path: Path, capsys):
    folder = digit_folder(tmp_path / "more digits", {2: "2"}, per_class=1)
    assert main(["evaluate", str(trained_run), "--dataset", f"imagefolder:{folder}", "--device", "cpu"]) == 0
    assert (trained_run / "evaluate_test_more-digits.json").is_file()


def test_a_folder_run_is_evaluated_on_its_own_splits_from_any_directory(tmp_path: Path, capsys, monkeypatch):
    """The issue's new user: 3 classes x 20 images trained from a relative path, the default batch of 256 clipped to
    the 42 training images, then `googlenet evaluate RUN` from elsewhere scores the run's own 12 test images."""
    monkeypatch.chdir(tmp_path)
    digit_folder(tmp_path / "shapes", {0: "a", 1: "b", 2: "c"}, per_class=20)
    argv = ["train", "--dataset", "imagefolder:shapes", "--image-size", "32", "--epochs", "1", "--no-plots"]
    assert main([*argv, "--device", "cpu", "--project", "runs", "--name", "ft"]) == 0
    out = capsys.readouterr().out
    assert "batch size 256 is larger than the training split (42 images): using 42" in out
    run = tmp_path / "runs" / "ft"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"] == f"imagefolder:{tmp_path / 'shapes'}" and config["batch_size"] == 42
    trained = json.loads((run / "metrics.json").read_text())["splits"]

    monkeypatch.chdir(tmp_path / "shapes")  # elsewhere: the recorded path is absolute
    assert main(["evaluate", str(run), "--split", "all", "--device", "cpu"]) == 0
    assert "Evaluating on the run's data, imagefolder:" in capsys.readouterr().out
    evaluated = json.loads((run / "evaluate_all.json").read_text())["splits"]
    assert [sum(evaluated[s]["support"]) for s in ("train", "val", "test")] == [42, 6, 12]
    for split in ("train", "val", "test"):  # the same images in the same order: the same figures to the last digit
        assert evaluated[split]["loss"] == trained[split]["loss"], split
        assert evaluated[split]["support"] == trained[split]["support"], split
    want = load_dataset(config["dataset"], None, False, config["val_fraction"], config["seed"], 32)
    got = load_evaluation_data(config["dataset"], Preprocess.for_dataset(want, 32, 1), run_splits=True)
    for split in ("train", "val", "test"):  # image for image
        assert torch.equal(got.split(split).images, want.split(split).images), split
        assert torch.equal(got.split(split).labels, want.split(split).labels), split
