"""`googlenet datasets`: the table of named datasets with their default augmentation, and one image folder
described (`imagefolder:PATH`) from its file headers, with the splits training would make."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image

from googlenet import cli
from googlenet.data import DATASETS, folder_splits


def _image(path: Path, width: int, height: int, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(np.full(shape, 90, dtype=np.uint8), mode).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes: cat, 7 colour images 40 x 30; dog, 4 grey 20 x 20 and 1 colour 64 x 48."""
    root = tmp_path / "pets"
    for i in range(7):
        _image(root / "cat" / f"{i}.png", 40, 30, "RGB")
    for i in range(4):
        _image(root / "dog" / f"{i}.png", 20, 20, "L")
    _image(root / "dog" / "big.png", 64, 48, "RGB")
    return root


def _rows(table: str) -> dict[str, list[str]]:
    """A text table's rows by their first cell."""
    return {cells[0]: cells[1:] for line in table.splitlines()[2:] if (cells := re.split(r"\s{2,}", line.strip()))}


def _describe(capsys, root: Path, *flags: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    assert cli.main(["datasets", f"imagefolder:{root}", *flags]) == 0
    facts, per_class = capsys.readouterr().out.split("\n\n")
    return {k: v[0] for k, v in _rows(facts).items()}, _rows(per_class)


@pytest.mark.parametrize("flags", [(), ("--val-fraction", "0.5", "--seed", "3")])
def test_an_image_folder_described(capsys, folder, flags):
    facts, per_class = _describe(capsys, folder, *flags)
    val_fraction, seed = (float(flags[1]), int(flags[3])) if flags else (0.1, 0)
    splits, classes, channels = folder_splits(folder, val_fraction, seed)  # the split training makes
    counts = [torch.bincount(splits[s][1], minlength=2).tolist() for s in ("train", "val", "test")]
    assert classes == ["cat", "dog"] and channels == 3
    assert per_class == {
        "cat": ["7", *(str(c[0]) for c in counts)],
        "dog": ["5", *(str(c[1]) for c in counts)],
        "total": ["12", *(str(sum(c)) for c in counts)],
    }
    assert facts["classes"] == "2" and facts["images"] == "12"
    assert facts["channels"] == "3 (colour); image modes: RGB 8, L 4"
    assert facts["sizes (W x H)"] == "20 x 20 to 64 x 48; most common: 40 x 30 (7), 20 x 20 (4), 64 x 48 (1)"
    assert f"--seed {seed}" in facts["splits"] and f"{val_fraction:g} of the rest" in facts["splits"]
    assert facts["default augmentation"].startswith("--hflip --crop-padding 4")


def test_only_headers_are_read(capsys, folder):
    png = (folder / "cat" / "0.png").read_bytes()
    (folder / "cat" / "0.png").write_bytes(png[: len(png) // 2])  # the header intact, the pixels cut off
    (folder / "dog" / "junk.png").write_bytes(b"not an image")
    facts, per_class = _describe(capsys, folder)
    assert facts["unreadable"] == f"1, e.g. {folder / 'dog' / 'junk.png'}: training stops on it"
    assert facts["sizes (W x H)"].endswith("40 x 30 (7), 20 x 20 (4), 64 x 48 (1)")  # the cut file's header read
    assert per_class["dog"][0] == "6"


def test_a_grey_folder_with_its_own_test_split(capsys, tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                _image(tmp_path / "g" / split / cls / f"{i}.png", 28, 28, "L")
    facts, per_class = _describe(capsys, tmp_path / "g")
    assert facts["channels"] == "1 (grey); image modes: L 10" and facts["sizes (W x H)"] == "28 x 28 (10)"
    assert facts["splits"].startswith("test: its test/ folder")
    assert per_class["a"][0] == "5" and per_class["a"][3] == "2"


def _bad_folder(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / kind
    if kind == "a-file":
        path.write_text("x")
    elif kind == "no-class-folders":
        path.mkdir()
        _image(path / "loose.png", 28, 28, "L")
    elif kind == "no-images":
        (path / "a").mkdir(parents=True)
        (path / "b").mkdir()
        (path / "b" / "notes.txt").write_text("x")
    return path


@pytest.mark.parametrize("kind", ["missing", "a-file", "no-class-folders", "no-images"])
def test_bad_folders_end_in_trainings_one_line_error(capsys, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    name = f"imagefolder:{_bad_folder(tmp_path, kind).name}"
    line = one_line_error(capsys, ["datasets", name], tmp_path)
    trains = one_line_error(capsys, ["train", "--dataset", name, "--no-plots"], tmp_path)
    # the same message; training names the folder by its absolute path (the one its run records)
    assert line.split(": error: ", 1)[1] == trains.split(": error: ", 1)[1].replace(f"{tmp_path}/", "")


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--val-fraction", "1.5"], "val_fraction must be between 0 and 1"), (["--seed", "-1"], "seed must not be")],
)
def test_bad_settings_are_refused_as_train_refuses_them(capsys, folder, flags, message):
    line = one_line_error(capsys, ["datasets", f"imagefolder:{folder}", *flags], folder)
    assert message in line
    assert line.split(": error: ", 1)[1] == one_line_error(capsys, ["train", *flags], folder).split(": error: ", 1)[1]


def test_an_unknown_dataset_name(capsys, tmp_path):
    line = one_line_error(capsys, ["datasets", "cifar1"], tmp_path)
    assert "unknown dataset 'cifar1': did you mean cifar10?" in line


def test_the_table_shows_each_datasets_default_augmentation(capsys, tmp_path):
    assert cli.main(["datasets", "--data-dir", str(tmp_path)]) == 0
    sizes, augmentation = capsys.readouterr().out.strip().split("\n\n")
    assert re.split(r"\s{2,}", sizes.splitlines()[0]) == [
        "dataset", "available", "image", "train (all)", "train", "val (0.1)", "test",
    ]  # fmt: skip
    assert list(_rows(sizes)) == [*DATASETS, "imagefolder:PATH"]
    assert "default augmentation" in augmentation.splitlines()[0]
    assert {k: v[0] for k, v in _rows(augmentation).items()} == {
        "mnist": "--rotate 10 --translate 0.1 --scale 0.1",
        "fashion-mnist": "--translate 0.1 --hflip",
        "kmnist": "--rotate 10 --translate 0.1 --scale 0.1",
        "cifar10": "--hflip --crop-padding 4",
        "cifar100": "--hflip --crop-padding 4",
        "imagefolder:PATH": "--hflip --crop-padding 4; streamed from disk: the paper's random crops and --hflip",
    }
    train_help = cli.get_args_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "augmentation (unset: the dataset's default, listed by googlenet datasets)" in train_help
