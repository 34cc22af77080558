"""Run reports: curves, confusion matrices, metrics.json and REPORT.md.

Everything here reads the run's files (results.csv, metrics.json,
config.yaml, env.json, summary.md), so `googlenet report RUN_DIR` rebuilds
the same report without the model; nothing here runs one (the final
evaluation, evaluate.write_final_outputs, hands its metrics to `write_metrics`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")  # files only, no window: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .config import quote_value
from .data import AUGMENT_SETTINGS, Dataset, Split
from .errors import UserError
from .files import atomic_save, atomic_write_text
from .rundir import read_results, read_run_file
from .tables import format_table

__all__ = ["build_report", "plot_curves", "plot_errors", "run_report", "write_metrics"]


class ReportError(UserError):
    """Run files that cannot be read."""


SPLIT_TITLES = {"train": "Training", "val": "Validation", "test": "Testing"}
# Text properties for every string of the user's (class names) drawn by matplotlib: as written, never parsed as
# mathtext or LaTeX (a class folder named `$x^{$` made the figures, and so the whole final evaluation, fail).
PLAIN_TEXT = {"parse_math": False, "usetex": False}


def _save_figure(fig, path: Path) -> None:
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def plot_curves(run_dir: Path, cfg: dict[str, Any] | None = None, rows: list[dict[str, float]] | None = None) -> None:
    """loss.png and accuracy.png: training vs validation per epoch, like the seed's graphs, plus the validation error on
    a log scale. `rows`: results.csv's, read again if not given."""
    rows = read_results(run_dir) if rows is None else rows
    epochs = [r["epoch"] for r in rows]
    cfg = cfg or {}
    terms = ([f"+ {cfg['aux_weight']:g} x aux"] if cfg.get("aux_weight") else []) + (
        [f"smoothing {cfg['label_smoothing']:g}"] if cfg.get("label_smoothing") else []
    )
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
                ax.text(
                    j,
                    i,
                    str(cm[i][j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black",
                )
        names = [c if len(c) <= 14 else c[:13] + "\u2026" for c in classes]  # long names shortened with an ellipsis
        ax.set_xticks(
            range(n),
            names,
            rotation=45 if max(map(len, names)) > 3 else 0,
            ha="right" if max(map(len, names)) > 3 else "center",
            **PLAIN_TEXT,
        )
        ax.set_yticks(range(n), names, **PLAIN_TEXT)
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


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json: the final evaluation's figures, per split."""
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")


def plot_errors(wrong: list[tuple[int, int]], data: Dataset, path: Path) -> int:
    """errors_test.png: test images the model gets wrong (split index, predicted class), with their true and predicted
    class.

    The tiles are drawn into one axes, at most 8 a row: 40 small axes took 3-5 s to draw (a run's longest figure).
    """
    split = data.test
    if not wrong:
        path.unlink(missing_ok=True)
        return 0
    cols = min(8, len(wrong))
    rows = (len(wrong) + cols - 1) // cols
    # in image sides: a tile with its gaps, its two label lines, the title
    cell_w, cell_h, label_h, title_h = (
        1.25,
        1.5,
        0.45,
        0.35,
    )
    fig = plt.figure(figsize=(1.28 * cols * cell_w, 1.28 * (rows * cell_h + title_h)))  # 1.28 inches an image side
    ax = fig.add_axes((0, 0, 1, 1), xlim=(0, cols * cell_w), ylim=(-rows * cell_h, title_h))
    ax.axis("off")
    for k, (i, p) in enumerate(wrong):
        # a streamed split reads the file again
        image = split.images[i].cpu() if isinstance(split, Split) else split.image(i)
        row, col = divmod(k, cols)
        h, w = image.shape[1:]
        width, height = min(1, w / h), min(1, h / w)  # the longer side fills the tile's square
        x, top = col * cell_w + (cell_w - width) / 2, -row * cell_h - label_h - (1 - height) / 2
        pixels = (image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)).numpy()
        ax.imshow(
            pixels,
            cmap="gray" if image.shape[0] == 1 else None,
            extent=(x, x + width, top - height, top),
            aspect="auto",
        )
        label = f"true {data.classes[int(split.labels[i])][:10]}\npred {data.classes[p][:10]}"
        ax.text(x + width / 2, top + 0.03, label, fontsize=7, ha="center", va="bottom", **PLAIN_TEXT)
    ax.text(
        cols * cell_w / 2,
        title_h / 2,
        f"Test images the model gets wrong (the first {len(wrong)})",
        fontsize=9,
        ha="center",
        va="center",
    )
    _save_figure(fig, path)
    return len(wrong)


def final_summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The lines a training run ends with: the best checkpoint's accuracy on each split, and where everything is."""
    splits, k = metrics["splits"], min(5, len(metrics["classes"]))
    line = f"Best checkpoint (epoch {metrics['best_epoch']}) accuracy: " + ", ".join(
        f"{s} {100 * m['accuracy']:.2f}%" for s, m in splits.items()
    )
    if len(metrics["classes"]) > 5:
        line += f"; top-{k}: " + ", ".join(f"{s} {100 * m['top5']:.2f}%" for s, m in splits.items())
    return f"{line}\nResults saved to {run_dir} (report: {run_dir / 'REPORT.md'})"


def _fmt_seconds(s: float) -> str:
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


@dataclass
class RunFiles:
    """What a finished run directory holds, as REPORT.md reads it."""

    run_dir: Path
    metrics: dict[str, Any]  # metrics.json
    cfg: dict[str, Any]  # config.yaml
    env: dict[str, Any]  # env.json ({} if missing)
    rows: list[dict[str, float]]  # results.csv
    summary: str | None = None  # summary.md (None if missing)

    @property
    def splits(self) -> dict[str, Any]:
        return self.metrics["splits"]

    @property
    def names(self) -> list[str]:
        """The evaluated splits, in the order train, val, test."""
        return [s for s in SPLIT_TITLES if s in self.splits]


RECIPE_KEYS = ("dataset", "image_size", "in_channels", "batch_size", "optimizer", "lr", "schedule", "weight_decay",
               "label_smoothing", "aux_weight", "average", "seed", "preset", "epochs")  # fmt: skip


# results.csv's columns the report draws, and config.yaml's settings it prints as numbers
CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time")
NUMBER_KEYS = ("lr", "weight_decay", "label_smoothing", "aux_weight")
SPLIT_NUMBERS = ("loss", "accuracy", "top5")
PER_CLASS = ("precision", "recall", "f1", "support")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_problem(metrics: Any) -> str | None:
    """What a metrics.json gets wrong for the report (evaluate.SplitMetrics.to_dict per split), or None."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("splits"), dict):
        return "it is not a mapping with splits"
    classes = metrics.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "its classes are not a list of names"
    if not isinstance(metrics.get("checkpoint"), str) or not isinstance(metrics.get("best_epoch"), int):
        return "it has no checkpoint and best_epoch"
    n = len(classes)
    for name, m in metrics["splits"].items():
        if name not in SPLIT_TITLES:
            return f"{quote_value(name)} is not a split (train, val or test)"
        if not isinstance(m, dict) or not all(_number(m.get(k)) for k in SPLIT_NUMBERS):
            return f"its {name} split has no {', '.join(SPLIT_NUMBERS)}"
        for key in PER_CLASS:
            if not (isinstance(m.get(key), list) and len(m[key]) == n and all(map(_number, m[key]))):
                return f"its {name} {key} is not one number per class ({n})"
        for avg in ("macro", "weighted"):
            if not (isinstance(m.get(avg), dict) and all(_number(m[avg].get(k)) for k in PER_CLASS[:3])):
                return f"its {name} {avg} averages are not numbers"
        cm = m.get("confusion_matrix")
        if not (isinstance(cm, list) and len(cm) == n and all(isinstance(r, list) and len(r) == n for r in cm)):
            return f"its {name} confusion_matrix is not {n} x {n}"
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for r in cm for c in r):
            return f"its {name} confusion_matrix is not image counts"
    return None


def read_run(run_dir: Path) -> RunFiles:
    """The run's files, each read within its bound (rundir.read_run_file), or a one-line error saying what is missing
    or unreadable and what to run."""
    for name in ("results.csv", "metrics.json", "config.yaml"):
        if not (run_dir / name).exists():  # a FIFO or device exists: read_run_file refuses it by name
            if (
                name == "metrics.json" and (run_dir / "weights" / "last.pt").is_file()
            ):  # stopped before/during its final evaluation
                raise ReportError(
                    f"{run_dir} is unfinished (no metrics.json: training or its final evaluation was interrupted): "
                    f"finish it with googlenet train --resume {run_dir}"
                )
            raise FileNotFoundError(f"{run_dir / name} is missing: pass a finished run directory (runs/train/expN)")
    metrics = read_run_file(run_dir, "metrics.json")
    cfg = read_run_file(run_dir, "config.yaml")
    env = read_run_file(run_dir, "env.json") if (run_dir / "env.json").exists() else {}
    summary = read_run_file(run_dir, "summary.md") if (run_dir / "summary.md").exists() else None
    run = RunFiles(run_dir, metrics, cfg, env, read_results(run_dir), summary)
    problem = run_problem(run)
    if problem:
        raise ReportError(f"{run_dir} has unreadable run files ({problem}): rerun googlenet evaluate or train")
    return run


def run_problem(run: RunFiles) -> str | None:
    """What the run's parsed files get wrong for the report (their files were googlenet's, or another program's), or
    None."""
    problem = metrics_problem(run.metrics)
    if problem:
        return f"metrics.json does not hold what googlenet writes: {problem}"
    cfg = run.cfg
    if not (isinstance(cfg, dict) and isinstance(run.env, dict)):
        return "config.yaml or env.json does not hold what googlenet writes"
    missing = [k for k in RECIPE_KEYS if k not in cfg]
    if missing:
        return f"config.yaml has no {missing[0]}"
    minutes = cfg.get("time_limit", cfg.get("time"))  # as recipe_line reads it
    wrong = [k for k in NUMBER_KEYS if not _number(cfg[k])] + ["time_limit"] * bool(minutes and not _number(minutes))
    if wrong:
        return f"config.yaml's {wrong[0]} is {quote_value(cfg.get(wrong[0], minutes))}, not a number"
    columns = [k for k in CURVE_COLUMNS if run.rows and k not in run.rows[0]]
    if columns:
        return f"results.csv has no {columns[0]} column"
    return None


def build_report(run_dir: str | Path) -> Path:
    """(Re)write the plots, confusion matrices and REPORT.md from the run's files."""
    run = read_run(Path(run_dir))
    classes, plots = run.metrics["classes"], run.cfg.get("plots", True)
    if plots:
        plot_curves(run.run_dir, run.cfg, run.rows)
    for split, m in run.splits.items():
        write_confusion_csv(m["confusion_matrix"], classes, run.run_dir / f"confusion_{split}.csv")
        if plots:
            title = f"{SPLIT_TITLES[split]} confusion matrix"
            plot_confusion(m["confusion_matrix"], classes, title, run.run_dir / f"confusion_{split}.png")
    atomic_write_text(run.run_dir / "REPORT.md", report_text(run))
    return run.run_dir / "REPORT.md"


def report_text(run: RunFiles) -> str:
    """REPORT.md: the seed README's sections, results first."""
    return f"{report_header(run)}\n{results_section(run)}{model_summary_section(run)}"


def report_header(run: RunFiles) -> str:
    """The title, a warning for a partial run, and where the run and its code are."""
    cfg, env = run.cfg, run.env
    limits = [f"--{k.replace('_', '-')} {cfg[k]}" for k in ("limit_train_batches", "limit_eval_batches") if cfg.get(k)]
    partial = (
        f"> **Partial run** ({', '.join(limits)}): trained and evaluated on part of the data; "
        "not a result to compare.\n\n"
    )
    commit = env.get("git_commit") or "unknown"
    where = f"Run directory `{run.run_dir.name}`; command: `{env.get('command', '?')}`; git commit `{commit}`."
    return f"# GoogLeNet on {cfg['dataset']}\n\n{partial if limits else ''}{where}\n"


def results_section(run: RunFiles) -> str:
    """## Results: the recipe, the hardware, the curves, the final metrics' tables, the confusion matrices and the
    test errors."""
    errors = (
        "\nTest images the model gets wrong, with their true and predicted classes:\n\n![Test "
        "errors](errors_test.png)\n"
        if (run.run_dir / "errors_test.png").is_file()
        else ""
    )
    averaged = " of the averaged weights" if run.cfg["average"] != "none" else ""
    plots = run.cfg.get("plots", True)
    matrices = ", ".join(
        f"[{SPLIT_TITLES[s].lower()}](confusion_{s}.png) ([csv](confusion_{s}.csv))"
        if plots
        else f"[{SPLIT_TITLES[s].lower()}](confusion_{s}.csv) (csv)"
        for s in run.names
    )
    curves = (
        """|                     Loss                      |                       Accuracy                        |
| :-------------------------------------------: | :---------------------------------------------------: |
| ![Loss per epoch](loss.png) | ![Accuracy per epoch](accuracy.png) |"""
        if plots
        else "(Trained with --no-plots: the per-epoch figures are in results.csv.)"
    )
    return f"""## Results

{recipe_line(run)}{network_sentence(run)}

{hardware_line(run)}

{curves}

The curves are per epoch: the training figures are running averages over the epoch
with dropout on and include the weighted auxiliary losses (as the seed's); the
validation figures are eval-mode passes{averaged}.

Final metrics of `{run.metrics["checkpoint"]}` (epoch {run.metrics["best_epoch"]}, best validation accuracy),
computed in eval mode over each whole split (the training figures here are not
the running averages above):

{summary_table(run)}

{per_class_table(run)}

Confusion matrices (rows = true class): {matrices}.
{errors}
"""


def model_summary_section(run: RunFiles) -> str:
    """## Model summary: the run's summary.md (the seed README's layer table)."""
    summary = "(summary.md missing)\n" if run.summary is None else run.summary
    return f"""## Model summary

{summary}"""


def summary_table(run: RunFiles) -> str:
    """Loss, accuracy, top-k and image count per split."""
    splits, names, k = run.splits, run.names, min(5, len(run.metrics["classes"]))
    return format_table(
        ["", *(SPLIT_TITLES[s] for s in names)],
        [
            ("Loss", *(f"{splits[s]['loss']:.4f}" for s in names)),
            ("Accuracy (%)", *(f"{100 * splits[s]['accuracy']:.2f}" for s in names)),
            (f"Top-{k} accuracy (%)", *(f"{100 * splits[s]['top5']:.2f}" for s in names)),
            ("Images", *(f"{sum(splits[s]['support']):,}" for s in names)),
        ],
    )


def per_class_table(run: RunFiles) -> str:
    """Precision, recall and F1 per class and split, then their macro and weighted averages."""
    splits, names, keys = run.splits, run.names, ("precision", "recall", "f1")
    headers = ["Class"]
    for metric in ("Precision", "Recall", "F1 Score"):
        headers += [f"{SPLIT_TITLES[s]} {metric}" for s in names]
    rows = [
        [name] + [f"{splits[s][key][i]:.4f}" for key in keys for s in names]
        for i, name in enumerate(run.metrics["classes"])
    ]
    for avg in ("macro", "weighted"):
        rows.append([f"*{avg} avg*"] + [f"{splits[s][avg][key]:.4f}" for key in keys for s in names])
    return format_table(headers, rows)


def recipe_line(run: RunFiles) -> str:
    """What was trained, how long, on what, with which recipe and augmentation."""
    cfg = run.cfg
    aug_keys = AUGMENT_SETTINGS + (("elastic_sigma",) if cfg.get("elastic") else ())
    aug = "off"
    if (
        cfg.get("augment") and cfg.get("data_loading") == "stream"
    ):  # the paper's crops (data.transforms.train_transform)
        aug = (
            f"on (streamed from disk: random-resized crops of 8-100% of the area, hflip {cfg.get('hflip')}, "
            f"color_jitter {cfg.get('color_jitter', 0)})"
        )
    elif cfg.get("augment"):
        aug = (
            "on (dataset defaults unless set: "
            + ", ".join(f"{k} {cfg[k]}" for k in aug_keys if cfg.get(k) is not None)
            + ")"
        )
    minutes = cfg.get("time_limit", cfg.get("time"))  # "time": its name in runs before (config.OLD_SETTING_NAMES)
    budget = f", time budget {minutes:g} min" if minutes else ""
    return (
        f"Trained for {len(run.rows)} epoch(s) (of {cfg['epochs']}{budget}) on `{cfg['dataset']}` at "
        f"{cfg['image_size']}x{cfg['image_size']} px, {cfg['in_channels']} input channel(s), batch size "
        f"{cfg['batch_size']}, "
        f"{cfg['optimizer']} with peak learning rate {cfg['lr']:g} and a {cfg['schedule']} schedule, weight decay "
        f"{cfg['weight_decay']:g}, label smoothing {cfg['label_smoothing']:g}, auxiliary loss weight "
        f"{cfg['aux_weight']:g}, "
        f"weight averaging {cfg['average']}, augmentation {aug}, seed {cfg['seed']} (preset `{cfg['preset']}`)."
    )


def network_sentence(run: RunFiles) -> str:
    """The sentence after the recipe: the network's parameters, those --freeze kept fixed, and the file its --weights
    came from (env.json; runs from before these were recorded have none)."""
    counts, weights = run.env.get("parameters"), run.env.get("weights")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in ("total", "trainable")):
        return ""
    total, trainable = counts["total"], counts["trainable"]
    trained = (
        f"all {total:,} parameters trained"
        if trainable == total
        else f"{trainable:,} of its {total:,} parameters trained, {total - trainable:,} frozen (--freeze "
        f"{run.cfg.get('freeze')})"
    )
    start = f"from the {run.cfg.get('init', '?')} initialisation"
    if isinstance(weights, dict) and isinstance(weights.get("file"), str):
        start = f"from the weights of `{Path(weights['file']).name}` (sha1 {weights.get('sha1', '?')})"
    return f" The network: {trained}, {start}."


