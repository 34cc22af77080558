"""Run reports: curves, confusion matrices, metrics.json and REPORT.md.

Everything here reads the run's files (results.csv, metrics.json,
config.yaml, env.json, summary.md), so `googlenet report RUN_DIR` rebuilds
the same report without the model. `write_final_outputs` is the one step that
runs the model: it evaluates the best weights on every split.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .data import Dataset, Preprocess, Split, default_workers, load_evaluation_data
from .errors import UserError
from .evaluate import MOST_ERRORS, evaluate_split
from .files import atomic_save, atomic_write_text, check_output_file
from .kernels import accelerate
from .runtime import log
from .tables import format_table

__all__ = ["build_report", "evaluate_all", "plot_curves", "write_final_outputs"]


class ReportError(UserError):
    """Run files that cannot be read."""


SPLIT_TITLES = {"train": "Training", "val": "Validation", "test": "Testing"}


def read_results(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "results.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(run_dir: Path, cfg: dict[str, Any] | None = None) -> None:
    """loss.png and accuracy.png: training vs validation per epoch, like the seed's graphs, plus the validation error on a log scale."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    rows = read_results(run_dir)
    epochs = [r["epoch"] for r in rows]
    cfg = cfg or {}
    terms = ([f"+ {cfg['aux_weight']:g} x aux"] if cfg.get("aux_weight") else []) + ([f"smoothing {cfg['label_smoothing']:g}"] if cfg.get("label_smoothing") else [])
    train_loss = "Training: running mean" + (f" ({', '.join(terms)})" if terms else "")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label=train_loss)
    ax.plot(epochs, [r["val_loss"] for r in rows], "o-", label="Validation: main head, plain cross-entropy")
    ax.set(xlabel="Epoch", ylabel="Loss", title="Loss per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, run_dir / "loss.png")

    fig, (ax, err) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(epochs, [r["train_acc"] for r in rows], "o-", label="Training (running mean, dropout on)")
    ax.plot(epochs, [r["val_acc"] for r in rows], "o-", label="Validation")
    ax.set(xlabel="Epoch", ylabel="Accuracy", title="Accuracy per epoch")
    err.plot(epochs, [max(1 - r["val_acc"], 1e-6) for r in rows], "o-", color="C1")
    err.set_yscale("log")
    err.set(xlabel="Epoch", ylabel="Validation error (log scale)", title="Validation error per epoch")
    for a in (ax, err):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3, which="both")
    ax.legend()
    _save_figure(fig, run_dir / "accuracy.png")


