"""Checkpoint state, Ctrl-C and exact resume.

A run can stop at any step boundary and continue bit-exactly: last.pt holds
the weights, the optimiser, the schedule, the averaged weights, where the
epoch stopped (`EpochState`), the RNG streams of every process and the
results so far. Ctrl-C and SIGTERM are deferred to the end of the current
step (`StopOnInterrupt`), so the saved state is one the training step never
half-applied. Every epoch reseeds its RNGs (`seed_epoch`), so a resume from
an epoch boundary replays the same numbers too.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import ConfigError, TrainConfig, show_value
from .data import Augment, Dataset, Preprocess
from .files import remove_stale_temporaries
from .rundir import RESULTS_COLUMNS, write_results
from .runtime import log

__all__ = [
    "EpochState",
    "Progress",
    "StopFinalEvaluation",
    "StopOnInterrupt",
    "TrainingInterrupted",
    "TrainingState",
    "checkpoint_state",
    "load_resume_state",
    "repair_run_dir",
    "restore",
    "resume_state_problem",
    "seed_epoch",
    "stop_before_final_evaluation",
    "stop_interrupted",
    "without_optimizer",
]

RESUME_KEYS = ("config", "optimizer", "scheduler", "epoch", "best_acc", "best_epoch", "results")


@dataclass
class TrainingState:
    """The objects a run trains with; a checkpoint saves them and a resume restores them."""

    cfg: TrainConfig
    data: Dataset
    pre: Preprocess
    augment: Augment
    model: nn.Module  # the network whose parameters train (and whose state_dict is saved)
    step_model: nn.Module  # what the training step calls: the model, under DDP and torch.compile if used
    averaged: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    device: torch.device
    gen: torch.Generator  # the augmentation's random numbers
    model_args: dict[str, Any]
    loader: Any = None  # a streamed folder's stream.TrainLoader (None: the training split is in memory)


@dataclass
class EpochState:
    """Running sums of the current epoch (saved on Ctrl-C for an exact mid-epoch resume)."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


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
    finished: bool = False  # a resumed run whose training had ended (stopped during its final evaluation): evaluate only


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured at a step boundary, where model, optimiser and RNGs agree (an exact resume point)."""


class _SignalHandler:
    """Handle Ctrl-C (SIGINT) and SIGTERM with `_handle` inside a `with` block (main thread only); the previous handlers after it."""

    def __enter__(self):
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        raise KeyboardInterrupt


class StopOnInterrupt(_SignalHandler):
    """Defer Ctrl-C (SIGINT) and SIGTERM (e.g. a cluster's preemption) to the end of the current training step.

    Stopping mid-step would save weights already updated by a step whose
    counters and RNG draws are not recorded, so the first Ctrl-C only sets a
    flag; `requested()` reports it at the next step boundary (agreed by all
    processes under torchrun, which forwards SIGINT to every worker). A second
    Ctrl-C interrupts at once, without saving a mid-epoch checkpoint.
    """

    until = "the current step"  # where the first signal takes effect, as the message says

    def __init__(self) -> None:
        self.flag = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if dist_utils.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            os.write(2, f"\n{name}: stopping after {self.until} (press Ctrl-C again to stop at once)\n".encode())

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


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Every epoch reseeds its RNGs, so a resumed run replays exactly."""
    return (cfg.seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**63)


def seed_epoch(t: TrainingState, progress: Progress, epoch: int) -> None:
    """Set the RNGs for `epoch`: its own seeds, or a mid-epoch resume's saved streams."""
    if progress.rng is not None:  # nothing may draw random numbers between this and the first step
        set_rng_state(progress.rng, t.gen, t.device)
        progress.rng = None
    else:
        torch.manual_seed(epoch_seed(t.cfg, epoch, dist_utils.rank()))
        t.gen.manual_seed(epoch_seed(t.cfg, epoch, dist_utils.rank()) + 1)


def checkpoint_state(t: TrainingState, progress: Progress, epoch_done: int, per_rank: list | None = None) -> dict[str, Any]:
    """last.pt: everything to rebuild the model and its input pipeline, and to resume exactly.

    `per_rank` (a mid-epoch stop): every process's (RNG state, EpochState) at the step boundary.
    """
    return {
        "model": t.model.state_dict(),
        "model_args": t.model_args,
        "averaged_model": t.averaged.module.state_dict() if t.averaged is not None else None,
        "averaged_count": t.averaged.n_averaged.clone() if t.averaged is not None else None,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "epoch": epoch_done,
        "epoch_state": per_rank[0][1] if per_rank else None,
        "epoch_state_per_rank": [s for _, s in per_rank] if per_rank else None,
        "best_acc": progress.best_acc,
        "best_epoch": progress.best_epoch,
        "results": progress.results,
        "elapsed": progress.elapsed,
        "rng": per_rank[0][0] if per_rank else rng_state(t.gen, t.device),
        "rng_per_rank": [r for r, _ in per_rank] if per_rank else None,
        "config": t.cfg.to_dict(),
        "preprocess": t.pre.to_dict(),
        "classes": t.data.classes,
        "dataset": t.cfg.dataset,
    }


def without_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """best.pt: everything but the optimiser's moments (half the file for Adam); last.pt resumes."""
    return {k: v for k, v in state.items() if k != "optimizer"}


def load_resume_state(target: Path, device: str, workers: int | None = None) -> tuple[Path, dict[str, Any], TrainConfig]:
    """(run directory, checkpoint, its config on `device`, with `workers` if given) for --resume RUN_DIR or RUN_DIR/weights/*.pt,
    or a one-line error. Device and workers are this machine's, not the run's: neither changes a batch."""
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
    try:
        cfg = replace(TrainConfig.from_dict(state["config"]), device=device)
        replace(cfg, name="exp", project="runs").validate()  # (its name and project are not used: the run is where last.pt is)
    except ConfigError as exc:
        raise CheckpointError(f"{target} holds an unusable training config ({exc}): resume a run written by googlenet train") from None
    if workers is not None:  # this machine's choice, checked as such
        cfg = replace(cfg, workers=workers)
        replace(cfg, name="exp", project="runs").validate()
    problem = resume_state_problem(state, cfg)
    if problem:  # all of it checked now: nothing is written to the run directory before this passes
        raise CheckpointError(f"{path} cannot resume training: {problem}; resume from the run's own weights/last.pt written by googlenet train")
    return run_dir, state, cfg


EPOCH_STATE_TYPES = {"step": int, "loss_sum": float, "correct": int, "seen": int}
RNG_KEYS = ("torch", "augment", "cuda")


def _int(value: Any, low: int, high: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epoch_state_problem(es: Any) -> str | None:
    if not isinstance(es, dict) or set(es) != set(EPOCH_STATE_TYPES):
        return f"epoch_state must hold exactly {', '.join(EPOCH_STATE_TYPES)}, got {show_value(es)}"
    if not (_int(es["step"], 1) and _int(es["seen"], 0) and _int(es["correct"], 0, es["seen"]) and _finite(es["loss_sum"])):
        return f"epoch_state has impossible values {show_value(es)}"
    return None


def _rng_problem(rng: Any) -> str | None:
    if not isinstance(rng, dict) or not {"torch", "augment"} <= set(rng) <= set(RNG_KEYS):
        return f"rng must hold the torch and augment generator states, got {show_value(rng)}"
    for key in ("torch", "augment"):
        try:  # a scratch generator takes exactly the states the real ones will
            torch.Generator().set_state(rng[key])
        except (RuntimeError, TypeError, ValueError):
            return f"rng {key} is not a CPU generator state"
    cuda = rng.get("cuda")
    if cuda is not None and not (isinstance(cuda, Tensor) and cuda.dtype == torch.uint8 and cuda.dim() == 1):
        return "rng cuda is not a CUDA generator state"
    return None


def resume_state_problem(state: dict[str, Any], cfg: TrainConfig) -> str | None:
    """What a last.pt gets wrong for a resume (every field the resume reads), or None. `cfg`: its validated config.

    The weights, optimiser and schedule are checked against the rebuilt model in `restore`, still before anything is written.
    """
    epoch, epoch_state = state["epoch"], state.get("epoch_state")
    if not _int(epoch, 0, cfg.epochs) or (epoch_state is not None and epoch >= cfg.epochs) or (epoch_state is None and epoch == 0):
        return f"epoch {show_value(epoch)} does not fit its config's {cfg.epochs} epochs"
    results = state["results"]
    if not isinstance(results, list) or len(results) != epoch:
        return f"results must be a list of one row per finished epoch ({epoch}), got {show_value(results)}"
    for i, row in enumerate(results):
        if not isinstance(row, dict) or not set(row) <= set(RESULTS_COLUMNS) or row.get("epoch") != i + 1:
            return f"results row {i + 1} is not a row of results.csv ({', '.join(RESULTS_COLUMNS)}): {show_value(row)}"
        for key, value in row.items():
            try:
                ok = not isinstance(value, bool) and isinstance(value, (int, float, str)) and len(str(value)) <= 40 and math.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                return f"results row {i + 1} has {key} = {show_value(value)}, not a number"
    if not (_finite(state["best_acc"]) and -1 <= state["best_acc"] <= 1):
        return f"best_acc {show_value(state['best_acc'])} is not an accuracy"
    if not (_int(state["best_epoch"], -1, epoch) and state["best_epoch"] != 0):
        return f"best_epoch {show_value(state['best_epoch'])} is not one of its {epoch} finished epochs"
    if not (_finite(state.get("elapsed", 0.0)) and state.get("elapsed", 0.0) >= 0):
        return f"elapsed {show_value(state.get('elapsed'))} is not a time"
    if epoch_state is not None:
        problem = _epoch_state_problem(epoch_state)
        per_rank = state.get("epoch_state_per_rank")
        if problem is None and per_rank is not None:
            if not isinstance(per_rank, list) or not per_rank:
                problem = f"epoch_state_per_rank must be a list, got {show_value(per_rank)}"
            problem = problem or next((p for p in map(_epoch_state_problem, per_rank) if p), None)
        if problem:
            return problem
    rngs = state.get("rng_per_rank") if epoch_state is not None and state.get("rng_per_rank") is not None else [state.get("rng")]
    if not isinstance(rngs, list) or not rngs:
        return f"rng_per_rank must be a list, got {show_value(rngs)}"
    if epoch_state is not None or state.get("rng") is not None:
        problem = next((p for p in map(_rng_problem, rngs) if p), None)
        if problem:
            return problem
    if not isinstance(state["optimizer"], dict) or not isinstance(state["scheduler"], dict):
        return "its optimizer and scheduler states are not mappings"
    if not _int(state["scheduler"].get("last_epoch"), 0):
        return f"its schedule's step {show_value(state['scheduler'].get('last_epoch'))} is not a step count"
    return None


def restore(state: dict[str, Any], source: str, run_dir: Path, t: TrainingState) -> Progress:
    """Load a run's last.pt (checked by `load_resume_state`) into the new run's objects and say where to continue.

    Writes nothing: `repair_run_dir` brings the run directory up to date once everything here has passed.
    """
    saved_total, total = state["scheduler"].get("total_steps"), getattr(t.scheduler, "total_steps", None)
    done = state["epoch"] * t.steps_per_epoch + (state.get("epoch_state") or {}).get("step", 0)  # the steps it has taken
    if saved_total != total or state["scheduler"]["last_epoch"] != done:
        raise CheckpointError(
            f"{source}: its schedule ({show_value(saved_total)} steps, at step {show_value(state['scheduler']['last_epoch'])}) "
            f"does not match its config ({t.cfg.epochs} epochs of {t.steps_per_epoch} steps): use the run's own weights/last.pt"
        )
    load_weights(t.model, state["model"], source)
    try:
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        if t.averaged is not None and state.get("averaged_model") is not None:
            load_weights(t.averaged.module, state["averaged_model"], source)
            t.averaged.n_averaged.copy_(torch.as_tensor(state["averaged_count"]))
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
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
    cfg = t.cfg
    patience_ended = cfg.patience is not None and progress.best_epoch > 0 and progress.start_epoch - progress.best_epoch >= cfg.patience
    progress.finished = not step and (progress.start_epoch >= cfg.epochs or patience_ended)
    if progress.finished:  # stopped during (or before) its final evaluation: that is what is left to do
        log(f"Resuming {run_dir}: its training ended after epoch {progress.start_epoch} of {cfg.epochs}; running the final evaluation and writing the report")
    else:
        log(f"Resuming {run_dir} at epoch {progress.start_epoch + 1}" + (f", step {step + 1}" if step else ""))
    if step:
        # Mid-epoch resume: the RNG streams continue from the interrupted step boundary (set by seed_epoch).
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) != dist_utils.world_size():
            log(f"note: the run was interrupted with {len(per_rank)} process(es), resumed with {dist_utils.world_size()}: the rest of this epoch is not bit-exact")
        progress.rng = per_rank[dist_utils.rank() % len(per_rank)]
    return progress


def repair_run_dir(state: dict[str, Any], run_dir: Path, progress: Progress) -> None:
    """After every check of a resume (main process): the run directory agrees with last.pt at once, even if killed again.

    Restores a missing best.pt from last.pt (when last.pt is the best epoch), rewrites results.csv and removes the
    temporary files a killed save left behind (`.last.pt.*.tmp.pt`, up to a checkpoint's size each).
    """
    best_path = run_dir / "weights" / "best.pt"
    if progress.best_epoch > 0 and not best_path.is_file():
        save_checkpoint(best_path, without_optimizer(state))
    write_results(run_dir / "results.csv", progress.results)
    stale = remove_stale_temporaries(run_dir / "weights") + remove_stale_temporaries(run_dir)
    if stale:
        log(f"Removed {len(stale)} temporary file(s) an interrupted save left: {', '.join(p.name for p in stale)}")


class StopFinalEvaluation(StopOnInterrupt):
    """Ctrl-C or SIGTERM during the final evaluation: stop it and say how to finish the run.

    Training is over and saved (last.pt, best.pt); metrics.json and the report are written atomically, so an
    interrupted evaluation leaves none half-written, and `--resume` runs just the evaluation again. Exit 130.
    One process stops at once. Under torchrun the processes evaluate together, and one stopping alone would
    leave the others waiting on it, so the first signal sets a flag that `check()` (called by all between
    splits) turns into a stop of all of them; a second signal stops at once.
    """

    until = "the split being evaluated"

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def _handle(self, signum: int, frame: object) -> None:
        if dist_utils.world_size() == 1:
            raise KeyboardInterrupt
        super()._handle(signum, frame)

    def check(self) -> None:
        """Stop every process if any got the signal (a collective under torchrun: every process calls it)."""
        if self.requested():
            raise KeyboardInterrupt

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        super().__exit__()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            stop_before_final_evaluation(self.run_dir)


def stop_before_final_evaluation(run_dir: Path) -> NoReturn:
    log(
        "\nInterrupted during the final evaluation; training is finished and saved in weights/. "
        f"Finish the run (metrics.json, REPORT.md) with: googlenet train --resume {run_dir}"
    )
    raise SystemExit(130) from None


def stop_interrupted(exc: KeyboardInterrupt, run_dir: Path, t: TrainingState, progress: Progress, epoch: int) -> NoReturn:
    """Ctrl-C: save the step boundary it stopped at (every process's state), say how to resume, exit 130."""
    last = run_dir / "weights" / "last.pt"
    command = f"googlenet train --resume {run_dir}" + (" (under the same torchrun command)" if dist_utils.world_size() > 1 else "")
    step = progress.epoch_state.step
    if isinstance(exc, TrainingInterrupted):
        if step:  # mid-epoch: save the exact state of this step boundary, every process's
            per_rank = dist_utils.all_gather_object((rng_state(t.gen, t.device), dict(progress.epoch_state.__dict__)))
            if dist_utils.is_main():
                save_checkpoint(last, checkpoint_state(t, progress, epoch, per_rank))
            dist_utils.barrier()  # torchrun stops the others once one exits: wait for the save
        where = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {len(progress.results)}"
        log(f"\nInterrupted; progress saved ({where}). Resume with: {command}")
    elif last.is_file():
        log(f"\nInterrupted mid-step; the previous checkpoint, weights/last.pt, is kept. Resume with: {command}")
    else:
        log("\nInterrupted before the first checkpoint; nothing to resume: start the run again")
    raise SystemExit(130) from None
