"""What a run trains with and what its checkpoint holds.

A run can stop at any step boundary and continue bit-exactly: last.pt holds
the weights, the optimiser, the gradient scaler (fp16), the schedule, the
averaged weights, where the epoch stopped (`EpochState`), the RNG streams of
every process and the results so far (`checkpoint_state`). Every epoch reseeds
its RNGs (`reseed_for_epoch`), so a resume from an epoch boundary replays the
same numbers too. interrupts.py stops a run at a step boundary; resume.py
checks a last.pt and restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from . import distributed as dist_utils
from .config import TrainConfig
from .data import Augment, Dataset, Preprocess


@dataclass
class TrainingState:
    """The objects a run trains with; a checkpoint saves them and a resume restores them."""

    cfg: TrainConfig
    data: Dataset
    pre: Preprocess
    augmentation: Augment  # the in-memory path's (the streamed path's crops are its loader's)
    model: nn.Module  # the network whose parameters train (and whose state_dict is saved)
    step_model: nn.Module  # what the training step calls: the model, under DDP and torch.compile if used
    averaged: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    device: torch.device
    augment_rng: torch.Generator  # the augmentation's random numbers
    model_args: dict[str, Any]
    loader: Any = None  # a streamed folder's data.TrainLoader (None: the training split is in memory)
    # fp16's loss scaling (runtime.needs_grad_scaler); None: bf16 and fp32 need none
    scaler: torch.amp.GradScaler | None = None


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
    # a resumed run whose training had ended (stopped during its final evaluation): evaluate only
    finished: bool = False


def rng_state(augment_rng: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """This process's random streams: torch's global (dropout, ...), the augmentation's and CUDA's.
    Saved under "augment" (the key checkpoints have always used)."""
    state = {"torch": torch.get_rng_state(), "augment": augment_rng.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], augment_rng: torch.Generator, device: torch.device) -> None:
    """Continue the streams `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    augment_rng.set_state(state["augment"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_of_epoch(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """The seed of `epoch`'s random numbers on process `rank`: every epoch reseeds, so a resumed run replays exactly."""
    return (cfg.seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**63)


def reseed_for_epoch(t: TrainingState, progress: Progress, epoch: int) -> None:
    """Set the RNGs for `epoch`: its own seeds, or a mid-epoch resume's saved streams."""
    if progress.rng is not None:  # nothing may draw random numbers between this and the first step
        set_rng_state(progress.rng, t.augment_rng, t.device)
        progress.rng = None
    else:
        torch.manual_seed(seed_of_epoch(t.cfg, epoch, dist_utils.rank()))
        t.augment_rng.manual_seed(seed_of_epoch(t.cfg, epoch, dist_utils.rank()) + 1)


def checkpoint_state(
    t: TrainingState, progress: Progress, epoch_done: int, per_rank: list | None = None
) -> dict[str, Any]:
    """last.pt: everything to rebuild the model and its input pipeline, and to resume exactly.

    `per_rank` (a mid-epoch stop): every process's (RNG state, EpochState) at the step boundary.
    """
    return {
        "model": t.model.state_dict(),
        "model_args": t.model_args,
        "averaged_model": t.averaged.module.state_dict() if t.averaged is not None else None,
        "averaged_count": t.averaged.n_averaged.clone() if t.averaged is not None else None,
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict() if t.scaler is not None else None,
        "scheduler": t.scheduler.state_dict(),
        "epoch": epoch_done,
        "epoch_state": per_rank[0][1] if per_rank else None,
        "epoch_state_per_rank": [s for _, s in per_rank] if per_rank else None,
        "best_acc": progress.best_acc,
        "best_epoch": progress.best_epoch,
        "results": progress.results,
        "elapsed": progress.elapsed,
        "rng": per_rank[0][0] if per_rank else rng_state(t.augment_rng, t.device),
        "rng_per_rank": [r for r, _ in per_rank] if per_rank else None,
        "config": t.cfg.to_dict(),
        "preprocess": t.pre.to_dict(),
        "classes": t.data.classes,
        "dataset": t.cfg.dataset,
    }


def without_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    """best.pt: everything but the optimiser's moments (half the file for Adam); last.pt resumes."""
    return {k: v for k, v in state.items() if k != "optimizer"}
