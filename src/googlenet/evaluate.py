"""Metrics from a confusion matrix, and evaluation of a model on a split.

The metric functions are pure: tensors in, numbers out. Every figure of a
report (accuracy, per-class precision/recall/F1, macro and weighted averages)
comes from one confusion matrix, so the tables always agree with each other.

Test-time augmentation (`tta_views`, `evaluate_split(..., tta=...)`) is the
paper's multi-crop evaluation (section 7): the softmax is averaged over
several views of each image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import FileSplit, Preprocess, Split, batch_transform, eval_batches, evaluation_view, resize_shorter

__all__ = ["TTA_MODES", "SplitMetrics", "classification_metrics", "confusion_matrix", "evaluate_split", "tta_view_count", "tta_views"]

MOST_ERRORS = 40  # misclassified images a run's errors_test.png shows


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


# ---------------------------------------------------------------- test-time augmentation

TTA_MODES = ("none", "flip", "crops10", "crops144")
_VIEW_COUNTS = {"none": 1, "flip": 2, "crops10": 10, "crops144": 144}
# The paper's sides of the resized image at 224 px input (section 7); scaled in proportion for other sizes.
CROPS144_SIDES = (256, 288, 320, 352)
CROPS10_SIDE = 256


def tta_view_count(mode: str) -> int:
    """Views per image of a TTA mode: none 1, flip 2, crops10 10, crops144 144."""
    if mode not in _VIEW_COUNTS:
        raise ValueError(f"unknown TTA mode {mode!r}: use one of {', '.join(TTA_MODES)}")
    return _VIEW_COUNTS[mode]


def _resize(x: Tensor, h: int, w: int) -> Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=h < x.shape[-2] or w < x.shape[-1])


def _five_crops(x: Tensor, size: int) -> list[Tensor]:
    """The 4 corners (top-left, top-right, bottom-left, bottom-right) and the centre size x size crop."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return [
        x[..., :size, :size],
        x[..., :size, w - size :],
        x[..., h - size :, :size],
        x[..., h - size :, w - size :],
        x[..., top : top + size, left : left + size],
    ]


