"""googlenet predict: end to end through the CLI on MNIST test digits saved as image files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from googlenet.checkpoint import load_model, preprocess_from_checkpoint
from googlenet.cli import main
from googlenet.data import batch_transform
from googlenet.data.datasets import _load_mnist
from googlenet.predict import expand_images

DIGITS = 6


@pytest.fixture(scope="module")
def run_dir(trained_run: Path) -> Path:
    return trained_run


@pytest.fixture(scope="module")
def checkpoint(run_dir: Path) -> Path:
    return run_dir / "weights" / "best.pt"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[list[Path], torch.Tensor]:
    """The first MNIST test digits as 28x28 grey PNGs (lossless), with their uint8 tensors."""
    folder = tmp_path_factory.mktemp("digits")
    _, test = _load_mnist()
    images = test.images[:DIGITS]
    paths = []
    for i, (img, label) in enumerate(zip(images, test.labels[:DIGITS])):
        paths.append(folder / f"{i}_label{label.item()}.png")
        Image.fromarray(img[0].numpy(), mode="L").save(paths[-1])
    return paths, images


@pytest.fixture(scope="module")
def expected(checkpoint: Path, digits) -> torch.Tensor:
    """Probabilities from the evaluation pipeline on the in-memory dataset tensors."""
    model, state = load_model(checkpoint)
    with torch.inference_mode():
        return model(batch_transform(digits[1], preprocess_from_checkpoint(state))).logits.softmax(1)


def predict(capsys, *argv: str, notes: int = 0) -> str:
    assert main(["predict", *argv, "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert len(out.err.splitlines()) == notes and all(line.startswith("note: ") for line in out.err.splitlines()), (
        out.err
    )
    return out.out


def predict_json(capsys, *argv: str, notes: int = 0) -> list[dict]:
    return json.loads(predict(capsys, *argv, "--format", "json", notes=notes))


def test_json_matches_the_evaluation_pipeline(capsys, checkpoint, digits, expected):
    paths, _ = digits
    records = predict_json(capsys, str(checkpoint), *map(str, paths), "--topk", "10")
    assert [r["image"] for r in records] == [str(p) for p in paths]
    for record, probs in zip(records, expected):
        got = {p["class"]: p["probability"] for p in record["predictions"]}
        assert sorted(got) == [str(c) for c in range(10)]
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)
        values = [p["probability"] for p in record["predictions"]]
        assert values == sorted(values, reverse=True)
        # Reading PNGs gives the same probabilities as the dataset tensors: same preprocessing.
        assert torch.tensor([got[str(c)] for c in range(10)]) == pytest.approx(probs, abs=1e-5)


def test_topk_is_clipped_and_ordered(capsys, checkpoint, digits, expected):
    paths, _ = digits
    full = predict_json(capsys, str(checkpoint), str(paths[0]), "--topk", "50")[0]["predictions"]
    assert len(full) == 10
    top3 = predict_json(capsys, str(checkpoint), str(paths[0]), "--topk", "3")[0]["predictions"]
    assert top3 == full[:3]
    assert [p["class"] for p in top3] == [str(c) for c in expected[0].argsort(descending=True)[:3].tolist()]


def test_table_format(capsys, checkpoint, digits):
    paths, _ = digits
    out = predict(capsys, str(checkpoint), str(paths[0]), str(paths[1]), "--topk", "2")
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    for block, path in zip(blocks, paths):
        lines = block.splitlines()
        assert lines[0] == str(path)
        assert lines[1].split() == ["rank", "class", "probability"]
        assert [line.split()[0] for line in lines[3:]] == ["1", "2"]


def test_csv_format(capsys, checkpoint, digits):
    paths, _ = digits
    out = predict(capsys, str(checkpoint), *map(str, paths[:2]), "--topk", "10", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["image", "rank", "class", "probability"]
    assert len(rows) == 20
    for path in paths[:2]:
        mine = [r for r in rows if r["image"] == str(path)]
        assert [int(r["rank"]) for r in mine] == list(range(1, 11))
        assert sum(float(r["probability"]) for r in mine) == pytest.approx(1.0, abs=1e-4)


def test_colour_grey_jpeg_and_other_sizes(capsys, checkpoint, digits, tmp_path):
    paths, images = digits
    digit = Image.open(paths[0])
    grey_rgb = tmp_path / "grey_as_rgb.png"
    Image.merge("RGB", [digit] * 3).save(grey_rgb)  # R = G = B: converts back to the same grey exactly
    tinted = tmp_path / "tinted.jpg"
    Image.merge("RGB", [digit, digit.point(lambda v: v // 2), Image.new("L", digit.size)]).resize((90, 60)).save(
        tinted, quality=90
    )
    big = tmp_path / "big.jpeg"
    digit.resize((200, 200), Image.Resampling.BICUBIC).save(big)
    small = tmp_path / "small.png"
    digit.resize((20, 20)).save(small)

    # the two RGB files are colour images to a 1-channel model: converted, with a note each
    records = predict_json(
        capsys,
        str(checkpoint),
        str(paths[0]),
        str(grey_rgb),
        str(tinted),
        str(big),
        str(small),
        "--topk",
        "10",
        notes=2,
    )
    assert len(records) == 5
    for record in records:
        assert sum(p["probability"] for p in record["predictions"]) == pytest.approx(1.0, abs=1e-5)
    assert records[1]["predictions"] == records[0]["predictions"]


def test_invert(capsys, checkpoint, digits, tmp_path):
    paths, _ = digits
    scan = tmp_path / "dark_on_light.png"
    Image.eval(Image.open(paths[0]), lambda v: 255 - v).save(scan)
    original = predict_json(capsys, str(checkpoint), str(paths[0]), "--topk", "10")[0]["predictions"]
    inverted = predict_json(capsys, str(checkpoint), str(scan), "--topk", "10", "--invert")[0]["predictions"]
    assert inverted == original


def test_directories_and_globs_expand(capsys, checkpoint, digits, tmp_path):
    paths, _ = digits
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    for p in paths[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "sub" / "c.PNG").write_bytes(paths[2].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.png").write_bytes(b"macOS resource fork")

    expected_files = sorted([folder / p.name for p in paths[:2]] + [folder / "sub" / "c.PNG"])
    assert expand_images([str(folder)]) == expected_files
    # A glob then a file it already matched: each image once, in order.
    assert expand_images([str(folder / "*.png"), str(folder / paths[0].name)]) == sorted(
        folder / p.name for p in paths[:2]
    )
    records = predict_json(capsys, str(checkpoint), str(folder), "--topk", "1")
    assert [r["image"] for r in records] == [str(p) for p in expected_files]
    records = predict_json(capsys, str(checkpoint), str(folder / "**" / "*.png"), "--topk", "1")
    assert [r["image"] for r in records] == [str(p) for p in sorted(folder / p.name for p in paths[:2])]


def test_run_directory_and_safetensors_are_accepted(capsys, run_dir, checkpoint, digits, tmp_path):
    paths, _ = digits
    from_pt = predict_json(capsys, str(checkpoint), str(paths[0]), "--topk", "10")
    assert predict_json(capsys, str(run_dir), str(paths[0]), "--topk", "10") == from_pt
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(checkpoint), "--format", "safetensors", "--output", str(exported)]) == 0
    capsys.readouterr()
    from_safetensors = predict_json(capsys, str(exported), str(paths[0]), "--topk", "10")[0]["predictions"]
    for a, b in zip(from_safetensors, from_pt[0]["predictions"]):
        assert a["class"] == b["class"] and a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("googlenet predict: error: ")
    return err


def test_an_unreadable_image_is_skipped_the_others_predicted_and_the_exit_status_says_so(
    capsys, checkpoint, digits, tmp_path
):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(digits[0][0]),
                str(bad),
                str(digits[0][1]),
                "--device",
                "cpu",
                "--topk",
                "1",
            ]
        )
        == 2
    )
    out = capsys.readouterr()
    assert [line.split()[0] for line in out.out.splitlines()] == [str(digits[0][0]), str(digits[0][1])]
    warning, error = out.err.splitlines()
    assert warning.startswith("warning: cannot read image") and "broken.png" in warning
    assert error.startswith("googlenet predict: error: 1 of 3 images could not be read") and "Traceback" not in out.err


def test_topk_1_prints_one_line_per_image(capsys, checkpoint, digits, expected):
    lines = predict(capsys, str(checkpoint), *map(str, digits[0][:3]), "--topk", "1").splitlines()
    assert len(lines) == 3
    for line, probs in zip(lines, expected[:3]):
        image, cls, p = line.split()
        assert cls == str(int(probs.argmax())) and float(p) == pytest.approx(float(probs.max()), abs=1e-4)


def test_the_projects_onnx_export_predicts_the_same(capsys, checkpoint, digits, tmp_path):
    pytest.importorskip("onnxruntime")
    exported = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--output", str(exported)]) == 0
    capsys.readouterr()
    from_pt = predict_json(capsys, str(checkpoint), str(digits[0][0]), "--topk", "3")[0]["predictions"]
    from_onnx = predict_json(capsys, str(exported), str(digits[0][0]), "--topk", "3")[0]["predictions"]
    assert [p["class"] for p in from_onnx] == [p["class"] for p in from_pt]
    assert [p["probability"] for p in from_onnx] == pytest.approx([p["probability"] for p in from_pt], abs=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png"], "does not exist"),
        (["empty_dir"], "no image files"),
        (["empty_dir/*.jpg"], "no image files"),
        (["digit.png", "--topk", "0"], "--topk"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, tmp_path, monkeypatch, args, message):
    # No checkpoint is needed: paths and options are checked before it is loaded.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    assert message in one_line_error(capsys, ["predict", "no_checkpoint.pt", *args])


def test_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    err = one_line_error(capsys, ["predict", str(tmp_path / "nope.pt"), str(tmp_path / "digit.png"), "--device", "cpu"])
    assert "does not exist" in err
