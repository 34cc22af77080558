"""Training: the loss with auxiliary weights, `train_one_epoch`, and `fit`.

`fit(cfg)` loads the data, builds the model, optimiser, schedule and weight
averaging from a `TrainConfig`, trains with per-epoch validation, writes the
run directory (config.yaml, env.json, results.csv, weights/last.pt and
best.pt) and finally evaluates the best weights on every split and writes the
report. Under `torchrun` it trains with DistributedDataParallel: each process
takes its share of every global batch, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import ConfigError, TrainConfig
from .data import Augment, Dataset, Preprocess, batch_transform, load_dataset
from .errors import UserError
from .evaluate import evaluate_split
from .files import atomic_write_text
from .model import MIN_IMAGE_SIZE, GoogLeNet, GoogLeNetOutput

__all__ = ["RESULTS_COLUMNS", "StopOnInterrupt", "TrainingDiverged", "TrainingInterrupted", "fit", "googlenet_loss", "select_device", "train_one_epoch"]

RESULTS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "epoch_time"]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured at a step boundary, where model, optimiser and RNGs agree (an exact resume point)."""


class StopOnInterrupt:
    """Defer Ctrl-C (SIGINT) and SIGTERM (e.g. a cluster's preemption) to the end of the current training step.

    Stopping mid-step would save weights already updated by a step whose
    counters and RNG draws are not recorded, so the first Ctrl-C only sets a
    flag; `requested()` reports it at the next step boundary (agreed by all
    processes under torchrun, which forwards SIGINT to every worker). A second
    Ctrl-C interrupts at once, without saving a mid-epoch checkpoint.
    """

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict[int, Any] = {}
        self._installed = False

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if dist_utils.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            os.write(2, f"\n{name}: stopping after the current step (press Ctrl-C again to stop at once)\n".encode())

    def requested(self) -> bool:
        """Whether any process got Ctrl-C (a collective under torchrun: every process calls it)."""
        return dist_utils.any_process(self.flag)


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state(), "augment": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["augment"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def googlenet_loss(out: GoogLeNetOutput, target: Tensor, aux_weight: float = 0.3, label_smoothing: float = 0.0) -> Tensor:
    """main + aux_weight x (aux1 + aux2); the aux terms exist only in training mode."""
    loss = F.cross_entropy(out.logits, target, label_smoothing=label_smoothing)
    for aux in (out.aux1, out.aux2):
        if aux is not None and aux_weight:
            loss = loss + aux_weight * F.cross_entropy(aux, target, label_smoothing=label_smoothing)
    return loss


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every allocation over a threshold (at most 32 MB)
    with fresh pages from the kernel and returns them on free, so each training
    step page-faults its largest activations and gradients in again. Serving
    everything from the heap and never trimming it (what jemalloc and tcmalloc,
    the allocators Intel's PyTorch tuning guide suggests, do by design) made
    the CPU training step 2-3% faster here (docs/experiments.md). Process-wide,
    so `googlenet train` and `benchmark` call it, not the library. Returns
    whether it applied: a no-op where the C library is not glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def select_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but CUDA is not available: use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name} requested but MPS is not available: use --device cpu or auto")
    if device.type == "cuda" and device.index is None:  # under torchrun: this process's GPU
        return torch.device("cuda", dist_utils.local_rank())
    return device


def resolve_augment(cfg: TrainConfig, default: Augment) -> Augment:
    if not cfg.augment:
        return Augment()
    return Augment(
        rotate=default.rotate if cfg.rotate is None else cfg.rotate,
        translate=default.translate if cfg.translate is None else cfg.translate,
        scale=default.scale if cfg.scale is None else cfg.scale,
        hflip=default.hflip if cfg.hflip is None else cfg.hflip,
        crop_padding=default.crop_padding if cfg.crop_padding is None else cfg.crop_padding,
        elastic=default.elastic if cfg.elastic is None else cfg.elastic,
        elastic_sigma=cfg.elastic_sigma,
    )


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device, fused: bool = True) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the trainable parameters.

    `fused`: one fused kernel per step on CPU and CUDA (Adam: 3x faster than
    `foreach` on the project's CPU); the same update, to float rounding.
    """
    kernel = {"fused": True} if fused and device.type in ("cpu", "cuda") else {"foreach": True}
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **kernel)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernel)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, done_steps: int = 0):
    """A per-step schedule over `cfg.epochs`; `step` is the paper's -4% every 8 epochs.

    `done_steps`: a schedule replanned mid-run (`--time`) continues from there.
    """
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start, cycle_momentum=False
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg, steps_per_epoch, total))
    if done_steps:  # set the learning rate of step `done_steps` of the new schedule
        scheduler.last_epoch = done_steps - 1
        scheduler.step()
    return scheduler


def _lr_factor(cfg: TrainConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    """The step -> learning-rate factor of the cosine, step and constant schedules."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
        if cfg.schedule == "step":
            return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        return 1.0

    return factor


def planned_epochs(cfg: TrainConfig, epochs_done: int, seconds_per_epoch: float) -> int:
    """`--time`: how many of `cfg.epochs` fit the budget at this speed (never fewer than are done)."""
    if not cfg.time:
        return cfg.epochs
    return max(epochs_done, min(cfg.epochs, int(cfg.time * 60 / seconds_per_epoch)))


def build_averaged(cfg: TrainConfig, model: nn.Module) -> AveragedModel | None:
    if cfg.average == "ema":
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    if cfg.average == "polyak":  # the paper's Polyak averaging: the plain mean of the iterates
        return AveragedModel(model, use_buffers=True)
    return None


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Every epoch reseeds its RNGs, so a resumed run replays exactly."""
    return (cfg.seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**63)


@dataclass
class EpochState:
    """Running sums of the current epoch (saved on Ctrl-C for an exact mid-epoch resume)."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


def train_one_epoch(
    model: nn.Module,
    ddp_model: nn.Module,
    data: Dataset,
    pre: Preprocess,
    augment: Augment,
    optimizer: torch.optim.Optimizer,
    scheduler,
    averaged: AveragedModel | None,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    state: EpochState,
    generator: torch.Generator,
    progress=None,
    stop: StopOnInterrupt | None = None,
) -> EpochState:
    """One pass over this process's share of the training split.

    Starts at `state.step` (a mid-epoch resume) and raises `TrainingInterrupted`
    after the step during which `stop` saw Ctrl-C, with `state` up to date.
    """
    model.train()
    order = dist_utils.epoch_order(len(data.train), cfg.seed, epoch)
    local_batch = cfg.batch_size // dist_utils.world_size()
    steps = len(order) // local_batch
    if cfg.limit_train_batches is not None:
        steps = min(steps, cfg.limit_train_batches)
    amp_dtype = amp_dtype_for(cfg, device)
    for step in range(state.step, steps):
        idx = order[step * local_batch : (step + 1) * local_batch]
        images = data.train.images[idx].to(device, non_blocking=True)
        target = data.train.labels[idx].to(device, non_blocking=True)
        x = batch_transform(images, pre, augment, generator)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = ddp_model(x)
            loss = googlenet_loss(out, target, cfg.aux_weight, cfg.label_smoothing)
        loss_value = loss.item()
        # Under torchrun every process must stop together (else the others wait in backward's all-reduce).
        if dist_utils.any_process(not math.isfinite(loss_value)):
            raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}: lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if averaged is not None and cfg.average == "ema":
            averaged.update_parameters(model)
        state.step = step + 1
        state.loss_sum += loss_value * len(idx)
        state.correct += (out.logits.argmax(1) == target).sum().item()
        state.seen += len(idx)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{state.loss_sum / state.seen:.4f}", acc=f"{state.correct / state.seen:.4f}")
        if stop is not None and stop.requested():
            raise TrainingInterrupted
    return state


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    # On CPUs without native bf16 autocast is many times slower, so auto means
    # bf16 on CUDA only (docs/experiments.md has the CPU figure).
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