def plot_confusion(cm: list[list[int]], classes: list[str], title: str, path: Path) -> None:
    plt = _pyplot()
    n = len(classes)
    side = min(0.5 * n, 30)  # inches: 0.5 a class, at most 30 (1000 ImageNet classes would need a 12 GB canvas)
    fig, ax = plt.subplots(figsize=(max(4, side + 2), max(4, side + 1.5)))
    t = torch.tensor(cm, dtype=torch.float64)
    share = (t / t.sum(1, keepdim=True).clamp(min=1)).numpy()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (row-normalised)")
    if n <= 20:
        for i in range(n):
            for j in range(n):  # white on dark cells, black on light ones: every count stays legible
                ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
        names = [c if len(c) <= 14 else c[:13] + "\u2026" for c in classes]  # long names shortened with an ellipsis
        ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right" if max(map(len, names)) > 3 else "center")
        ax.set_yticks(range(n), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(f"{title}\n(colours: row-normalised; numbers: image counts)")
    _save_figure(fig, path)


def write_confusion_csv(cm: list[list[int]], classes: list[str], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, cm):
        writer.writerow([name, *row])
    atomic_write_text(path, buf.getvalue())


def evaluate_all(
    state: dict[str, Any], data: Dataset, device: torch.device, splits=("train", "val", "test"), limit_batches=None, tta: str = "none",
    test_errors: list[tuple[int, int]] | None = None, after_split: Callable[[], None] | None = None,
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
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    from tqdm import tqdm

    pre = Preprocess.from_dict(state["preprocess"])
    batch = cfg.get("eval_batch_size", 500)
    sizes = {s: len(data.split(s)) if limit_batches is None else min(len(data.split(s)), limit_batches * batch) for s in splits}
    shards = {s: dist_utils.shard(n) for s, n in sizes.items()}  # the same images whatever the process count: limit, then shard
    mine = sum(n if shards[s] is None else len(shards[s]) for s, n in sizes.items())
    out: dict[str, Any] = {}
    # A bar on a terminal; one line per split in a log (the whole of MNIST takes minutes on 2 cores).
    quiet = not (sys.stderr.isatty() and dist_utils.is_main())
    with tqdm(total=mine, unit="img", desc="evaluating", leave=False, disable=quiet) as bar:
        for split in splits:
            if not bar.disable:
                bar.set_description(f"evaluating {split}")
            else:
                log(f"evaluating {split} ({sizes[split]:,} images{'' if tta == 'none' else f', {tta}'})")
            errors = [] if split == "test" and test_errors is not None else None
            m = evaluate_split(
                model, data.split(split), pre, data.num_classes, batch, device, limit_batches if shards[split] is None else None,
                bool(cfg.get("channels_last")), shards[split], dist_utils.all_reduce_sum, tta=tta, progress=bar.update, errors=errors,
            )
            if errors is not None:  # each process's first misses in index order; together, the split's first
                test_errors += sorted(e for part in dist_utils.all_gather_object(errors) for e in part)[:MOST_ERRORS]
            out[split] = m.to_dict()
            if after_split is not None:
                after_split()
    return out


def write_final_outputs(run_dir: Path, data: Dataset, device: torch.device, cfg, after_split: Callable[[], None] | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint on every split, then write metrics, plots, the test errors' grid and REPORT.md; returns the metrics.

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
        "splits": evaluate_all(state, data, device, limit_batches=cfg.limit_eval_batches, test_errors=errors, after_split=after_split),
    }
    failed = None
    if dist_utils.is_main():
        try:
            plot_errors(errors, data, run_dir / "errors_test.png")
            atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
            build_report(run_dir)
        except Exception as exc:  # raised below, once the others know
            failed = exc
    if dist_utils.any_process(failed is not None):  # also the barrier: no process leaves while rank 0 writes
        if failed is not None:
            raise failed
        raise SystemExit(1)  # rank 0 says why
    return metrics


def plot_errors(wrong: list[tuple[int, int]], data: Dataset, path: Path) -> int:
    """errors_test.png: test images the model gets wrong (split index, predicted class), with their true and predicted class.

    The tiles are drawn into one axes, at most 8 a row: 40 small axes took 3-5 s to draw (a run's longest figure).
    """
    split = data.test
    if not wrong:
        path.unlink(missing_ok=True)
        return 0
    plt = _pyplot()
    cols = min(8, len(wrong))
    rows = (len(wrong) + cols - 1) // cols
    cell_w, cell_h, label_h, title_h = 1.25, 1.5, 0.45, 0.35  # in image sides: a tile with its gaps, its two label lines, the title
    fig = plt.figure(figsize=(1.28 * cols * cell_w, 1.28 * (rows * cell_h + title_h)))  # 1.28 inches an image side
    ax = fig.add_axes((0, 0, 1, 1), xlim=(0, cols * cell_w), ylim=(-rows * cell_h, title_h))
    ax.axis("off")
    for k, (i, p) in enumerate(wrong):
        image = split.images[i].cpu() if isinstance(split, Split) else split.image(i)  # a streamed split reads the file again
        row, col = divmod(k, cols)
        h, w = image.shape[1:]
        width, height = min(1, w / h), min(1, h / w)  # the longer side fills the tile's square
        x, top = col * cell_w + (cell_w - width) / 2, -row * cell_h - label_h - (1 - height) / 2
        pixels = (image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)).numpy()
        ax.imshow(pixels, cmap="gray" if image.shape[0] == 1 else None, extent=(x, x + width, top - height, top), aspect="auto")
        label = f"true {data.classes[int(split.labels[i])][:10]}\npred {data.classes[p][:10]}"
        ax.text(x + width / 2, top + 0.03, label, fontsize=7, ha="center", va="bottom")
    ax.text(cols * cell_w / 2, title_h / 2, f"Test images the model gets wrong (the first {len(wrong)})", fontsize=9, ha="center", va="center")
    _save_figure(fig, path)
    return len(wrong)


def final_summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The lines a training run ends with: the best checkpoint's accuracy on each split, and where everything is."""
    splits, k = metrics["splits"], min(5, len(metrics["classes"]))
    line = f"Best checkpoint (epoch {metrics['best_epoch']}) accuracy: " + ", ".join(f"{s} {100 * m['accuracy']:.2f}%" for s, m in splits.items())
    if len(metrics["classes"]) > 5:
        line += f"; top-{k}: " + ", ".join(f"{s} {100 * m['top5']:.2f}%" for s, m in splits.items())
    return f"{line}\nResults saved to {run_dir} (report: {run_dir / 'REPORT.md'})"


def _fmt_seconds(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def build_report(run_dir: str | Path) -> Path:
    """(Re)write the plots, confusion matrices and REPORT.md from the run's files."""
    run_dir = Path(run_dir)
    for name in ("results.csv", "metrics.json", "config.yaml"):
        if not (run_dir / name).is_file():
            if name == "metrics.json" and (run_dir / "weights" / "last.pt").is_file():  # stopped before or during its final evaluation
                raise ReportError(f"{run_dir} is unfinished (no metrics.json: training or its final evaluation was interrupted): finish it with googlenet train --resume {run_dir}")
            raise FileNotFoundError(f"{run_dir / name} is missing: pass a finished run directory (runs/train/expN)")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        rows = read_results(run_dir)
        classes, splits = metrics["classes"], metrics["splits"]
        env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
        if not (isinstance(cfg, dict) and isinstance(env, dict) and isinstance(splits, dict) and set(splits) <= set(SPLIT_TITLES)):
            raise TypeError("config.yaml, env.json or metrics.json does not hold what googlenet writes")
        missing = [k for k in ("dataset", "image_size", "in_channels", "batch_size", "optimizer", "lr", "schedule", "weight_decay",
                               "label_smoothing", "aux_weight", "average", "seed", "preset", "epochs") if k not in cfg]  # fmt: skip
        if missing:
            raise KeyError(f"config.yaml has no {missing[0]}")
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ReportError(f"{run_dir} has unreadable run files ({type(exc).__name__}: {exc}): rerun googlenet evaluate or train") from None

    plot_curves(run_dir, cfg)
    for split, m in splits.items():
        write_confusion_csv(m["confusion_matrix"], classes, run_dir / f"confusion_{split}.csv")
        plot_confusion(m["confusion_matrix"], classes, f"{SPLIT_TITLES[split]} confusion matrix", run_dir / f"confusion_{split}.png")

    names = [s for s in ("train", "val", "test") if s in splits]
    titles = [SPLIT_TITLES[s] for s in names]
    summary_table = format_table(
        ["", *titles],
        [
            ("Loss", *(f"{splits[s]['loss']:.4f}" for s in names)),
            ("Accuracy (%)", *(f"{100 * splits[s]['accuracy']:.2f}" for s in names)),
            (f"Top-{min(5, len(classes))} accuracy (%)", *(f"{100 * splits[s]['top5']:.2f}" for s in names)),
            ("Images", *(f"{sum(splits[s]['support']):,}" for s in names)),
        ],
    )
    per_class_headers = ["Class"]
    for metric in ("Precision", "Recall", "F1 Score"):
        per_class_headers += [f"{t} {metric}" for t in titles]
    per_class_rows = []
    for i, name in enumerate(classes):
        row = [name]
        for key in ("precision", "recall", "f1"):
            row += [f"{splits[s][key][i]:.4f}" for s in names]
        per_class_rows.append(row)
    for avg in ("macro", "weighted"):
        row = [f"*{avg} avg*"]
        for key in ("precision", "recall", "f1"):
            row += [f"{splits[s][avg][key]:.4f}" for s in names]
        per_class_rows.append(row)
    per_class = format_table(per_class_headers, per_class_rows)

    total_time = sum(r["epoch_time"] for r in rows)
    aug_keys = ("rotate", "translate", "scale", "hflip", "crop_padding", "elastic") + (("elastic_sigma",) if cfg.get("elastic") else ())
    aug = "off" if not cfg.get("augment") else "on (dataset defaults unless set: " + ", ".join(
        f"{k} {cfg[k]}" for k in aug_keys if cfg.get(k) is not None
    ) + ")"
    if cfg.get("augment") and cfg.get("data_loading") == "stream":  # streamed from disk: the paper's crops (stream.train_transform)
        aug = f"on (streamed from disk: random-resized crops of 8-100% of the area, hflip {cfg.get('hflip')}, color_jitter {cfg.get('color_jitter', 0)})"
    budget = f", time budget {cfg['time']:g} min" if cfg.get("time") else ""
    recipe = (
        f"Trained for {len(rows)} epoch(s) (of {cfg['epochs']}{budget}) on `{cfg['dataset']}` at {cfg['image_size']}x{cfg['image_size']} px, "
        f"{cfg['in_channels']} input channel(s), batch size {cfg['batch_size']}, {cfg['optimizer']} with peak learning rate "
        f"{cfg['lr']:g} and a {cfg['schedule']} schedule, weight decay {cfg['weight_decay']:g}, label smoothing "
        f"{cfg['label_smoothing']:g}, auxiliary loss weight {cfg['aux_weight']:g}, weight averaging {cfg['average']}, "
        f"augmentation {aug}, seed {cfg['seed']} (preset `{cfg['preset']}`)."
    )
    # --amp auto depends on the processor: a run resumed elsewhere may have changed precision.
    resumed = env.get("resumed") if isinstance(env.get("resumed"), list) else []
    precisions = list(dict.fromkeys(e["precision"] for e in [env, *resumed] if isinstance(e, dict) and isinstance(e.get("precision"), str)))
    hardware = (
        f"Hardware: {env.get('device_name', '?')} ({env.get('device', '?')}, {env.get('torch_threads', '?')} threads, "
        f"{env.get('world_size', 1)} process(es)); PyTorch {env.get('torch', '?')}. "
        + (f"Precision: {', then '.join(precisions)}. " if precisions else "")
        + f"Training time {_fmt_seconds(total_time)} over {len(rows)} epoch(s) (training and per-epoch validation)."
    )
    summary = (run_dir / "summary.md").read_text() if (run_dir / "summary.md").is_file() else "(summary.md missing)\n"
    limits = [f"--{k.replace('_', '-')} {cfg[k]}" for k in ("limit_train_batches", "limit_eval_batches") if cfg.get(k)]
    partial = (
        f"> **Partial run** ({', '.join(limits)}): trained and evaluated on part of the data; not a result to compare.\n\n" if limits else ""
    )
    errors = (
        "\nTest images the model gets wrong, with their true and predicted classes:\n\n![Test errors](errors_test.png)\n"
        if (run_dir / "errors_test.png").is_file() else ""
    )
    text = f"""# GoogLeNet on {cfg['dataset']}

{partial}Run directory `{run_dir.name}`; command: `{env.get('command', '?')}`; git commit `{env.get('git_commit') or 'unknown'}`.

## Results

{recipe}

{hardware}

|                     Loss                      |                       Accuracy                        |
| :-------------------------------------------: | :---------------------------------------------------: |
| ![Loss per epoch](loss.png) | ![Accuracy per epoch](accuracy.png) |

The curves are per epoch: the training figures are running averages over the epoch
with dropout on and include the weighted auxiliary losses (as the seed's); the
validation figures are eval-mode passes{' of the averaged weights' if cfg['average'] != 'none' else ''}.

Final metrics of `{metrics['checkpoint']}` (epoch {metrics['best_epoch']}, best validation accuracy),
computed in eval mode over each whole split (the training figures here are not
the running averages above):

{summary_table}

{per_class}

Confusion matrices (rows = true class): {', '.join(f'[{SPLIT_TITLES[s].lower()}](confusion_{s}.png) ([csv](confusion_{s}.csv))' for s in names)}.
{errors}
## Model summary

{summary}"""
    atomic_write_text(run_dir / "REPORT.md", text)
    return run_dir / "REPORT.md"


def match_classes(data: Dataset, classes: list[str], source: str) -> Dataset:
    """`data` with its labels numbered as the checkpoint's `classes`, matched by name; a one-line error where they differ.

    Folders of ILSVRC 2012 synset ids (n01440764, ...) match the 1000 ImageNet class names by their sorted order.
    """
    theirs = list(data.classes)
    if theirs == classes:
        return data
    if set(theirs) <= set(classes):
        order = [classes.index(c) for c in theirs]
    elif len(theirs) == len(classes) == 1000 and theirs == sorted(theirs) and all(re.fullmatch(r"n\d{8}", c) for c in theirs):
        order = list(range(1000))
        print("note: the class folders are ILSVRC 2012 synset ids; matched to the checkpoint's class names in sorted order")
    else:
        unknown = next(c for c in theirs if c not in classes)
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise CheckpointError(f"{source} has a class {unknown!r} that the checkpoint does not know (its classes: {shown}): evaluate on data with the checkpoint's class names")
    remap = torch.tensor(order)
    train, val, test = (dataclasses.replace(s, labels=remap[s.labels]) for s in (data.train, data.val, data.test))
    return dataclasses.replace(data, classes=list(classes), train=train, val=val, test=test)


def run_evaluate(args) -> None:
    """`googlenet evaluate CHECKPOINT --split ... [--tta MODE]`: print and save the same metrics as training."""
    from .checkpoint import preprocess_of
    from .evaluate import tta_view_count
    from .runtime import select_device

    path = Path(args.checkpoint)
    if args.output:
        check_output_file(args.output)  # before the work, not after minutes of evaluation
    device = select_device(args.device)
    state = load_checkpoint(path, map_location=device)
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    dataset = getattr(args, "dataset", None) or cfg.get("dataset")
    if not dataset or not isinstance(state.get("classes"), list):
        raise CheckpointError(f"{path} does not record the data it was trained on: pass --dataset NAME or imagefolder:PATH")

    # auto, whatever the run used: both paths evaluate the same images identically (tests/test_stream.py), and the
    # data may be another, bigger folder (--dataset) or have no run at all (a converted checkpoint)
    workers = cfg.get("workers")
    data = load_evaluation_data(
        dataset, preprocess_of(state), args.data_dir or cfg.get("data_dir"), cfg.get("val_fraction", 0.1), cfg.get("seed", 0),
        "auto", cfg.get("memory_budget"), default_workers() if workers is None else workers,
    )
    data = match_classes(data, [str(c) for c in state["classes"]], dataset)
    splits = tuple(s for s in (("train", "val", "test") if args.split == "all" else (args.split,)) if len(data.split(s)))
    if not splits:
        raise CheckpointError(f"{dataset} has no {args.split} split (a folder of class subfolders is all test split): use --split test")
    tta = getattr(args, "tta", None) or "none"
    results = evaluate_all(state, data, device, splits, tta=tta)
    names = list(results)
    if tta == "none":
        print("Test-time augmentation: none (one view per image)\n")
    else:
        print(f"Test-time augmentation: {tta} ({tta_view_count(tta)} views per image, softmax averaged)\n")
    print(format_table(
        ["", *(SPLIT_TITLES[s] for s in names)],
        [
            ("Loss", *(f"{results[s]['loss']:.4f}" for s in names)),
            ("Accuracy (%)", *(f"{100 * results[s]['accuracy']:.2f}" for s in names)),
            (f"Top-{min(5, len(data.classes))} accuracy (%)", *(f"{100 * results[s]['top5']:.2f}" for s in names)),
        ],
        "text",
    ))
    print()
    headers = ["class"] + [f"{SPLIT_TITLES[s]} {k}" for s in names for k in ("P", "R", "F1")]
    rows = [[c] + [f"{results[s][k][i]:.4f}" for s in names for k in ("precision", "recall", "f1")] for i, c in enumerate(data.classes)]
    print(format_table(headers, rows, "text"))
    run_dir = path if path.is_dir() else path.parent.parent
    # Other data or TTA never overwrite the plain figures of the run's own data.
    asked = getattr(args, "dataset", None)
    label = Path(asked.split(":", 1)[1]).name if asked and asked.startswith("imagefolder:") else asked
    other = "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-")[:40] if label else ""
    name = f"evaluate_{args.split}{other}{'' if tta == 'none' else '_' + tta}.json"
    out = Path(args.output) if args.output else (run_dir if (run_dir / "config.yaml").is_file() else Path(".")) / name
    atomic_write_text(out, json.dumps({"checkpoint": str(path), "tta": tta, "classes": data.classes, "splits": results}, indent=1) + "\n")
    print(f"\nSaved {out}")
