"""Metrics from a confusion matrix, a model's evaluation on a split, and a checkpoint's on whole splits.

The metric functions are pure: tensors in, numbers out. Every figure of a
report (accuracy, per-class precision/recall/F1, macro and weighted averages)
comes from one confusion matrix, so the tables always agree with each other.

Test-time augmentation (`tta_views`, `EvalOptions(tta=...)`) is the
paper's multi-crop evaluation (section 7): the softmax is averaged over
several views of each image.

`evaluate_all` evaluates a checkpoint on whole splits, sharded under torchrun: `write_final_outputs` (the
end of every training run, which then has report.py write the figures and REPORT.md) and `run_evaluate`
(`googlenet evaluate`) both use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from .data import (
    TTA_MODES,
    Dataset,
    FileSplit,
    Preprocess,
    Split,
    batch_transform,
    default_workers,
    eval_batches,
    load_evaluation_data,
    tta_view_count,
    tta_views,
    weighted_views,
)
from .files import atomic_write_text, check_output_file
from .kernels import accelerate
from .memory import largest_batch
from .report import SPLIT_TITLES, build_report, plot_errors, write_metrics
from .runtime import log, on_terminal, progress_bar, select_device
from .tables import format_table

__all__ = [
    "TTA_MODES",
    "EvalOptions",
    "SplitMetrics",
    "classification_metrics",
    "confusion_matrix",
    "eval_count",
    "eval_indices",
    "evaluate_split",
    "tta_view_count",
    "tta_views",
]

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


def eval_count(size: int, batch_size: int, limit_batches: int | None = None) -> int:
    """How many images of a split of `size` a run evaluates: the first `limit_batches` x `batch_size`
    (--limit-eval-batches), or all of them."""
    return size if limit_batches is None else min(size, limit_batches * batch_size)


def eval_indices(size: int, batch_size: int, limit_batches: int | None = None) -> Tensor:
    """The images of a split of `size` this process evaluates: the first `eval_count`, then, under torchrun,
    this process's share of those. Limit first, then shard: the same images are evaluated whatever the
    process count."""
    n = eval_count(size, batch_size, limit_batches)
    share = dist_utils.shard(n)
    return torch.arange(n) if share is None else share


@dataclass(frozen=True)
class EvalOptions:
    """How `evaluate_split` runs the model: the same for every split of a run."""

    batch_size: int = 500
    device: torch.device | str = "cpu"
    channels_last: bool = False  # the memory format the model was moved to
    tta: str = "none"  # test-time augmentation: a mode of TTA_MODES (the softmax averaged over tta_views)

    def __post_init__(self) -> None:
        tta_view_count(self.tta)  # refuses an unknown mode before any work


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
    options: EvalOptions | None = None,
    *,
    indices: Tensor | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
    progress: Callable[[int], object] | None = None,
    errors: list[tuple[int, int]] | None = None,
) -> SplitMetrics:
    """Eval-mode pass over a split (or the given indices of it), in memory or read from disk (data.eval_batches).

    `options`: batch size, device, memory format and test-time augmentation (EvalOptions' defaults if None).
    `indices`: the images to evaluate (all of them by default; `eval_indices` makes a run's, limited and
    sharded); `reduce`, when given, sums tensors across processes (distributed runs),
    so that the metrics cover every sample exactly once; `progress`, when
    given, is told each batch's image count (a tqdm bar's `update`); `errors`,
    when given, collects (split index, predicted class) of the first
    MOST_ERRORS images the model gets wrong.
    With test-time augmentation, loss, top-5 and the predictions come from the log of the averaged
    probabilities, so the loss is the negative log-likelihood of the averaged softmax.
    """
    options = options or EvalOptions()
    was_training = model.training
    model.eval()
    idx = torch.arange(len(split)) if indices is None else indices
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    # closing: a stop mid-split (Ctrl-C) shuts a streamed folder's workers down now, not when its traceback is collected
    with contextlib.closing(eval_batches(split, idx, options.batch_size, options.device)) as batches:
        for batch, images in batches:
            labels = split.labels[batch].to(options.device, non_blocking=True)
            logits = _logits(model, images, pre, options)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
            k = min(5, num_classes)
            top5 += (logits.topk(k, 1).indices == labels[:, None]).any(1).sum().double().cpu()
            predicted = logits.argmax(1)
            cm += confusion_matrix(labels, predicted, num_classes)
            if errors is not None and len(errors) < MOST_ERRORS:
                miss = (predicted != labels).nonzero().flatten()[: MOST_ERRORS - len(errors)].cpu()
                errors += [(int(batch[i]), int(predicted[i])) for i in miss]
            if progress is not None:
                progress(len(batch))
    count = torch.tensor(float(len(idx)), dtype=torch.float64)
    if reduce is not None:
        loss_sum, top5, cm, count = (reduce(t) for t in (loss_sum, top5, cm, count))
    model.train(was_training)
    n = max(count.item(), 1.0)
    return SplitMetrics(loss_sum.item() / n, cm.diag().sum().item() / n, top5.item() / n, cm)


def _logits(model: nn.Module, images: Tensor, pre: Preprocess, options: EvalOptions) -> Tensor:
    """The model's float32 logits for a batch of a split's images; with TTA, the log of the views' mean softmax."""
    if options.tta != "none":
        return _tta_log_probs(model, images, pre, options)
    x = batch_transform(images, pre)
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x).logits.float()


