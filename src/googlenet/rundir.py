"""The run directory: its name, config.yaml, env.json, summary.md and results.csv, written and read back.

    runs/train/exp/
      config.yaml    the resolved TrainConfig (rewritten when --time-limit replans the epochs)
      env.json       versions, hardware, precision, command and git commit (each resume adds its own)
      summary.md     the layer-by-layer model summary
      results.csv    one row per epoch (RESULTS_COLUMNS)
      weights/       last.pt (resumes) and best.pt (best validation accuracy)

Only rank 0 writes, always through a temporary file and a rename, and only inside the run directory: a
weights/ or tensorboard/ that is a link out of it is refused (`check_run_folders`). Every tool reads the
run's files through `read_run_file`, bounded per kind of file (RUN_FILE_BYTES).
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
from .errors import UserError
from .files import YAMLSizeError, atomic_write_text, read_bounded, safe_load_bounded
from .runtime import cpu_name, resolve_amp

__all__ = [
    "RESULTS_COLUMNS",
    "RUN_FILE_BYTES",
    "RUN_FOLDERS",
    "RunFileError",
    "check_run_folders",
    "claim_run_dir",
    "command_line",
    "log_tensorboard",
    "read_results",
    "read_run_file",
    "results_row",
    "start_run_dir",
    "tensorboard_writer",
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


# The most bytes each run file may hold, far above what googlenet writes: a wrong file (gigabytes, a link to
# /dev/zero, a FIFO) is refused before it is read instead of filling the memory or hanging the command.
RUN_FILE_BYTES = {
    "config.yaml": 64 << 10,  # the resolved TrainConfig: about 1.5 kB
    "env.json": 4 << 20,  # about 700 bytes a process, and each resume adds its own
    "metrics.json": 128 << 20,  # per-class tables and confusion matrices: 23 MB for 1000 classes and three splits
    "results.csv": 16 << 20,  # a row of about 100 bytes per epoch: 10 MB for config.MAX_EPOCHS
    "summary.md": 1 << 20,  # the layer table: about 6 kB
}
RUN_FILE_FIX = "is it the right run directory? Put back the file googlenet wrote"
RUN_FOLDERS = ("weights", "tensorboard")  # the folders googlenet writes into inside a run directory


class RunFileError(UserError):
    """A run file or folder that is not what googlenet writes there; the message names it and the fix."""


def read_run_file(run_dir: Path, name: str) -> Any:
    """Run file `name` (a key of RUN_FILE_BYTES) of `run_dir`, read within its bound and parsed: config.yaml (with no
    YAML alias: googlenet writes none) and the .json files as data, results.csv as rows of numbers, summary.md as text.
    A file that is not a regular file, too big, or not UTF-8 YAML, JSON or CSV is a one-line RunFileError.
    """
    path = run_dir / name
    kind = f"a run's {name}"
    raw = read_bounded(path, RUN_FILE_BYTES[name], kind, RUN_FILE_FIX, error=RunFileError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is not UTF-8 text (byte {exc.start + 1}): {RUN_FILE_FIX}") from None
    try:
        if name.endswith(".yaml"):
            return safe_load_bounded(text, aliases=False)
        if name.endswith(".json"):
            return json.loads(text)
        if name.endswith(".csv"):
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text, newline=""))]
        return text
    except YAMLSizeError as exc:  # an alias bomb: report wrote a 1 GB REPORT.md from 300 bytes
        raise RunFileError(f"{path} {exc}, which googlenet never writes: {RUN_FILE_FIX}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, OverflowError, csv.Error) as exc:
        what = {".yaml": "YAML", ".json": "JSON", ".csv": "CSV of numbers"}[path.suffix]
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunFileError(f"{path} is not valid {what} ({first}): {RUN_FILE_FIX}") from None


def read_results(run_dir: Path) -> list[dict[str, float]]:
    """results.csv's rows, every value a number."""
    return read_run_file(run_dir, "results.csv")


def check_run_folders(run_dir: Path) -> None:
    """Refuse a run directory whose weights/ or tensorboard/ is a link leading out of it, before anything is read,
    removed or written: checkpoints would be saved, and a resume's temporary files removed, outside the run."""
    for name in RUN_FOLDERS:
        path = run_dir / name
        if path.is_symlink() and not path.resolve().is_relative_to(run_dir.resolve()):
            raise RunFileError(
                f"run folder {path} is a link to {path.resolve()}, outside the run directory {run_dir}: links out of "
                f"a run are not followed, replace the link with a folder (move its files into {path})"
            )


def claim_run_dir(cfg: TrainConfig) -> Path:
    """Make the run's directory and return it: runs/train/exp, exp2, exp3 ... for the default name (the first that
    is free), an explicit name only if new, unless --exist-ok reuses it.

    Making it is the claim: mkdir either creates the folder or fails because it exists, in one step, so two runs
    started together never share a directory (the second takes the next number, or is refused its --name). The
    run directory is always a direct child of --project: a name is one folder name (config.run_name_problem).
    """
    problem = run_name_problem(cfg.name)
    if problem:
        raise ConfigError(problem)
    base = Path(cfg.project)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"--project {base} is a file, not a folder: choose another --project")
    path = base / cfg.name
    if cfg.exist_ok:
        check_run_folders(path)  # an existing run is written into
        path.mkdir(parents=True, exist_ok=True)
        return path
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if cfg.name != TrainConfig.name:
                raise ConfigError(
                    f"run directory {path} already exists: choose another --name or pass --exist-ok to reuse it"
                ) from None
        n += 1
        path = base / f"{cfg.name}{n}"


def start_run_dir(
    run_dir: Path, cfg: TrainConfig, device: torch.device, resumed: bool, summary: str, facts: dict[str, Any]
) -> None:
    """Create the run directory (or bring a resumed one up to date) before the first epoch. `facts`: the network's
    parameter counts and starting weights (summary.model_facts), recorded in env.json when the run starts."""
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    env = run_environment(run_dir, cfg, device, resumed)
    if not resumed:
        env.update(facts)
    atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    atomic_write_text(run_dir / "summary.md", summary)


def tensorboard_writer(cfg: TrainConfig):
    """--tensorboard: torch's SummaryWriter class, to open on RUN/tensorboard (None without the option), or a one-line
    error without the package, asked before the run directory is made."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'googlenet[tensorboard]'") from None
    return SummaryWriter


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
        first = read_run_file(run_dir, "env.json") if resumed and (run_dir / "env.json").exists() else None
    except RunFileError:
        first = None  # unreadable (or not a file of googlenet's): this environment is all there is
    if not isinstance(first, dict):
        return env
    earlier = first.get("resumed") if isinstance(first.get("resumed"), list) else []
    return {**first, "resumed": [*earlier, env]}
