"""The run directory: its name, config.yaml, env.json, summary.md and results.csv.

    runs/train/exp/
      config.yaml    the resolved TrainConfig (rewritten when --time-limit replans the epochs)
      env.json       versions, hardware, precision, command and git commit (each resume adds its own)
      summary.md     the layer-by-layer model summary
      results.csv    one row per epoch (RESULTS_COLUMNS)
      weights/       last.pt (resumes) and best.pt (best validation accuracy)

Only rank 0 writes, always through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from . import distributed as dist_utils
from .config import ConfigError, TrainConfig, run_name_problem
from .files import atomic_write_text
from .runtime import cpu_name, resolve_amp

__all__ = [
    "RESULTS_COLUMNS",
    "command_line",
    "log_tensorboard",
    "next_run_dir",
    "open_tensorboard",
    "read_results",
    "results_row",
    "start_run_dir",
    "write_config",
    "write_results",
]

RESULTS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "epoch_time"]


def results_row(epoch: int, train_loss: float, train_acc: float, val: Any, lr: float, seconds: float) -> dict[str, Any]:
    """One epoch's row of results.csv (RESULTS_COLUMNS): the training running means, `val`'s SplitMetrics,
    the learning rate at the epoch's end and its wall time. Rounded as written, so a resume's rows read
    back from last.pt are the file's."""
    return {
        "epoch": epoch,
        "train_loss": round(train_loss, 6),
        "train_acc": round(train_acc, 6),
        "val_loss": round(val.loss, 6),
        "val_acc": round(val.accuracy, 6),
        "val_top5": round(val.top5, 6),
        "lr": f"{lr:.6g}",
        "epoch_time": round(seconds, 2),
    }


def read_results(run_dir: Path) -> list[dict[str, float]]:
    """results.csv's rows, every value a number."""
    with open(run_dir / "results.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def next_run_dir(cfg: TrainConfig) -> Path:
    """runs/train/exp, exp2, exp3 ... for the default name; an explicit name must be new or --exist-ok.

    The run directory is always a direct child of --project: a name is one folder name (config.run_name_problem).
    """
    problem = run_name_problem(cfg.name)
    if problem:
        raise ConfigError(problem)
    base = Path(cfg.project)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"--project {base} is a file, not a folder: choose another --project")
    path = base / cfg.name
    if cfg.exist_ok:
        return path
    if cfg.name != TrainConfig.name:
        if path.exists():
            raise ConfigError(
                f"run directory {path} already exists: choose another --name or pass --exist-ok to reuse it"
            )
        return path
    n = 1
    while path.exists():
        n += 1
        path = base / f"{cfg.name}{n}"
    return path


def start_run_dir(run_dir: Path, cfg: TrainConfig, device: torch.device, resumed: bool, summary: str) -> None:
    """Create the run directory (or bring a resumed one up to date) before the first epoch."""
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    atomic_write_text(run_dir / "env.json", json.dumps(run_environment(run_dir, cfg, device, resumed), indent=2) + "\n")
    atomic_write_text(run_dir / "summary.md", summary)


def open_tensorboard(run_dir: Path, cfg: TrainConfig):
    """--tensorboard: a SummaryWriter on RUN/tensorboard (None without the option), or a one-line error without the
    package."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'googlenet[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def log_tensorboard(writer, row: dict[str, Any]) -> None:
    """One results.csv row as TensorBoard scalars: loss/train, loss/val, accuracy/train, ... at step = epoch."""
    names = {
        "train_loss": "loss/train",
        "val_loss": "loss/val",
        "train_acc": "accuracy/train",
        "val_acc": "accuracy/val",
        "val_top5": "top5/val",
        "lr": "lr",
        "epoch_time": "epoch_time_s",
    }
    for key, tag in names.items():
        writer.add_scalar(tag, float(row[key]), int(row["epoch"]))
    writer.flush()


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULTS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user types it, `googlenet train ...` (also for `python -m googlenet`), never a path of this
    machine."""
    argv = sys.argv if argv is None else argv
    name = os.path.basename(argv[0]) if argv else "googlenet"
    if name.startswith("googlenet") or name == "__main__.py":
        # the entry point or python -m googlenet; a script of the user's (googlenet.fit) keeps its name, no path
        name = "googlenet"
    return " ".join([name, *map(shlex.quote, argv[1:])])


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "precision": resolve_amp(cfg.amp, device)[1],  # what --amp ran as here, and why (auto depends on the processor)
        "world_size": dist_utils.world_size(),
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "command": command_line(),
    }


def run_environment(run_dir: Path, cfg: TrainConfig, device: torch.device, resumed: bool) -> dict[str, Any]:
    """This process's environment; on resume, the run's first environment with this one added under "resumed"."""
    env = environment(cfg, device)
    try:
        first = json.loads((run_dir / "env.json").read_text()) if resumed else None
    except (OSError, ValueError):
        first = None  # missing or unreadable: this environment is all there is
    if not isinstance(first, dict):
        return env
    earlier = first.get("resumed") if isinstance(first.get("resumed"), list) else []
    return {**first, "resumed": [*earlier, env]}