def _tta_log_probs(model: nn.Module, images: Tensor, pre: Preprocess, options: EvalOptions) -> Tensor:
    """log(mean over the views of softmax(logits)), N x classes, accumulated one view at a time in log space
    (so memory stays that of one view)."""
    view_pre = replace(pre, resize=None)  # the views are already image_size x image_size: no second resize
    acc = None
    for view, repeat in weighted_views(images, pre.image_size, options.tta, pre.resize):
        x = batch_transform(view, view_pre)
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        log_p = model(x).logits.float().log_softmax(1)
        if repeat != 1:
            log_p = log_p + math.log(repeat)
        acc = log_p if acc is None else torch.logaddexp(acc, log_p)
    return acc - math.log(tta_view_count(options.tta))


# ------------------------------------------- a checkpoint on whole splits: the final evaluation, googlenet evaluate


def evaluate_all(
    state: dict[str, Any],
    data: Dataset,
    device: torch.device,
    splits=("train", "val", "test"),
    limit_batches=None,
    tta: str = "none",
    test_errors: list[tuple[int, int]] | None = None,
    after_split: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Eval-mode metrics of a checkpoint's (averaged) weights on whole splits (`tta`: see evaluate.tta_views);
    `test_errors` collects the test split's first misclassified images (evaluate_split's `errors`);
    `after_split` is called after each split (e.g. to stop there).

    Under torchrun every process evaluates its share of each split (as validation does, each image once)
    and the sums are added up, so every process returns the same metrics: a collective, which every
    process must call.
    """
    cfg = state.get("config") or {}  # a converted checkpoint has none
    model = accelerate(model_from_checkpoint(state)).to(device)
    channels_last = bool(cfg.get("channels_last"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pre = Preprocess.from_dict(state["preprocess"])
    batch = cfg.get("eval_batch_size", 500)
    fits = largest_batch(state["model_args"], pre.image_size, device, train=False)
    if limit_batches is None and fits is not None and batch > fits:  # the figures are the same in any batch size
        log(f"evaluating in batches of {max(fits, 1)}: the run's {batch} at {pre.image_size} px do not fit in memory")
        batch = max(fits, 1)
    options = EvalOptions(batch, device, channels_last, tta)
    mine = {s: eval_indices(len(data.split(s)), options.batch_size, limit_batches) for s in splits}
    sizes = {s: eval_count(len(data.split(s)), options.batch_size, limit_batches) for s in splits}
    out: dict[str, Any] = {}
    # A bar on a terminal; in a log, a line per split and one every half minute (all of MNIST takes minutes on 2 cores).
    with progress_bar(total=sum(len(i) for i in mine.values()), unit="img", desc="evaluating", leave=False) as bar:
        for split in splits:
            bar.set_description(f"evaluating {split}", refresh=False)
            if not on_terminal():
                log(f"evaluating {split} ({sizes[split]:,} images{'' if tta == 'none' else f', {tta}'})")
            errors = [] if split == "test" and test_errors is not None else None
            m = evaluate_split(
                model,
                data.split(split),
                pre,
                data.num_classes,
                options,
                indices=mine[split],
                reduce=dist_utils.all_reduce_sum,
                progress=bar.update,
                errors=errors,
            )
            if errors is not None:  # each process's first misses in index order; together, the split's first
                test_errors += sorted(e for part in dist_utils.all_gather_object(errors) for e in part)[:MOST_ERRORS]
            out[split] = m.to_dict()
            if after_split is not None:
                after_split()
    return out


def write_final_outputs(
    run_dir: Path, data: Dataset, device: torch.device, cfg, after_split: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Evaluate the best checkpoint on every split, then write metrics, plots, the test errors' grid and REPORT.md;
    returns the metrics.

    Under torchrun rank 0 reads best.pt (the only process sure to see its own disk) and hands it to the
    others; all evaluate their shares; rank 0 writes; then all leave together, or all fail with rank 0.
    """
    state, problem = None, None
    if dist_utils.is_main():
        try:  # on the CPU: CUDA tensors sent to the other processes would land on rank 0's GPU
            state = load_checkpoint(run_dir / "weights" / "best.pt")
        except CheckpointError as exc:
            problem = str(exc)
    state, problem = dist_utils.broadcast_object((state, problem))
    if problem:
        raise CheckpointError(problem)
    errors: list[tuple[int, int]] = []
    metrics = {
        "checkpoint": "weights/best.pt",
        "best_epoch": state["best_epoch"],
        "classes": data.classes,
        "splits": evaluate_all(
            state, data, device, limit_batches=cfg.limit_eval_batches, test_errors=errors, after_split=after_split
        ),
    }
    failed = None
    if dist_utils.is_main():
        try:
            if cfg.plots:
                plot_errors(errors, data, run_dir / "errors_test.png")
            write_metrics(run_dir, metrics)
            build_report(run_dir)
        except Exception as exc:  # raised below, once the others know
            failed = exc
    if dist_utils.any_process(failed is not None):  # also the barrier: no process leaves while rank 0 writes
        if failed is not None:
            raise failed
        raise SystemExit(1)  # rank 0 says why
    return metrics


