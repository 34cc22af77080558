"""Metrics from a confusion matrix, and evaluation of a model on a split.

The metric functions are pure: tensors in, numbers out. Every figure of a
report (accuracy, per-class precision/recall/F1, macro and weighted averages)
comes from one confusion matrix, so the tables always agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Preprocess, Split, batch_transform

__all__ = ["SplitMetrics", "classification_metrics", "confusion_matrix", "evaluate_split"]


def confusion_matrix(targets: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """Counts: rows are true classes, columns predicted classes."""
    idx = targets.long().cpu() * num_classes + preds.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(cm: Tensor) -> dict:
    """Accuracy and per-class precision, recall, F1 and support, with macro and weighted averages.

    A class never predicted has precision 0 (scikit-learn's zero_division=0);
    likewise recall for a class absent from the targets.
    """
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    total = cm.sum()
    weights = support / total.clamp(min=1)
    return {
        "accuracy": (tp.sum() / total.clamp(min=1)).item(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.long().tolist(),
        "macro": {"precision": precision.mean().item(), "recall": recall.mean().item(), "f1": f1.mean().item()},
        "weighted": {
            "precision": (precision * weights).sum().item(),
            "recall": (recall * weights).sum().item(),
            "f1": (f1 * weights).sum().item(),
        },
    }


@dataclass
class SplitMetrics:
    loss: float  # mean cross-entropy of the main classifier
    accuracy: float
    top5: float
    confusion: Tensor  # num_classes x num_classes, rows = true class

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "top5": self.top5,
            **classification_metrics(self.confusion),
            "confusion_matrix": self.confusion.tolist(),
        }


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: Split,
    pre: Preprocess,
    num_classes: int,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    limit_batches: int | None = None,
    channels_last: bool = False,
    indices: Tensor | None = None,
    reduce=None,
) -> SplitMetrics:
    """Eval-mode pass over a split (or the given indices of it).

    `reduce`, when given, sums tensors across processes (distributed runs),
    so that the metrics cover every sample exactly once.
    """
    was_training = model.training
    model.eval()
    idx = torch.arange(len(split)) if indices is None else indices
    if limit_batches is not None:
        idx = idx[: limit_batches * batch_size]
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for start in range(0, len(idx), batch_size):
        batch = idx[start : start + batch_size]
        images = split.images[batch].to(device, non_blocking=True)
        labels = split.labels[batch].to(device, non_blocking=True)
        x = batch_transform(images, pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum().double().cpu()
        cm += confusion_matrix(labels, logits.argmax(1), num_classes)
    count = torch.tensor(float(len(idx)), dtype=torch.float64)
    if reduce is not None:
        loss_sum, top5, cm, count = (reduce(t) for t in (loss_sum, top5, cm, count))
    model.train(was_training)
    n = max(count.item(), 1.0)
    return SplitMetrics(loss_sum.item() / n, cm.diag().sum().item() / n, top5.item() / n, cm)