def next_run_dir(cfg: TrainConfig) -> Path:
    """runs/train/exp, exp2, exp3 ... for the default name; an explicit name must be new or --exist-ok."""
    base = Path(cfg.project)
    path = base / cfg.name
    if cfg.exist_ok:
        return path
    if cfg.name != TrainConfig.name:
        if path.exists():
            raise ConfigError(f"run directory {path} already exists: choose another --name or pass --exist-ok to reuse it")
        return path
    n = 1
    while path.exists():
        n += 1
        path = base / f"{cfg.name}{n}"
    return path


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
        "world_size": dist_utils.world_size(),
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "command": " ".join(sys.argv),
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
    return {**first, "resumed": [*first.get("resumed", []), env]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULTS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def model_args(cfg: TrainConfig, num_classes: int, in_channels: int) -> dict[str, Any]:
    return {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "aux_logits": True,
        "dropout": cfg.dropout,
        "dropout_aux": cfg.dropout_aux,
        "init": cfg.init,
    }


def _log(msg: str) -> None:
    if dist_utils.is_main():
        print(msg, flush=True)


RESUME_KEYS = ("config", "optimizer", "scheduler", "epoch", "best_acc", "best_epoch", "results")


def load_resume_state(target: Path) -> tuple[Path, dict[str, Any]]:
    """(run directory, checkpoint) for --resume RUN_DIR or RUN_DIR/weights/*.pt, or a one-line error."""
    if not target.exists():
        raise ConfigError(f"{target} does not exist: --resume takes a run directory, e.g. runs/train/exp")
    if target.is_dir():
        run_dir, path = target, target / "weights" / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"{target} has no weights/last.pt to resume from (stopped before its first epoch ended?): start the run again")
    elif target.parent.name == "weights":
        run_dir, path = target.parent.parent, target
    else:  # the run directory is where the files go: never guess it from a stray file's location
        raise ConfigError(f"--resume takes a run directory (e.g. runs/train/exp) or its weights/last.pt, not {target}")
    state = load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} cannot resume training (it has no {missing[0]}): resume from a run's weights/last.pt")
    return run_dir, state