def match_classes(data: Dataset, classes: list[str], source: str) -> Dataset:
    """`data` with its labels numbered as the checkpoint's `classes`, matched by name; a one-line error where they
    differ.

    Folders of ILSVRC 2012 synset ids (n01440764, ...) match the 1000 ImageNet class names by their sorted order.
    """
    theirs = list(data.classes)
    if theirs == classes:
        return data
    if set(theirs) <= set(classes):
        order = [classes.index(c) for c in theirs]
    elif (
        len(theirs) == len(classes) == 1000
        and theirs == sorted(theirs)
        and all(re.fullmatch(r"n\d{8}", c) for c in theirs)
    ):
        order = list(range(1000))
        print(
            "note: the class folders are ILSVRC 2012 synset ids; matched to the checkpoint's class names in sorted "
            "order"
        )
    else:
        unknown = next(c for c in theirs if c not in classes)
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise CheckpointError(
            f"{source} has a class {unknown!r} that the checkpoint does not know (its classes: {shown}): evaluate on "
            "data with the checkpoint's class names"
        )
    remap = torch.tensor(order)
    train, val, test = (dataclasses.replace(s, labels=remap[s.labels]) for s in (data.train, data.val, data.test))
    return dataclasses.replace(data, classes=list(classes), train=train, val=val, test=test)


