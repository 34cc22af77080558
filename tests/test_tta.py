"""Tests for test-time augmentation (the paper's section 7): evaluate.tta_views and EvalOptions(tta=...)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import checkpoint_state
from torch import nn

import googlenet.data
from googlenet import cli
from googlenet.checkpoint import load_checkpoint, save_checkpoint
from googlenet.data import Preprocess, Split, batch_transform, load_dataset
from googlenet.evaluate import (
    TTA_MODES,
    EvalOptions,
    confusion_matrix,
    evaluate_all,
    evaluate_split,
    tta_view_count,
    tta_views,
)
from googlenet.model import GoogLeNetOutput


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(
        x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < x.shape[-2] or w < x.shape[-1]
    )


def index144(scale: int, square: int, crop: int, mirrored: int = 0) -> int:
    return ((scale * 3 + square) * 6 + crop) * 2 + mirrored


# -------------------------------------------------------------- the views


@pytest.mark.parametrize("mode, count", [("none", 1), ("flip", 2), ("crops10", 10), ("crops144", 144)])
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 20, 30), (1, 3, 30, 20)])
def test_view_counts_and_shapes(mode, count, shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    views = tta_views(images, 16, mode)
    assert tta_view_count(mode) == count
    assert views.shape == (count, shape[0], shape[1], 16, 16) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 255.01  # float 0-255 (antialiasing may overshoot a hair)
    assert torch.equal(tta_views(images.float(), 16, mode), views)  # uint8 or float 0-255 in


def test_crops144_at_224_px_is_the_papers_144_views():
    images = torch.randint(0, 256, (1, 3, 300, 400), dtype=torch.uint8)
    views = tta_views(images, 224, "crops144")
    assert views.shape == (144, 1, 3, 224, 224)
    assert len({v.numpy().tobytes() for v in views}) == 144  # a landscape image: all the views differ


def test_unknown_mode_is_refused():
    assert TTA_MODES == ("none", "flip", "crops10", "crops144")
    with pytest.raises(ValueError, match="unknown TTA mode 'crops12'"):
        tta_views(torch.zeros(1, 1, 8, 8), 8, "crops12")


def test_every_second_view_is_the_mirror_of_the_one_before():
    images = torch.randint(0, 256, (3, 1, 20, 30), dtype=torch.uint8)
    for mode in ("flip", "crops10", "crops144"):
        views = tta_views(images, 16, mode)
        assert torch.equal(views[1::2], views[0::2].flip(-1)), mode
        assert not torch.equal(views[0], views[1])


def test_none_and_flip_see_what_batch_transform_sees():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    pre = Preprocess(32, 1, 1, 28, (0.0,), (1 / 255,))  # normalised image = pixel value 0-255
    torch.testing.assert_close(tta_views(images, 32, "flip")[0], batch_transform(images, pre))
    crop_pre = replace(pre, image_size=24, resize=28)  # Preprocess.resize: resize, then the centre crop
    torch.testing.assert_close(tta_views(images, 24, "none", resize=28)[0], batch_transform(images, crop_pre))
    torch.testing.assert_close(tta_views(images, 24, "flip", resize=28)[1], batch_transform(images, crop_pre).flip(-1))


def test_crops10_are_the_corners_and_centre_of_the_256_224_resize():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    views = tta_views(images, 32, "crops10")
    big = resize(images.float(), 37, 37)  # round(32 * 256 / 224) = 37
    expected = [big[..., :32, :32], big[..., :32, 5:], big[..., 5:, :32], big[..., 5:, 5:], big[..., 2:34, 2:34]]
    for i, crop in enumerate(expected):
        torch.testing.assert_close(views[2 * i], crop)


def test_crops144_scales_and_the_sixth_crop_of_a_square_is_the_square_resized():
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    views = tta_views(images, 32, "crops144")
    for s, side in enumerate((37, 41, 46, 50)):  # round(32 * (256, 288, 320, 352) / 224)
        scaled = resize(images.float(), side, side)
        for q in range(3):  # a square image: its three squares are the image itself
            torch.testing.assert_close(views[index144(s, q, 0)], scaled[..., :32, :32])
            torch.testing.assert_close(views[index144(s, q, 3)], scaled[..., side - 32 :, side - 32 :])
            c = (side - 32) // 2
            torch.testing.assert_close(views[index144(s, q, 4)], scaled[..., c : c + 32, c : c + 32])
            torch.testing.assert_close(views[index144(s, q, 5)], resize(scaled, 32, 32))
            torch.testing.assert_close(views[index144(s, q, 5, 1)], resize(scaled, 32, 32).flip(-1))


@pytest.mark.parametrize("portrait", [False, True])
def test_crops144_squares_are_left_centre_right_or_top_centre_bottom(portrait):
    # A ramp along the long side: the mean of a square grows from the first square to the last.
    ramp = torch.linspace(0, 255, 60).expand(30, 60)  # 30 x 60, landscape
    images = (ramp.T if portrait else ramp).contiguous()[None, None].to(torch.uint8)
    views = tta_views(images, 16, "crops144")
    for s, side in enumerate((18, 21, 23, 25)):  # round(16 * (256, 288, 320, 352) / 224)
        scaled = resize(images.float(), 2 * side, side) if portrait else resize(images.float(), side, 2 * side)
        for q, offset in enumerate((0, side // 2, side)):
            square = scaled[..., offset : offset + side, :] if portrait else scaled[..., :, offset : offset + side]
            torch.testing.assert_close(views[index144(s, q, 5)], resize(square, 16, 16))
            c = (side - 16) // 2
            torch.testing.assert_close(views[index144(s, q, 4)], square[..., c : c + 16, c : c + 16])
            torch.testing.assert_close(views[index144(s, q, 1)], square[..., :16, side - 16 :])
        means = [views[index144(s, q, 5)].mean().item() for q in range(3)]
        assert means[0] < means[1] < means[2]
    # Within a square the ramp runs across the columns (landscape) or the rows (portrait) of the crops.
    whole = views[index144(0, 1, 5), 0, 0]
    assert (whole[-1] > whole[0]).all() if portrait else (whole[:, -1] > whole[:, 0]).all()


# -------------------------------------------------------------- evaluate_split with TTA


class BrightnessModel(nn.Module):
    """Class c = an image of grey level (c + 0.5) * step; the logits do not change between views of a uniform image."""

    def __init__(self, num_classes: int, step: float) -> None:
        super().__init__()
        self.num_classes, self.step = num_classes, step
        self.calls = 0

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        self.calls += 1
        level = x.mean(dim=(1, 2, 3)) / self.step
        centres = torch.arange(self.num_classes, dtype=x.dtype) + 0.5
        return GoogLeNetOutput(-(level[:, None] - centres).abs() * 3)


class PooledLinear(nn.Module):
    """A small deterministic classifier that does see the differences between views."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(channels * 16, num_classes)

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        return GoogLeNetOutput(self.fc(F.adaptive_avg_pool2d(x, 4).flatten(1)))


