"""Tests for googlenet.evaluate: metrics against hand-computed cases and scikit-learn; evaluate_split."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import googlenet.data
from googlenet import cli
from googlenet.data import Preprocess, Split, batch_transform, load_dataset
from googlenet.evaluate import (
    EvalOptions,
    SplitMetrics,
    classification_metrics,
    confusion_matrix,
    eval_count,
    eval_indices,
    evaluate_split,
)
from googlenet.model import GoogLeNet, GoogLeNetOutput

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_confusion_matrix_by_hand():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(targets, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]  # rows true, columns predicted
    assert cm.dtype == torch.int64


def test_confusion_matrix_keeps_unseen_classes():
    cm = confusion_matrix(torch.tensor([1, 1]), torch.tensor([1, 0]), 4)
    assert cm.shape == (4, 4) and cm.sum() == 2 and cm[1, 1] == 1 and cm[1, 0] == 1


def test_metrics_by_hand_with_a_class_never_predicted_and_a_class_absent():
    # Class 2 occurs twice but is never predicted; class 3 never occurs but is predicted once.
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 3, 0])
    cm = confusion_matrix(targets, preds, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx([1 / 2, 2 / 3, 0.0, 0.0])
    assert m["recall"] == pytest.approx([1 / 2, 1.0, 0.0, 0.0])
    assert m["f1"] == pytest.approx([1 / 2, 0.8, 0.0, 0.0])
    assert m["support"] == [2, 2, 2, 0]
    assert m["macro"] == pytest.approx({"precision": (1 / 2 + 2 / 3) / 4, "recall": 1.5 / 4, "f1": 1.3 / 4})
    # Weighted by support: class 3 (support 0) does not count.
    assert m["weighted"] == pytest.approx({"precision": (1 / 2 + 2 / 3) / 3, "recall": 1.5 / 3, "f1": 1.3 / 3})


def test_metrics_perfect_and_empty():
    m = classification_metrics(confusion_matrix(torch.arange(5), torch.arange(5), 5))
    assert m["accuracy"] == 1.0 and m["precision"] == m["recall"] == m["f1"] == [1.0] * 5
    empty = classification_metrics(torch.zeros(3, 3, dtype=torch.long))
    assert empty["accuracy"] == 0.0 and empty["f1"] == [0.0] * 3 and empty["support"] == [0, 0, 0]
    assert empty["weighted"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def _compare_with_sklearn(targets: torch.Tensor, preds: torch.Tensor, k: int) -> None:
    labels = list(range(k))
    cm = confusion_matrix(targets, preds, k)
    assert cm.tolist() == sklearn_metrics.confusion_matrix(targets.numpy(), preds.numpy(), labels=labels).tolist()
    ours = classification_metrics(cm)
    ref = sklearn_metrics.classification_report(
        targets.numpy(), preds.numpy(), labels=labels, output_dict=True, zero_division=0
    )
    for c in labels:
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[key][c] == pytest.approx(ref[str(c)][ref_key], abs=1e-12), (key, c)
        assert ours["support"][c] == ref[str(c)]["support"]
    for avg in ("macro", "weighted"):
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[avg][key] == pytest.approx(ref[f"{avg} avg"][ref_key], abs=1e-12), (avg, key)
    assert ours["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(targets.numpy(), preds.numpy()), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_on_random_data(seed):
    g = torch.Generator().manual_seed(seed)
    k = 7
    targets = torch.randint(0, k, (500,), generator=g)
    # Mostly right, sometimes wrong: realistic, and every cell of the matrix can be hit.
    noise = torch.randint(0, k, (500,), generator=g)
    preds = torch.where(torch.rand(500, generator=g) < 0.6, targets, noise)
    _compare_with_sklearn(targets, preds, k)


def test_metrics_match_sklearn_with_missing_classes():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (300,), generator=g)  # class 5 never occurs
    preds = torch.randint(0, 6, (300,), generator=g)
    preds[preds == 2] = 4  # class 2 never predicted
    _compare_with_sklearn(targets, preds, 6)


# -------------------------------------------------------------- evaluate_split


class BrightnessModel(nn.Module):
    """A stand-in classifier with known answers: class c = an image of grey level (c + 0.5) * step.

    Logits fall with the distance between the image's level and each class's,
    so the ranking of the classes (hence top-5) is known too.
    """

    def __init__(self, num_classes: int, step: float) -> None:
        super().__init__()
        self.num_classes, self.step = num_classes, step
        self.weight = nn.Parameter(torch.ones(()))  # so that .parameters() is not empty

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        level = x.mean(dim=(1, 2, 3)) / self.step * self.weight
        centres = torch.arange(self.num_classes, dtype=x.dtype) + 0.5
        return GoogLeNetOutput(-(level[:, None] - centres).abs() * 10)


def grey_split(levels: list[int], labels: list[int], step: int) -> tuple[Split, Preprocess]:
    # With mean 0 and std 1/255 the normalised image equals its uint8 value.
    values = torch.tensor(levels) * step + step // 2
    images = values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    return Split(images, torch.tensor(labels)), Preprocess(8, 1, 1, 8, (0.0,), (1 / 255,))


def test_evaluate_split_with_known_predictions():
    split, pre = grey_split([0, 1, 2, 3, 0, 1, 2, 3, 3, 3], [0, 1, 2, 3, 1, 1, 2, 0, 3, 2], step=60)
    model = BrightnessModel(4, step=60)
    model.train()
    m = evaluate_split(model, split, pre, 4, EvalOptions(batch_size=3))
    assert model.training  # mode restored
    assert isinstance(m, SplitMetrics)
    # predictions = levels = [0,1,2,3,0,1,2,3,3,3]; labels = [0,1,2,3,1,1,2,0,3,2]
    assert m.confusion.tolist() == [[1, 0, 0, 1], [1, 2, 0, 0], [0, 0, 2, 1], [0, 0, 0, 2]]
    assert m.accuracy == pytest.approx(7 / 10)
    logits = model(batch_transform(split.images, pre)).logits
    assert m.loss == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-6)
    assert m.top5 == 1.0  # 4 classes: the top 5 are all of them
    d = m.to_dict()
    assert d["accuracy"] == m.accuracy and d["confusion_matrix"] == m.confusion.tolist() and d["loss"] == m.loss
    assert d["support"] == [2, 3, 3, 2]


def test_evaluate_split_top5():
    # Level 0 ranks classes 0,1,2,3,4 first; level 5 ranks 5,4,6,3,7; level 9 ranks 9,8,7,6,5.
    split, pre = grey_split([0, 0, 5, 5, 9], [4, 5, 7, 8, 5], step=20)
    m = evaluate_split(BrightnessModel(10, step=20), split, pre, 10, EvalOptions(batch_size=2))
    assert m.top5 == pytest.approx(3 / 5)
    assert m.accuracy == 0.0


def test_evaluate_split_limits_and_indices():
    split, pre = grey_split([0, 1, 2, 3, 0, 1, 2, 3, 3, 3], [0, 1, 2, 3, 1, 1, 2, 0, 3, 2], step=60)
    model = BrightnessModel(4, step=60)
    limited = eval_indices(len(split), 3, limit_batches=2)
    assert evaluate_split(model, split, pre, 4, EvalOptions(batch_size=3), indices=limited).confusion.sum() == 6
    sub = evaluate_split(model, split, pre, 4, EvalOptions(batch_size=2), indices=torch.tensor([1, 5, 9]))
    # images 1, 5, 9: levels 1, 1, 3 with labels 1, 1, 2
    assert sub.confusion.tolist() == [[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert sub.accuracy == pytest.approx(2 / 3)


def test_eval_count_is_the_limit_in_images():
    assert eval_count(1000, 500) == 1000  # no limit: every image
    assert eval_count(1000, 300, limit_batches=2) == 600
    assert eval_count(1000, 300, limit_batches=5) == 1000  # never more than the split
    assert eval_indices(1000, 300, limit_batches=2).tolist() == list(range(600))  # one process: all of them


def test_eval_options_refuse_an_unknown_tta_mode_before_any_work():
    with pytest.raises(ValueError, match="unknown TTA mode 'crops12'"):
        EvalOptions(tta="crops12")


def test_evaluate_split_on_a_tiny_googlenet():
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=3, in_channels=1)
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    split = Split(images, labels)
    pre = Preprocess(32, 1, 1, 28, (0.5,), (0.25,))
    m_whole = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=10))
    m_batched = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=4, channels_last=True))
    assert model.training  # restored to train mode
    assert torch.equal(m_whole.confusion, m_batched.confusion)
    assert m_whole.loss == pytest.approx(m_batched.loss, rel=1e-4)
    model.eval()
    with torch.no_grad():
        logits = model(batch_transform(images, pre)).logits
    assert m_whole.accuracy == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert m_whole.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
    assert m_whole.top5 == 1.0  # 3 classes
    assert m_whole.confusion.sum() == 10


# ------------------------------------------------ a run's checkpoint: the final evaluation and googlenet evaluate


def test_evaluate_command_all_splits(trained_run, tmp_path, monkeypatch, capsys):
    """`googlenet evaluate CKPT --split all`, on the first 50 images of each split to keep it quick."""

    def small_dataset(*args, **kwargs):
        ds = load_dataset(*args, **kwargs)
        for name in ("train", "val", "test"):
            s = getattr(ds, name)
            setattr(ds, name, Split(s.images[:50], s.labels[:50]))
        return ds

    monkeypatch.setattr(googlenet.data.datasets, "load_dataset", small_dataset)
    out_path = tmp_path / "metrics.json"
    checkpoint = trained_run / "weights" / "best.pt"
    assert cli.main(["evaluate", str(checkpoint), "--split", "all", "--output", str(out_path)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out_path.read_text())
    assert saved["checkpoint"] == str(checkpoint) and saved["classes"] == [str(i) for i in range(10)]
    assert list(saved["splits"]) == ["train", "val", "test"]
    accuracy_line = next(line for line in printed.splitlines() if line.startswith("Accuracy (%)"))
    assert accuracy_line.split()[2:] == [
        f"{100 * saved['splits'][s]['accuracy']:.2f}" for s in ("train", "val", "test")
    ]
    for split in saved["splits"].values():
        assert np.array(split["confusion_matrix"]).sum() == 50
    class_row = next(line for line in printed.splitlines() if line.startswith("0 "))
    splits = [saved["splits"][s] for s in ("train", "val", "test")]
    assert class_row.split()[1:] == [f"{m[key][0]:.4f}" for m in splits for key in ("precision", "recall", "f1")]
    assert f"Saved {out_path}" in printed


def test_evaluate_command_default_output_is_in_the_run(trained_run, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)

    def tiny_dataset(*args, **kwargs):
        ds = load_dataset(*args, **kwargs)
        ds.test = Split(ds.test.images[:20], ds.test.labels[:20])
        return ds

    monkeypatch.setattr(googlenet.data.datasets, "load_dataset", tiny_dataset)
    assert cli.main(["evaluate", str(copy / "weights" / "last.pt")]) == 0  # --split test by default
    saved = json.loads((copy / "evaluate_test.json").read_text())
    assert list(saved["splits"]) == ["test"] and sum(saved["splits"]["test"]["support"]) == 20


def test_metrics_json_is_consistent(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["checkpoint"] == "weights/best.pt" and metrics["best_epoch"] == 1
    assert list(metrics["splits"]) == ["train", "val", "test"]
    for split, m in metrics["splits"].items():
        cm = np.array(m["confusion_matrix"])
        assert cm.shape == (10, 10) and cm.sum() == 100, split  # --limit-eval-batches 1 of 100 images
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
        assert m["support"] == cm.sum(1).tolist()
        with open(trained_run / f"confusion_{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0][1:] == metrics["classes"]
        assert [[int(v) for v in r[1:]] for r in rows[1:]] == m["confusion_matrix"]
