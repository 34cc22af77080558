"""`googlenet evaluate CHECKPOINT --dataset NAME|imagefolder:PATH`: other data than the training set's, matched by class
name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from googlenet.caffe import CAFFE_PREPROCESS, MODEL_ARGS
from googlenet.checkpoint import save_checkpoint
from googlenet.cli import main
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