def grey_split(levels: list[int], labels: list[int], step: int, side: int = 12) -> tuple[Split, Preprocess]:
    values = torch.tensor(levels) * step + step // 2
    images = values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, side, side).contiguous()
    return Split(images, torch.tensor(labels)), Preprocess(8, 1, 1, side, (0.0,), (1 / 255,))


def test_none_is_todays_evaluation_exactly():
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 3, (10,)))
    pre = Preprocess(16, 1, 1, 28, (0.5,), (0.25,))
    model = PooledLinear(1, 3)
    default = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=10))
    none = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=10, tta="none"))
    with torch.no_grad():
        logits = model(batch_transform(images, pre)).logits
    assert none.loss == default.loss == F.cross_entropy(logits, split.labels, reduction="sum").double().item() / 10
    assert none.accuracy == default.accuracy == (logits.argmax(1) == split.labels).sum().item() / 10
    assert torch.equal(none.confusion, default.confusion) and none.top5 == default.top5


@pytest.mark.parametrize("mode", ["flip", "crops10", "crops144"])
def test_a_model_that_sees_the_same_in_every_view_scores_as_without_tta(mode):
    split, pre = grey_split([0, 1, 2, 3, 0, 1, 2, 3, 3, 3], [0, 1, 2, 3, 1, 1, 2, 0, 3, 2], step=60)
    model = BrightnessModel(4, step=60)
    plain = evaluate_split(model, split, pre, 4, EvalOptions(batch_size=4))
    model.calls = 0
    model.train()
    tta = evaluate_split(model, split, pre, 4, EvalOptions(batch_size=4, tta=mode))
    assert model.training  # mode restored
    assert torch.equal(tta.confusion, plain.confusion) and tta.accuracy == plain.accuracy == 0.7
    assert tta.top5 == plain.top5
    assert tta.loss == pytest.approx(plain.loss, rel=1e-5)
    # 3 batches; a square image's three squares coincide, so crops144 runs 48 distinct views, each counted 3 times.
    assert model.calls == 3 * {"flip": 2, "crops10": 10, "crops144": 48}[mode]


