"""--resume: check a run's last.pt whole, restore it into a new run's objects, repair the run directory.

Nothing is written to the run directory before every field the resume reads
has passed (`load_resume_state`, `resume_state_problem`, `restore`), nor ever
through a weights/ that links out of the run (`rundir.check_run_folders`); then
`repair_run_dir` brings the directory up to date with last.pt at once.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import ConfigError, TrainConfig, quote_value
from .files import remove_stale_temporaries
from .rundir import RESULTS_COLUMNS, check_run_folders, write_results
from .runtime import log
from .state import EpochState, Progress, TrainingState, without_optimizer

RESUME_KEYS = ("config", "optimizer", "scheduler", "epoch", "best_acc", "best_epoch", "results")


def load_resume_state(
    target: Path, device: str, workers: int | None = None
) -> tuple[Path, dict[str, Any], TrainConfig]:
    """(run directory, checkpoint, its config on `device`, with `workers` if given) for --resume RUN_DIR or
    RUN_DIR/weights/*.pt,
    or a one-line error. Device and workers are this machine's, not the run's: neither changes a batch."""
    if not target.exists():
        raise ConfigError(f"{target} does not exist: --resume takes a run directory, e.g. runs/train/exp")
    if target.is_dir():
        run_dir, path = target, target / "weights" / "last.pt"
        check_run_folders(run_dir)  # before anything is read, removed or written through a link out of the run
        if not path.is_file():
            raise CheckpointError(
                f"{target} has no weights/last.pt to resume from (stopped before its first epoch ended?): start the "
                "run again"
            )
    elif target.parent.name == "weights":
        run_dir, path = target.parent.parent, target
        check_run_folders(run_dir)
    else:  # the run directory is where the files go: never guess it from a stray file's location
        raise ConfigError(f"--resume takes a run directory (e.g. runs/train/exp) or its weights/last.pt, not {target}")
    state = load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} cannot resume training (it has no {missing[0]}): resume from a run's weights/last.pt"
        )
    try:
        cfg = replace(TrainConfig.from_dict(state["config"]), device=device)
        cfg.validate(run_location=False)  # its name and project are not used: the run is where last.pt is
    except ConfigError as exc:
        raise CheckpointError(
            f"{target} holds an unusable training config ({exc}): resume a run written by googlenet train"
        ) from None
    if workers is not None:  # this machine's choice, checked as such
        cfg = replace(cfg, workers=workers)
        cfg.validate(run_location=False)
    problem = resume_state_problem(state, cfg)
    if problem:  # all of it checked now: nothing is written to the run directory before this passes
        raise CheckpointError(
            f"{path} cannot resume training: {problem}; resume from the run's own weights/last.pt written by googlenet "
            "train"
        )
    return run_dir, state, cfg


EPOCH_STATE_TYPES = {"step": int, "loss_sum": float, "correct": int, "seen": int}
RNG_KEYS = ("torch", "augment", "cuda")


def _int(value: Any, low: int, high: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epoch_state_problem(es: Any) -> str | None:
    if not isinstance(es, dict) or set(es) != set(EPOCH_STATE_TYPES):
        return f"epoch_state must hold exactly {', '.join(EPOCH_STATE_TYPES)}, got {quote_value(es)}"
    if not (
        _int(es["step"], 1) and _int(es["seen"], 0) and _int(es["correct"], 0, es["seen"]) and _finite(es["loss_sum"])
    ):
        return f"epoch_state has impossible values {quote_value(es)}"
    return None


def _rng_problem(rng: Any) -> str | None:
    if not isinstance(rng, dict) or not {"torch", "augment"} <= set(rng) <= set(RNG_KEYS):
        return f"rng must hold the torch and augment generator states, got {quote_value(rng)}"
    for key in ("torch", "augment"):
        try:  # a scratch generator takes exactly the states the real ones will
            torch.Generator().set_state(rng[key])
        except (RuntimeError, TypeError, ValueError):
            return f"rng {key} is not a CPU generator state"
    cuda = rng.get("cuda")
    if cuda is not None and not (isinstance(cuda, Tensor) and cuda.dtype == torch.uint8 and cuda.dim() == 1):
        return "rng cuda is not a CUDA generator state"
    return None


def _results_problem(results: Any, epoch: int) -> str | None:
    """What a last.pt's `results` (results.csv's rows of the `epoch` finished epochs) gets wrong, or None."""
    if not isinstance(results, list) or len(results) != epoch:
        return f"results must be a list of one row per finished epoch ({epoch}), got {quote_value(results)}"
    for i, row in enumerate(results):
        if not isinstance(row, dict) or not set(row) <= set(RESULTS_COLUMNS) or row.get("epoch") != i + 1:
            return f"results row {i + 1} is not a row of results.csv ({', '.join(RESULTS_COLUMNS)}): {quote_value(row)}"
        for key, value in row.items():
            try:
                ok = (
                    not isinstance(value, bool)
                    and isinstance(value, (int, float, str))
                    and len(str(value)) <= 40
                    and math.isfinite(float(value))
                )
            except ValueError:
                ok = False
            if not ok:
                return f"results row {i + 1} has {key} = {quote_value(value)}, not a number"
    return None


def resume_state_problem(state: dict[str, Any], cfg: TrainConfig) -> str | None:
    """What a last.pt gets wrong for a resume (every field the resume reads), or None. `cfg`: its validated config.

    The weights, optimiser and schedule are checked against the rebuilt model in `restore`, still before anything
    is written.
    """
    epoch, epoch_state = state["epoch"], state.get("epoch_state")
    if (
        not _int(epoch, 0, cfg.epochs)
        or (epoch_state is not None and epoch >= cfg.epochs)
        or (epoch_state is None and epoch == 0)
    ):
        return f"epoch {quote_value(epoch)} does not fit its config's {cfg.epochs} epochs"
    problem = _results_problem(state["results"], epoch)
    if problem:
        return problem
    if not (_finite(state["best_acc"]) and -1 <= state["best_acc"] <= 1):
        return f"best_acc {quote_value(state['best_acc'])} is not an accuracy"
    if not (_int(state["best_epoch"], -1, epoch) and state["best_epoch"] != 0):
        return f"best_epoch {quote_value(state['best_epoch'])} is not one of its {epoch} finished epochs"
    if not (_finite(state.get("elapsed", 0.0)) and state.get("elapsed", 0.0) >= 0):
        return f"elapsed {quote_value(state.get('elapsed'))} is not a time"
    if epoch_state is not None:
        problem = _epoch_state_problem(epoch_state)
        per_rank = state.get("epoch_state_per_rank")
        if problem is None and per_rank is not None:
            if not isinstance(per_rank, list) or not per_rank:
                problem = f"epoch_state_per_rank must be a list, got {quote_value(per_rank)}"
            problem = problem or next((p for p in map(_epoch_state_problem, per_rank) if p), None)
        if problem:
            return problem
    rngs = (
        state.get("rng_per_rank")
        if epoch_state is not None and state.get("rng_per_rank") is not None
        else [state.get("rng")]
    )
    if not isinstance(rngs, list) or not rngs:
        return f"rng_per_rank must be a list, got {quote_value(rngs)}"
    if epoch_state is not None or state.get("rng") is not None:
        problem = next((p for p in map(_rng_problem, rngs) if p), None)
        if problem:
            return problem
    if not isinstance(state["optimizer"], dict) or not isinstance(state["scheduler"], dict):
        return "its optimizer and scheduler states are not mappings"
    if not _int(state["scheduler"].get("last_epoch"), 0):
        return f"its schedule's step {quote_value(state['scheduler'].get('last_epoch'))} is not a step count"
    return None


def restore(state: dict[str, Any], source: str, run_dir: Path, t: TrainingState) -> Progress:
    """Load a run's last.pt (checked by `load_resume_state`) into the new run's objects and say where to continue.

    Writes nothing: `repair_run_dir` brings the run directory up to date once everything here has passed.
    """
    load_objects(state, source, t)
    progress = Progress(
        state["epoch"], state["best_acc"], state["best_epoch"], state.get("elapsed", 0.0), state["results"]
    )
    if state.get("epoch_state"):
        # each process continues its own running sums (rank 0's in checkpoints of one process)
        states = state.get("epoch_state_per_rank") or [state["epoch_state"]]
        progress.epoch_state = EpochState(**states[dist_utils.rank() % len(states)])
    step = progress.epoch_state.step
    best_path = run_dir / "weights" / "best.pt"
    if progress.best_epoch > 0 and not best_path.is_file():  # e.g. only last.pt was copied
        if progress.best_epoch != progress.start_epoch or step:
            raise CheckpointError(
                f"{best_path} is missing and last.pt is not the best epoch ({progress.best_epoch}): copy the run's "
                "whole weights/ folder"
            )
    cfg = t.cfg
    patience_ended = (
        cfg.patience is not None
        and progress.best_epoch > 0
        and progress.start_epoch - progress.best_epoch >= cfg.patience
    )
    progress.finished = not step and (progress.start_epoch >= cfg.epochs or patience_ended)
    if progress.finished:  # stopped during (or before) its final evaluation: that is what is left to do
        log(
            f"Resuming {run_dir}: its training ended after epoch {progress.start_epoch} of {cfg.epochs}; running the "
            "final evaluation and writing the report"
        )
    else:
        log(f"Resuming {run_dir} at epoch {progress.start_epoch + 1}" + (f", step {step + 1}" if step else ""))
    if step:
        # Mid-epoch resume: the RNG streams continue from the interrupted step boundary (set by reseed_for_epoch).
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) != dist_utils.world_size():
            log(
                f"note: the run was interrupted with {len(per_rank)} process(es), resumed with "
                f"{dist_utils.world_size()}: the rest of this epoch is not bit-exact"
            )
        progress.rng = per_rank[dist_utils.rank() % len(per_rank)]
    return progress


def load_objects(state: dict[str, Any], source: str, t: TrainingState) -> None:
    """The weights, optimiser, schedule, averaged weights and gradient scaler of last.pt into the new run's objects,
    once its schedule is checked to be the one its config plans."""
    saved_total, total = state["scheduler"].get("total_steps"), getattr(t.scheduler, "total_steps", None)
    # the steps it has taken
    done = state["epoch"] * t.steps_per_epoch + (state.get("epoch_state") or {}).get("step", 0)
    if saved_total != total or state["scheduler"]["last_epoch"] != done:
        raise CheckpointError(
            f"{source}: its schedule ({quote_value(saved_total)} steps, at step "
            f"{quote_value(state['scheduler']['last_epoch'])}) "
            f"does not match its config ({t.cfg.epochs} epochs of {t.steps_per_epoch} steps): use the run's own "
            "weights/last.pt"
        )
    load_weights(t.model, state["model"], source)
    try:
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        if t.averaged is not None and state.get("averaged_model") is not None:
            load_weights(t.averaged.module, state["averaged_model"], source)
            t.averaged.n_averaged.copy_(torch.as_tensor(state["averaged_count"]))
        if t.scaler is not None and state.get("scaler") is not None:
            t.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"{source}: optimiser, schedule or averaged weights do not match this run ({type(exc).__name__}): use the "
            "run's own weights/last.pt"
        ) from None


def repair_run_dir(state: dict[str, Any], run_dir: Path, progress: Progress) -> None:
    """After every check of a resume (main process): the run directory agrees with last.pt at once, even if killed
    again.

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