def without_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """best.pt: everything but the optimiser's moments (half the file for Adam); last.pt resumes."""
    return {k: v for k, v in state.items() if k != "optimizer"}


@dataclass
class Progress:
    """Where a run stands besides its weights and optimiser: what resuming it continues from."""

    start_epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    elapsed: float = 0.0  # seconds of training and validation so far
    results: list[dict[str, Any]] = field(default_factory=list)  # results.csv rows
    epoch_state: EpochState = field(default_factory=EpochState)
    rng: dict[str, Tensor] | None = None  # a mid-epoch resume's RNG state, set just before its first step


def restore(
    state: dict[str, Any],
    source: str,
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    averaged: AveragedModel | None,
) -> Progress:
    """Load a run's last.pt into the new run's objects, repair its directory and say where to continue."""
    load_weights(model, state["model"], source)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if averaged is not None and state.get("averaged_model") is not None:
            averaged.module.load_state_dict(state["averaged_model"])
            averaged.n_averaged.copy_(state["averaged_count"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: optimiser, schedule or averaged weights do not match this run ({type(exc).__name__}): use the run's own weights/last.pt") from None
    progress = Progress(state["epoch"], state["best_acc"], state["best_epoch"], state.get("elapsed", 0.0), state["results"])
    if state.get("epoch_state"):
        # each process continues its own running sums (rank 0's in checkpoints of one process)
        states = state.get("epoch_state_per_rank") or [state["epoch_state"]]
        progress.epoch_state = EpochState(**states[dist_utils.rank() % len(states)])
    step = progress.epoch_state.step
    best_path = run_dir / "weights" / "best.pt"
    if progress.best_epoch > 0 and not best_path.is_file():  # e.g. only last.pt was copied
        if progress.best_epoch != progress.start_epoch or step:
            raise CheckpointError(f"{best_path} is missing and last.pt is not the best epoch ({progress.best_epoch}): copy the run's whole weights/ folder")
        if dist_utils.is_main():
            save_checkpoint(best_path, without_optimizer(state))
    if dist_utils.is_main():  # the run directory agrees with last.pt at once, even if killed again
        write_results(run_dir / "results.csv", progress.results)
    _log(f"Resuming {run_dir} at epoch {progress.start_epoch + 1}" + (f", step {step + 1}" if step else ""))
    if step:
        # Mid-epoch resume: the RNG streams continue from the interrupted step boundary (set at the loop's start).
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) != dist_utils.world_size():
            _log(f"note: the run was interrupted with {len(per_rank)} process(es), resumed with {dist_utils.world_size()}: the rest of this epoch is not bit-exact")
        progress.rng = per_rank[dist_utils.rank() % len(per_rank)]
    return progress


def stop_interrupted(
    exc: KeyboardInterrupt,
    run_dir: Path,
    epoch: int,
    epochs_done: int,
    epoch_state: EpochState,
    mid_epoch_checkpoint: Callable[[list], dict[str, Any]],
    gen: torch.Generator,
    device: torch.device,
) -> NoReturn:
    """Ctrl-C: save the step boundary it stopped at (every process's state), say how to resume, exit 130."""
    last = run_dir / "weights" / "last.pt"
    command = f"googlenet train --resume {run_dir}" + (" (under the same torchrun command)" if dist_utils.world_size() > 1 else "")
    if isinstance(exc, TrainingInterrupted):
        if epoch_state.step:  # mid-epoch: save the exact state of this step boundary, every process's
            per_rank = dist_utils.all_gather_object((rng_state(gen, device), dict(epoch_state.__dict__)))
            if dist_utils.is_main():
                save_checkpoint(last, mid_epoch_checkpoint(per_rank))
            dist_utils.barrier()  # torchrun stops the others once one exits: wait for the save
        where = f"epoch {epoch + 1}, step {epoch_state.step}" if epoch_state.step else f"end of epoch {epochs_done}"
        _log(f"\nInterrupted; progress saved ({where}). Resume with: {command}")
    elif last.is_file():
        _log(f"\nInterrupted mid-step; the previous checkpoint, weights/last.pt, is kept. Resume with: {command}")
    else:
        _log("\nInterrupted before the first checkpoint; nothing to resume: start the run again")
    dist_utils.cleanup()
    raise SystemExit(130) from None


def fit(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    """Train as `cfg` says (or resume a run directory) and return the run directory."""
    from .report import write_final_outputs

    device = select_device(cfg.device)
    dist_utils.init(device)
    if dist_utils.world_size() > 1 and cfg.batch_size % dist_utils.world_size():
        raise ConfigError(f"batch size {cfg.batch_size} does not split across {dist_utils.world_size()} processes: use a multiple")
    if cfg.image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image size {cfg.image_size} is below the network's minimum of {MIN_IMAGE_SIZE}: use --image-size {MIN_IMAGE_SIZE} or more")

    resume_state = None
    if resume is not None:
        run_dir, resume_state = load_resume_state(Path(resume))
        try:
            cfg = replace(TrainConfig.from_dict(resume_state["config"]), device=cfg.device).validate()
        except (TypeError, AttributeError) as exc:
            raise CheckpointError(f"{resume} holds an unusable training config ({exc}): resume a run written by googlenet train") from None
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.seed)

    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.val_fraction, cfg.seed, cfg.image_size)
    in_channels = cfg.in_channels or data.channels
    cfg = replace(cfg, in_channels=in_channels)
    if cfg.batch_size > len(data.train):
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the training split ({len(data.train)} images): use a smaller --batch-size")
    pre = Preprocess(cfg.image_size, in_channels, data.channels, data.native_size, data.mean, data.std)
    augment = resolve_augment(cfg, data.default_augment)
    # config.yaml records the augmentation actually used, not "dataset default".
    cfg = replace(cfg, rotate=augment.rotate, translate=augment.translate, scale=augment.scale, hflip=augment.hflip, crop_padding=augment.crop_padding, elastic=augment.elastic)
    if device.type != "cpu":
        data.train, data.val, data.test = data.train.to(device), data.val.to(device), data.test.to(device)

    margs = model_args(cfg, data.num_classes, in_channels)
    model = GoogLeNet(**margs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    averaged = build_averaged(cfg, model)
    ddp_model = dist_utils.wrap(model, device)
    if cfg.compile:
        ddp_model = torch.compile(ddp_model)
    optimizer = build_optimizer(cfg, model, device)
    local_batch = cfg.batch_size // dist_utils.world_size()
    steps_per_epoch = len(data.train) // dist_utils.world_size() // local_batch
    if cfg.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.limit_train_batches)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)

    gen = torch.Generator()
    if resume_state is not None:
        progress = restore(resume_state, str(resume), run_dir, model, optimizer, scheduler, averaged)
    else:
        progress = Progress()
        run_dir = next_run_dir(cfg)
        dist_utils.barrier()  # every process has picked the directory before rank 0 creates it
    start_epoch, best_acc, best_epoch, elapsed = progress.start_epoch, progress.best_acc, progress.best_epoch, progress.elapsed
    results, epoch_state, resume_rng = progress.results, progress.epoch_state, progress.rng
    weights_dir = run_dir / "weights"

    def checkpoint(epoch_done: int, state: EpochState | None = None, per_rank: list | None = None) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "model_args": margs,
            "averaged_model": averaged.module.state_dict() if averaged is not None else None,
            "averaged_count": averaged.n_averaged.clone() if averaged is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch_done,
            "epoch_state": state.__dict__ if state is not None else None,
            "epoch_state_per_rank": [s for _, s in per_rank] if per_rank else None,
            "best_acc": best_acc,
            "best_epoch": best_epoch,
            "results": results,
            "elapsed": elapsed,
            "rng": per_rank[0][0] if per_rank else rng_state(gen, device),
            "rng_per_rank": [r for r, _ in per_rank] if per_rank else None,
            "config": cfg.to_dict(),
            "preprocess": pre.to_dict(),
            "classes": data.classes,
            "dataset": cfg.dataset,
        }

    if dist_utils.is_main():
        weights_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)
        atomic_write_text(run_dir / "env.json", json.dumps(run_environment(run_dir, cfg, device, resume_state is not None), indent=2) + "\n")
        from .summary import summarize

        atomic_write_text(run_dir / "summary.md", summarize(GoogLeNet(**margs), cfg.image_size))
        _log(
            f"Training GoogLeNet on {cfg.dataset} ({len(data.train)} train / {len(data.val)} val / {len(data.test)} test) "
            f"at {cfg.image_size} px on {device}, {cfg.epochs} epochs, run directory {run_dir}"
        )

    from tqdm import tqdm

    epoch = start_epoch
    stop = StopOnInterrupt()
    # Validation covers the same samples whatever the process count: limit first, then shard.
    n_val = len(data.val) if cfg.limit_eval_batches is None else min(len(data.val), cfg.limit_eval_batches * cfg.eval_batch_size)
    val_shard = dist_utils.shard(n_val)
    try:
        stop.__enter__()
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            if resume_rng is not None:  # nothing may draw random numbers between this and the first step
                set_rng_state(resume_rng, gen, device)
                resume_rng = None
            else:
                torch.manual_seed(epoch_seed(cfg, epoch, dist_utils.rank()))
                gen.manual_seed(epoch_seed(cfg, epoch, dist_utils.rank()) + 1)
            bar = tqdm(
                total=steps_per_epoch, initial=epoch_state.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False, disable=not (sys.stderr.isatty() and dist_utils.is_main()),
            )
            with bar:
                epoch_state = train_one_epoch(
                    model, ddp_model, data, pre, augment, optimizer, scheduler, averaged, cfg, epoch, device, epoch_state, gen, bar, stop
                )
            if averaged is not None and cfg.average == "polyak":
                averaged.update_parameters(model)
            eval_model = averaged.module if averaged is not None else model
            val = evaluate_split(
                eval_model, data.val, pre, data.num_classes, cfg.eval_batch_size, device,
                cfg.limit_eval_batches if val_shard is None else None, cfg.channels_last, val_shard, dist_utils.all_reduce_sum,
            )
            train_loss, train_acc = dist_utils.mean_over_processes(epoch_state.loss_sum, epoch_state.correct, epoch_state.seen)
            elapsed += time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_acc, 6),
                "val_loss": round(val.loss, 6),
                "val_acc": round(val.accuracy, 6),
                "val_top5": round(val.top5, 6),
                "lr": f"{optimizer.param_groups[0]['lr']:.6g}",
                "epoch_time": round(time.perf_counter() - t0, 2),
            }
            results.append(row)
            improved = val.accuracy > best_acc
            if improved:
                best_acc, best_epoch = val.accuracy, epoch + 1
            epoch_state = EpochState()
            planned_before = cfg.epochs
            if cfg.time:  # every process plans from the same (mean) time, so all stop together
                per_epoch = dist_utils.all_reduce_sum(torch.tensor([elapsed], dtype=torch.float64)).item() / dist_utils.world_size() / len(results)
                cfg = replace(cfg, epochs=planned_epochs(cfg, epoch + 1, per_epoch))
                if epoch + 1 < cfg.epochs < planned_before:
                    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch, done_steps=(epoch + 1) * steps_per_epoch)
            if dist_utils.is_main():
                if cfg.epochs != planned_before:  # config.yaml and the checkpoints hold the plan a resume follows
                    write_config(run_dir, cfg)
                # results.csv, then best.pt, then last.pt: a kill between any two leaves a run that resumes
                # from last.pt and rewrites the others (best.pt is never older than last.pt's best_epoch).
                write_results(run_dir / "results.csv", results)
                state = checkpoint(epoch + 1)
                if improved:
                    save_checkpoint(weights_dir / "best.pt", without_optimizer(state))
                save_checkpoint(weights_dir / "last.pt", state)
            _log(
                f"epoch {epoch + 1}/{planned_before}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                f"val loss {val.loss:.4f} acc {val.accuracy:.4f}  lr {row['lr']}  {row['epoch_time']:.0f}s"
                + ("  *best" if improved else "")
            )
            if cfg.epochs != planned_before:
                _log(
                    f"--time {cfg.time:g} min: {cfg.epochs} of {planned_before} epochs fit at {per_epoch:.0f} s per epoch"
                    + (f"; the learning-rate schedule now ends after epoch {cfg.epochs}" if cfg.epochs > epoch + 1 else ": stopping")
                )
            if epoch + 1 >= cfg.epochs:
                break
            if cfg.patience is not None and epoch + 1 - best_epoch >= cfg.patience:
                _log(f"early stopping: no better validation accuracy for {cfg.patience} epochs")
                break
            if stop.requested():  # Ctrl-C during validation or saving: stop now that the epoch is saved
                raise TrainingInterrupted
    except TrainingDiverged as exc:
        kept = (
            f"the last good checkpoint (epoch {len(results)}) is kept in {weights_dir / 'last.pt'}"
            if epoch > 0 and (weights_dir / "last.pt").is_file()
            else "no checkpoint was written"
        )
        raise TrainingDiverged(f"{exc}; {kept}") from None
    except KeyboardInterrupt as exc:
        stop_interrupted(exc, run_dir, epoch, len(results), epoch_state, lambda per_rank: checkpoint(epoch, epoch_state, per_rank), gen, device)
    finally:
        stop.__exit__()

    if dist_utils.is_main():
        write_final_outputs(run_dir, data, pre, device, cfg)
        _log(f"Results saved to {run_dir}")
    dist_utils.cleanup()
    return run_dir