def hardware_line(run: RunFiles) -> str:
    """Where it ran, in which precision (a resume on another processor may have changed it) and how long."""
    env = run.env
    resumed = env.get("resumed") if isinstance(env.get("resumed"), list) else []
    ran = [e["precision"] for e in [env, *resumed] if isinstance(e, dict) and isinstance(e.get("precision"), str)]
    precisions = list(dict.fromkeys(ran))
    note = ""
    if any("bf16" in p or "fp16" in p for p in precisions):  # docs/usage.md#precision-and-reproducibility
        note = "Autocast changes the last digits of every figure against an fp32 run (`--amp off` trains in fp32). "
    return (
        f"Hardware: {env.get('device_name', '?')} ({env.get('device', '?')}, {env.get('torch_threads', '?')} threads, "
        f"{env.get('world_size', 1)} process(es)); PyTorch {env.get('torch', '?')}. "
        + (f"Precision: {', then '.join(precisions)}. " if precisions else "")
        + note
        + f"Training time {_fmt_seconds(sum(r['epoch_time'] for r in run.rows))} over {len(run.rows)} epoch(s) "
        "(training and per-epoch validation)."
    )


def run_report(args) -> None:
    """`googlenet report RUN_DIR`: rebuild the figures and REPORT.md of a finished run."""
    print(build_report(args.run_dir))