def _weighted_views(
    images: Tensor, image_size: int, mode: str, resize: int | None = None, merge: bool = True
) -> Iterator[tuple[Tensor, int]]:
    """(view, multiplicity) pairs in the order of `tta_views`, made lazily; the multiplicities sum to `tta_view_count(mode)`.

    Each view is a new float 0-255 tensor N x C x image_size x image_size that
    the caller may modify. With `merge`, views that coincide (the three squares
    of a square image) are made once, with multiplicity 3, so that a weighted
    average over these pairs equals the average over all the views; without
    it every multiplicity is 1.
    """
    count = tta_view_count(mode)
    x = images.float()
    size = image_size
    if mode in ("none", "flip"):  # the geometry of batch_transform without augmentation
        view = evaluation_view(x, size, resize).clone(memory_format=torch.contiguous_format)
        mirror = view.flip(-1) if mode == "flip" else None  # made before the caller may modify `view`
        yield view, 1
        if mirror is not None:
            yield mirror, 1
        return
    if mode == "crops10":
        for crop in _five_crops(resize_shorter(x, round(size * CROPS10_SIDE / 224)), size):
            crop = crop.clone(memory_format=torch.contiguous_format)
            mirror = crop.flip(-1)
            yield crop, 1
            yield mirror, 1
        return
    made = 0
    for side in CROPS144_SIDES:
        scaled = resize_shorter(x, round(size * side / 224))
        h, w = scaled.shape[-2:]
        short, long = min(h, w), max(h, w)
        offsets = (0, (long - short) // 2, long - short)  # left, centre, right (top, centre, bottom if portrait)
        squares = [(offsets[0], 3)] if merge and long == short else [(o, 1) for o in offsets]
        for offset, repeat in squares:
            square = scaled[..., :, offset : offset + short] if w > h else scaled[..., offset : offset + short, :]
            for crop in [*_five_crops(square, size), _resize(square, size, size)]:
                crop = crop.clone(memory_format=torch.contiguous_format)
                mirror = crop.flip(-1)
                yield crop, repeat
                yield mirror, repeat
                made += 2 * repeat
    assert made == count


def tta_views(images: Tensor, image_size: int, mode: str, resize: int | None = None) -> Tensor:
    """The test-time views of a batch: V x N x C x image_size x image_size, float 0-255.

    `images` are stored images N x C x h x w (uint8 or float 0-255, any h and w).
    Every view is followed by its mirror (left-right flip):

    - none (V = 1): the image as evaluation sees it (`data.evaluation_view`: resized to
      image_size, or with `resize` its shorter side resized and centre-cropped, as `Preprocess.resize`);
    - flip (2): that view and its mirror;
    - crops10 (10): the shorter side resized to image_size * 256/224, then the
      4 corner and the centre image_size crops, each with its mirror;
    - crops144 (144, the paper's section 7): the shorter side resized to
      image_size * s/224 for s = 256, 288, 320, 352; of each, the left, centre
      and right squares (top, centre, bottom for portrait images); of each
      square, the 4 corner and the centre crops and the whole square resized to
      image_size; each with its mirror. View index
      ((scale * 3 + square) * 6 + crop) * 2 + mirrored.

    Resizing is bilinear (align_corners=False), antialiased when it shrinks.
    `evaluate_split` makes the same views lazily; this function stacks them all.
    """
    return torch.stack([v for v, _ in _weighted_views(images, image_size, mode, resize, merge=False)])


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
    split: Split | FileSplit,
    pre: Preprocess,
    num_classes: int,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    limit_batches: int | None = None,
    channels_last: bool = False,
    indices: Tensor | None = None,
    reduce=None,
    tta: str = "none",
    progress=None,
    errors: list[tuple[int, int]] | None = None,
    most_errors: int = MOST_ERRORS,
) -> SplitMetrics:
    """Eval-mode pass over a split (or the given indices of it), in memory or read from disk (stream.eval_batches).

    `reduce`, when given, sums tensors across processes (distributed runs),
    so that the metrics cover every sample exactly once; `progress`, when
    given, is told each batch's image count (a tqdm bar's `update`); `errors`,
    when given, collects (split index, predicted class) of the first
    `most_errors` images the model gets wrong.
    `tta` other than "none" averages the softmax over the views of `tta_views`
    (made one at a time, so memory stays that of one view); loss, top-5 and the
    predictions then come from the log of the averaged probabilities, so the
    loss is the negative log-likelihood of the averaged softmax.
    """
    tta_view_count(tta)  # refuses an unknown mode before any work
    view_pre = replace(pre, resize=None)
    was_training = model.training
    model.eval()
    idx = torch.arange(len(split)) if indices is None else indices
    if limit_batches is not None:
        idx = idx[: limit_batches * batch_size]
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch, images in eval_batches(split, idx, batch_size, device):
        labels = split.labels[batch].to(device, non_blocking=True)
        if tta == "none":
            x = batch_transform(images, pre)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).logits.float()
        else:
            logits = _tta_log_probs(model, images, pre, view_pre, tta, channels_last)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum().double().cpu()
        predicted = logits.argmax(1)
        cm += confusion_matrix(labels, predicted, num_classes)
        if errors is not None and len(errors) < most_errors:
            miss = (predicted != labels).nonzero().flatten()[: most_errors - len(errors)].cpu()
            errors += [(int(batch[i]), int(predicted[i])) for i in miss]
        if progress is not None:
            progress(len(batch))
    count = torch.tensor(float(len(idx)), dtype=torch.float64)
    if reduce is not None:
        loss_sum, top5, cm, count = (reduce(t) for t in (loss_sum, top5, cm, count))
    model.train(was_training)
    n = max(count.item(), 1.0)
    return SplitMetrics(loss_sum.item() / n, cm.diag().sum().item() / n, top5.item() / n, cm)


def _tta_log_probs(model: nn.Module, images: Tensor, pre: Preprocess, view_pre: Preprocess, mode: str, channels_last: bool) -> Tensor:
    """log(mean over the views of softmax(logits)), N x classes, accumulated one view at a time in log space."""
    acc = None
    for view, repeat in _weighted_views(images, pre.image_size, mode, pre.resize):
        x = batch_transform(view, view_pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        log_p = model(x).logits.float().log_softmax(1)
        if repeat != 1:
            log_p = log_p + math.log(repeat)
        acc = log_p if acc is None else torch.logaddexp(acc, log_p)
    return acc - math.log(tta_view_count(mode))