def run_evaluate(args) -> None:
    """`googlenet evaluate CHECKPOINT --split ... [--tta MODE]`: print and save the same metrics as training."""
    path = Path(args.checkpoint)
    if args.output:
        check_output_file(args.output)  # before the work, not after minutes of evaluation
    device = select_device(args.device)
    state = load_checkpoint(path, map_location=device)
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    other = getattr(args, "dataset", None)
    dataset = other or cfg.get("dataset")
    if not dataset or not isinstance(state.get("classes"), list):
        raise CheckpointError(
            f"{path} does not record the data it was trained on: pass --dataset NAME or imagefolder:PATH"
        )
    if not other:  # the path comes from a file: say which data it is before reading any of it
        print(f"Evaluating on the run's data, {dataset}, split as in training (seed {cfg.get('seed', 0)})")

    # auto, whatever the run used: both paths evaluate the same images identically (tests/test_stream.py), and the
    # data may be another, bigger folder (--dataset) or have no run at all (a converted checkpoint)
    workers = cfg.get("workers")
    data = load_evaluation_data(
        dataset,
        preprocess_from_checkpoint(state),
        args.data_dir or cfg.get("data_dir"),
        cfg.get("val_fraction", 0.1),
        cfg.get("seed", 0),
        "auto",
        cfg.get("memory_budget"),
        default_workers() if workers is None else workers,
        run_splits=not other,
    )
    data = match_classes(data, [str(c) for c in state["classes"]], dataset)
    splits = tuple(
        s for s in (("train", "val", "test") if args.split == "all" else (args.split,)) if len(data.split(s))
    )
    if not splits:
        raise CheckpointError(
            f"{dataset} has no {args.split} split (a folder of class subfolders is all test split): use --split test"
        )
    tta = getattr(args, "tta", None) or "none"
    results = evaluate_all(state, data, device, splits, tta=tta)
    print_results(results, data.classes, tta)
    out = Path(args.output) if args.output else evaluation_file(path, args.split, getattr(args, "dataset", None), tta)
    saved = {"checkpoint": str(path), "tta": tta, "classes": data.classes, "splits": results}
    atomic_write_text(out, json.dumps(saved, indent=1) + "\n")
    print(f"\nSaved {out}")


def print_results(results: dict[str, Any], classes: list[str], tta: str) -> None:
    """`googlenet evaluate`'s tables: loss and accuracies per split, then precision, recall and F1 per class."""
    names = list(results)
    if tta == "none":
        print("Test-time augmentation: none (one view per image)\n")
    else:
        print(f"Test-time augmentation: {tta} ({tta_view_count(tta)} views per image, softmax averaged)\n")
    print(
        format_table(
            ["", *(SPLIT_TITLES[s] for s in names)],
            [
                ("Loss", *(f"{results[s]['loss']:.4f}" for s in names)),
                ("Accuracy (%)", *(f"{100 * results[s]['accuracy']:.2f}" for s in names)),
                (f"Top-{min(5, len(classes))} accuracy (%)", *(f"{100 * results[s]['top5']:.2f}" for s in names)),
            ],
            "text",
        )
    )
    print()
    headers = ["class"] + [f"{SPLIT_TITLES[s]} {k}" for s in names for k in ("P", "R", "F1")]
    keys = ("precision", "recall", "f1")
    rows = [[c] + [f"{results[s][k][i]:.4f}" for s in names for k in keys] for i, c in enumerate(classes)]
    print(format_table(headers, rows, "text"))


def evaluation_file(checkpoint: Path, split: str, dataset: str | None, tta: str) -> Path:
    """Where `googlenet evaluate` saves its metrics without --output: evaluate_SPLIT[_DATA][_TTA].json in the
    checkpoint's run directory (or here, for a checkpoint outside one). Other data (`dataset`, the --dataset
    asked for) or TTA never overwrite the plain figures of the run's own data."""
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent.parent
    label = Path(dataset.split(":", 1)[1]).name if dataset and dataset.startswith("imagefolder:") else dataset
    other = "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-")[:40] if label else ""
    name = f"evaluate_{split}{other}{'' if tta == 'none' else '_' + tta}.json"
    return (run_dir if (run_dir / "config.yaml").is_file() else Path(".")) / name