class LeftOrRight(nn.Module):
    """Confident logits that depend on whether the bright half of the image is on the left or on the right."""

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        w = x.shape[-1]
        left = x[..., : w // 2].mean(dim=(1, 2, 3)) > x[..., w // 2 :].mean(dim=(1, 2, 3))
        a, b = torch.tensor([2.0, 0.0, -20.0]), torch.tensor([-20.0, 0.0, 2.1])
        return GoogLeNetOutput(torch.where(left[:, None], a, b))


def test_the_softmax_is_averaged_not_the_logits():
    images = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    images[..., :2] = 200  # bright left half; its mirror is bright on the right
    split, pre = Split(images, torch.tensor([2])), Preprocess(4, 1, 1, 4, (0.0,), (1 / 255,))
    a, b = torch.tensor([2.0, 0.0, -20.0]), torch.tensor([-20.0, 0.0, 2.1])
    # Mean logits (-9, 0, -8.95) would pick class 1; mean probabilities (0.44, 0.11, 0.45) pick class 2.
    assert ((a + b) / 2).argmax() == 1 and ((a.softmax(0) + b.softmax(0)) / 2).argmax() == 2
    m = evaluate_split(LeftOrRight(), split, pre, 3, EvalOptions(tta="flip"))
    assert m.accuracy == 1.0 and m.confusion.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert m.loss == pytest.approx(-math.log((a.softmax(0)[2] + b.softmax(0)[2]).item() / 2), rel=1e-6)
    assert evaluate_split(LeftOrRight(), split, pre, 3).accuracy == 0.0  # without TTA: class 0


def test_the_loss_stays_finite_when_every_view_gives_the_true_class_probability_zero():
    images = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    images[..., :2] = 200
    split, pre = Split(images, torch.tensor([1])), Preprocess(4, 1, 1, 4, (0.0,), (1 / 255,))

    class Extreme(LeftOrRight):
        def forward(self, x):
            return GoogLeNetOutput(super().forward(x).logits * 100)  # softmax underflows to 0 in float32

    # The views give class 1 probabilities e^-200 and e^-210, both 0 in float32; the log of their mean is still exact.
    m = evaluate_split(Extreme(), split, pre, 3, EvalOptions(tta="flip"))
    assert m.loss == pytest.approx(200 + math.log(2) - math.log1p(math.exp(-10)), rel=1e-6)


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (6, 3, 20, 30)])
def test_crops144_evaluation_is_the_average_over_the_144_views(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    split = Split(images, torch.randint(0, 5, (6,)))
    pre = Preprocess(16, shape[1], shape[1], shape[-1], (0.4,) * shape[1], (0.3,) * shape[1], resize=20)
    model = PooledLinear(shape[1], 5)
    m = evaluate_split(model, split, pre, 5, EvalOptions(batch_size=4, tta="crops144"))
    views = tta_views(images, 16, "crops144")
    view_pre = replace(pre, resize=None)
    with torch.no_grad():
        probs = torch.stack([model(batch_transform(v, view_pre)).logits.softmax(1) for v in views]).mean(0)
    assert m.loss == pytest.approx(F.nll_loss(probs.log(), split.labels).item(), rel=1e-5)
    assert torch.equal(m.confusion, confusion_matrix(split.labels, probs.argmax(1), 5))
    assert m.top5 == 1.0


def test_a_real_googlenet_with_channels_last():
    from googlenet.model import GoogLeNet

    torch.manual_seed(0)
    model = GoogLeNet(num_classes=3, in_channels=1)
    split = Split(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1, 2, 0]))
    pre = Preprocess(32, 1, 1, 28, (0.5,), (0.25,))
    a = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=4, tta="flip"))
    b = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=3, tta="flip", channels_last=True))
    assert torch.equal(a.confusion, b.confusion) and a.loss == pytest.approx(b.loss, rel=1e-4)


# -------------------------------------------------------------- evaluate_all and the command


@pytest.fixture
def small_mnist(monkeypatch):
    """load_dataset with each split cut to its first 40 images, so that the command runs in seconds."""

    def small_dataset(*args, **kwargs):
        ds = load_dataset(*args, **kwargs)
        for name in ("train", "val", "test"):
            s = getattr(ds, name)
            setattr(ds, name, Split(s.images[:40], s.labels[:40]))
        small_dataset.last = ds
        return ds

    monkeypatch.setattr(googlenet.data.datasets, "load_dataset", small_dataset)
    return small_dataset


def test_evaluate_command_with_tta(tmp_path, small_mnist, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a checkpoint outside a run directory: the JSON goes to the working directory
    save_checkpoint(tmp_path / "ckpt.pt", checkpoint_state())
    assert cli.main(["evaluate", str(tmp_path / "ckpt.pt"), "--split", "val", "--tta", "flip", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Test-time augmentation: flip (2 views per image, softmax averaged)" in printed
    saved = json.loads((tmp_path / "evaluate_val_flip.json").read_text())  # beside the plain figures, never over them
    assert saved["tta"] == "flip" and list(saved["splits"]) == ["val"] and sum(saved["splits"]["val"]["support"]) == 40
    direct = evaluate_all(
        load_checkpoint(tmp_path / "ckpt.pt"), small_mnist.last, torch.device("cpu"), ("val",), tta="flip"
    )
    assert saved["splits"]["val"]["accuracy"] == direct["val"]["accuracy"]
    assert saved["splits"]["val"]["loss"] == pytest.approx(direct["val"]["loss"], rel=1e-5)

    assert cli.main(["evaluate", str(tmp_path / "ckpt.pt"), "--split", "val", "--device", "cpu"]) == 0
    assert "Test-time augmentation: none (one view per image)" in capsys.readouterr().out
    assert json.loads((tmp_path / "evaluate_val.json").read_text())["tta"] == "none"


def test_evaluate_command_refuses_an_unknown_mode(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "x.pt", "--tta", "crops12"])
    assert exc.value.code == 2 and "argument --tta: invalid choice: 'crops12'" in capsys.readouterr().err
