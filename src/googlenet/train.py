"""Training: `train_step`, `train_one_epoch` and `fit`.

`fit(cfg)` loads the data, builds the model (the paper's network, made fast
by `kernels.accelerate`, started from --weights and frozen as pretrained.py
says), the loss, optimiser, schedule and weight averaging (recipe.py) from a
`TrainConfig`, trains with per-epoch validation, writes the run directory
(rundir.py) and checkpoints (resume.py), and finally evaluates the best
weights on every split and writes the report (report.py). Under `torchrun`
it trains with DistributedDataParallel: each process takes its share of
every global batch, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed as dist_utils
from .checkpoint import preprocess_from_checkpoint, read_weights, save_checkpoint
from .config import ConfigError, TrainConfig, load_yaml, resolve_config, with_current_names
from .data import (
    AUGMENT_SETTINGS,
    Augment,
    Dataset,
    Preprocess,
    TrainLoader,
    absolute_dataset,
    augmentation_for,
    batch_transform,
    default_workers,
    load_dataset,
)
from .errors import UserError
from .evaluate import EvalOptions, SplitMetrics, eval_count, eval_indices, evaluate_split, write_final_outputs
from .files import DiskFullError
from .interrupts import (
    StopFinalEvaluation,
    StopOnInterrupt,
    TrainingInterrupted,
    stop_before_final_evaluation,
    stop_interrupted,
    uninterrupted,
)
from .kernels import ALL, accelerate
from .memory import check_batch_fits
from .model import GoogLeNet, GoogLeNetOutput
from .pretrained import freeze_through, load_pretrained, say_image_size
from .recipe import build_averaged, build_optimizer, build_scheduler, googlenet_loss
from .report import final_summary
from .resume import load_resume_state, repair_run_dir, restore
from .rundir import (
    claim_run_dir,
    log_tensorboard,
    results_row,
    start_run_dir,
    tensorboard_writer,
    write_config,
    write_results,
)
from .runtime import (
    amp_dtype_for,
    configure_backends,
    log,
    needs_grad_scaler,
    progress_bar,
    resolve_amp,
    select_device,
)
from .state import EpochState, Progress, TrainingState, checkpoint_state, reseed_for_epoch, without_optimizer
from .summary import model_facts, summarize

__all__ = [
    "TrainingDiverged",
    "fit",
    "run_train",
    "train_one_epoch",
    "train_step",
]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def planned_epochs(cfg: TrainConfig, epochs_done: int, seconds_per_epoch: float) -> int:
    """`--time-limit`: how many of `cfg.epochs` fit the budget at this speed (never fewer than are done)."""
    if not cfg.time_limit:
        return cfg.epochs
    return max(epochs_done, min(cfg.epochs, int(cfg.time_limit * 60 / seconds_per_epoch)))


def finish_estimate(seconds: float, now: datetime | None = None) -> str:
    """When a run `seconds` from `now` ends, e.g. "about 12 min left, finishing at 14:05"."""
    end = (now or datetime.now()) + timedelta(seconds=seconds)
    return f"about {f'{seconds / 60:.0f} min' if seconds >= 90 else f'{seconds:.0f} s'} left, finishing at {end:%H:%M}"


def model_args(cfg: TrainConfig, num_classes: int, in_channels: int) -> dict[str, Any]:
    """The GoogLeNet arguments a checkpoint stores, so any tool can rebuild the network."""
    return {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "aux_logits": True,
        "dropout": cfg.dropout,
        "dropout_aux": cfg.dropout_aux,
        "init": cfg.init,
    }


def build_training(
    cfg: TrainConfig, data: Dataset, device: torch.device, resumed: Preprocess | None = None
) -> TrainingState:
    """The model, optimiser, schedule and averaging that `cfg` describes, for `data` on `device`.

    `resumed`: a resumed run's preprocessing (its --weights were loaded when it started).
    """
    weights, meta = read_weights(cfg.weights) if cfg.weights and resumed is None else (None, {})
    in_channels = cfg.in_channels or meta.get("model_args", {}).get("in_channels") or data.channels
    pre = resumed or Preprocess.for_dataset(data, cfg.image_size, in_channels)
    if weights is not None and cfg.weights_preprocess and isinstance(meta.get("preprocess"), dict):
        trained = preprocess_from_checkpoint(meta)  # the input the weights expect, in the dataset's geometry
        pre = replace(pre, mean=trained.mean, std=trained.std, channel_order=trained.channel_order)
    augmentation = augmentation_for(cfg, data.default_augment)
    check_augmentation(cfg, data, augmentation)
    # config.yaml records the augmentation and data path actually used, not "dataset default" or "auto".
    cfg = replace(
        cfg,
        in_channels=in_channels,
        rotate=augmentation.rotate,
        translate=augmentation.translate,
        scale=augmentation.scale,
        hflip=augmentation.hflip,
        crop_padding=augmentation.crop_padding,
        elastic=augmentation.elastic,
        data_loading="stream" if data.streamed else "memory",
    )
    cfg = batch_for_split(cfg, len(data.train), resumed is not None)
    if weights is not None:
        say_image_size(meta, cfg.weights, cfg.image_size)
    if device.type != "cpu":
        data.train, data.val, data.test = data.train.to(device), data.val.to(device), data.test.to(device)

    margs = model_args(cfg, data.num_classes, in_channels)
    check_batch_fits(margs, cfg.image_size, cfg.batch_size, device, True, "--batch-size")  # before any run folder
    check_batch_fits(margs, cfg.image_size, cfg.eval_batch_size, device, False, "--eval-batch-size")
    model, step_model = build_model(cfg, margs, weights, device)
    averaged = build_averaged(cfg, model)
    optimizer = build_optimizer(cfg, model, device)
    steps_per_epoch = len(data.train) // dist_utils.world_size() // (cfg.batch_size // dist_utils.world_size())
    if cfg.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.limit_train_batches)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    loader = None
    if data.streamed:
        local_batch = cfg.batch_size // dist_utils.world_size()
        args = (
            cfg.image_size,
            cfg.augment,
            augmentation.hflip,
            cfg.color_jitter,
            cfg.seed,
            local_batch,
            steps_per_epoch,
        )
        loader = TrainLoader(data.train, *args, device)
        log(f"Streaming {cfg.dataset} from disk with {data.train.workers} DataLoader worker(s) per process")
    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(amp_dtype_for(cfg, device)) else None
    objects = (model, step_model, averaged, optimizer, scheduler, steps_per_epoch, device, torch.Generator(), margs)
    return TrainingState(cfg, data, pre, augmentation, *objects, loader, scaler)


def batch_for_split(cfg: TrainConfig, images: int, resumed: bool) -> TrainConfig:
    """`cfg` with a batch larger than the training split's `images` clipped to it (a multiple of torchrun's
    processes), said in the log, as Ultralytics does for a small folder; a resumed run's batch is its own."""
    if cfg.batch_size <= images:
        return cfg
    fits = images // dist_utils.world_size() * dist_utils.world_size()
    if resumed or not fits:  # resumed: the data has changed under the run
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training split ({images} images, "
            f"{dist_utils.world_size()} process(es)): use a smaller --batch-size or add images"
        )
    log(f"batch size {cfg.batch_size} is larger than the training split ({images} images): using {fits}")
    return replace(cfg, batch_size=fits)


def build_model(
    cfg: TrainConfig, margs: dict[str, Any], weights: dict[str, Tensor] | None, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The network on `device` (its --weights loaded, --freeze applied, accelerated, in its memory format) and what
    the training step calls: the network under DDP and torch.compile when used."""
    model = GoogLeNet(**margs)
    if weights is not None:
        load_pretrained(model, weights, cfg.weights)
    if cfg.freeze:
        freeze_through(model, cfg.freeze)
    # torch.compile gets the plain network (custom autograd kernels break its graphs); the accelerated LRN's
    # float32 computation under autocast stays, as it is a matter of precision, not speed.
    model = accelerate(model, () if cfg.compile else ALL).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = dist_utils.wrap(model, device)
    return model, torch.compile(step_model) if cfg.compile else step_model


def check_augmentation(cfg: TrainConfig, data: Dataset, augmentation: Augment) -> None:
    """Refuse augmentation settings the data path would ignore: the in-memory settings on a streamed folder,
    --color-jitter on images held in memory."""
    if data.streamed:  # its augmentation is the paper's crops (data.transforms.train_transform), made by its workers
        unused = [f"--{k.replace('_', '-')}" for k in AUGMENT_SETTINGS if k != "hflip" and getattr(augmentation, k)]
        if unused:
            raise ConfigError(
                f"{', '.join(unused)} augment images held in memory; a streamed folder trains on the paper's "
                "random crops and flips (--hflip, --color-jitter): drop them or use --data-loading memory"
            )
    elif cfg.color_jitter:
        raise ConfigError(
            f"--color-jitter applies to image folders streamed from disk, not to {cfg.dataset} in memory: "
            "drop it or use --data-loading stream"
        )


def train_step(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    amp: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Tensor, GoogLeNetOutput]:
    """One optimisation step on a batch: forward (under autocast if `amp`), GoogLeNet's loss, backward, update.

    `scaler` (fp16): the loss is scaled before backward so small gradients do not underflow, and the step
    skipped when a gradient overflowed. `googlenet benchmark` times exactly this. Returns the (detached)
    loss and the outputs.
    """
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        out = model(x)
        loss = googlenet_loss(out, target, cfg.aux_weight, cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), out


def training_batches(t: TrainingState, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Each step's model input and targets on the device, for `epoch` from step `start`: in-memory images indexed
    and augmented a batch at a time, or a streamed folder's crops from its DataLoader; both in the seeded order
    of `distributed.epoch_order`, and both through the run's Preprocess."""
    if t.loader is not None:
        for images, target in t.loader.epoch(epoch, start):
            yield batch_transform(images.to(t.device, non_blocking=True), t.pre), target.to(t.device, non_blocking=True)
        return
    order = dist_utils.epoch_order(len(t.data.train), t.cfg.seed, epoch)
    local_batch = t.cfg.batch_size // dist_utils.world_size()
    for step in range(start, t.steps_per_epoch):
        idx = order[step * local_batch : (step + 1) * local_batch]
        images = t.data.train.images[idx].to(t.device, non_blocking=True)
        target = t.data.train.labels[idx].to(t.device, non_blocking=True)
        yield batch_transform(images, t.pre, t.augmentation, t.augment_rng), target


def train_one_epoch(
    t: TrainingState, epoch: int, state: EpochState, progress=None, stop: StopOnInterrupt | None = None
) -> EpochState:
    """One pass over this process's share of the training split, from `state.step` (a mid-epoch resume).

    Raises `TrainingInterrupted` after the step during which `stop` saw Ctrl-C, with `state` up to date.
    """
    cfg = t.cfg
    t.model.train()
    amp = amp_dtype_for(cfg, t.device)
    for step, (x, target) in enumerate(training_batches(t, epoch, state.step), start=state.step):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, out = train_step(t.step_model, x, target, t.optimizer, cfg, amp, t.scaler)
        loss_value = loss.item()
        # Under torchrun every process must stop together (else the others wait in the next all-reduce).
        if dist_utils.any_process(not math.isfinite(loss_value)):
            raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}: lower --lr")
        t.scheduler.step()
        if t.averaged is not None and cfg.average == "ema":
            t.averaged.update_parameters(t.model)
        state.step = step + 1
        state.loss_sum += loss_value * len(target)
        state.correct += (out.logits.argmax(1) == target).sum().item()
        state.seen += len(target)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(
                loss=f"{state.loss_sum / state.seen:.4f}", acc=f"{state.correct / state.seen:.4f}", refresh=False
            )
        if stop is not None and stop.requested():
            raise TrainingInterrupted
    return state


def validate(t: TrainingState) -> SplitMetrics:
    """Eval-mode metrics of the (averaged) weights on the validation split, every sample counted once under torchrun."""
    cfg = t.cfg
    model = t.averaged.module if t.averaged is not None else t.model
    mine = eval_indices(len(t.data.val), cfg.eval_batch_size, cfg.limit_eval_batches)
    options = EvalOptions(cfg.eval_batch_size, t.device, cfg.channels_last)
    return evaluate_split(
        model, t.data.val, t.pre, t.data.num_classes, options, indices=mine, reduce=dist_utils.all_reduce_sum
    )


def training_loss_terms(cfg: TrainConfig) -> str:
    """What the training loss adds to the validation loss (the main head's plain cross-entropy), e.g. "(+ 0.3 x aux,
    smoothing 0.1)"."""
    terms = [f"+ {cfg.aux_weight:g} x aux"] * bool(cfg.aux_weight) + [f"smoothing {cfg.label_smoothing:g}"] * bool(
        cfg.label_smoothing
    )
    return f"({', '.join(terms)})" if terms else ""


def finish_epoch(t: TrainingState, progress: Progress, epoch: int, started: float, run_dir: Path, board=None) -> bool:
    """Validate, record the epoch's row, replan under --time-limit, save the checkpoints and log.

    Returns whether training stops here (the last planned epoch, or --patience ran out).
    """
    if t.averaged is not None and t.cfg.average == "polyak":
        t.averaged.update_parameters(t.model)
    val_started = time.perf_counter()
    val = validate(t)
    val_seconds = time.perf_counter() - val_started
    s = progress.epoch_state
    train_loss, train_acc = dist_utils.mean_over_processes(s.loss_sum, s.correct, s.seen)
    progress.elapsed += time.perf_counter() - started
    row = results_row(
        epoch + 1, train_loss, train_acc, val, t.optimizer.param_groups[0]["lr"], time.perf_counter() - started
    )
    progress.results.append(row)
    improved = val.accuracy > progress.best_acc
    if improved:
        progress.best_acc, progress.best_epoch = val.accuracy, epoch + 1
    progress.epoch_state = EpochState()
    planned_before = t.cfg.epochs
    per_epoch = replan(t, progress, epoch)
    if dist_utils.is_main():
        save_epoch(t, progress, epoch, run_dir, improved, board, replanned=t.cfg.epochs != planned_before)
    log(
        f"epoch {epoch + 1}/{planned_before}  train loss {train_loss:.4f} {training_loss_terms(t.cfg)} acc "
        f"{train_acc:.4f}  "
        f"val loss {val.loss:.4f} acc {val.accuracy:.4f}  lr {row['lr']}  {row['epoch_time']:.0f}s"
        + ("  *best" if improved else "")
    )
    if t.cfg.epochs != planned_before:
        log(
            f"--time-limit {t.cfg.time_limit:g} min: {t.cfg.epochs} of {planned_before} epochs fit "
            f"at {per_epoch:.0f} s per epoch"
            + (
                f"; the learning-rate schedule now ends after epoch {t.cfg.epochs}"
                if t.cfg.epochs > epoch + 1
                else ": stopping"
            )
        )
    log(finish_estimate(seconds_left(t, progress, epoch, val_seconds)))
    if epoch + 1 >= t.cfg.epochs:
        return True
    if t.cfg.patience is not None and epoch + 1 - progress.best_epoch >= t.cfg.patience:
        log(f"early stopping: no better validation accuracy for {t.cfg.patience} epochs")
        return True
    return False


def replan(t: TrainingState, progress: Progress, epoch: int) -> float:
    """--time-limit: plan the epochs that fit at the mean epoch time so far (every process from the same mean, so
    all stop together) and shorten the schedule to end with them; returns that mean (0 without a limit)."""
    if not t.cfg.time_limit:
        return 0.0
    elapsed = dist_utils.all_reduce_sum(torch.tensor([progress.elapsed], dtype=torch.float64)).item()
    per_epoch = elapsed / dist_utils.world_size() / len(progress.results)
    planned_before = t.cfg.epochs
    t.cfg = replace(t.cfg, epochs=planned_epochs(t.cfg, epoch + 1, per_epoch))
    if epoch + 1 < t.cfg.epochs < planned_before:
        done = (epoch + 1) * t.steps_per_epoch
        t.scheduler = build_scheduler(t.cfg, t.optimizer, t.steps_per_epoch, done_steps=done)
    return per_epoch


def save_epoch(
    t: TrainingState, progress: Progress, epoch: int, run_dir: Path, improved: bool, board, replanned: bool
) -> None:
    """The main process's record of a finished epoch: config.yaml if replanned, results.csv, TensorBoard, best.pt
    if it improved, last.pt."""
    if replanned:  # config.yaml and the checkpoints hold the plan a resume follows
        write_config(run_dir, t.cfg)
    # results.csv, then best.pt, then last.pt: a kill between any two leaves a run that resumes
    # from last.pt and rewrites the others (best.pt is never older than last.pt's best_epoch).
    write_results(run_dir / "results.csv", progress.results)
    if board is not None:
        log_tensorboard(board, progress.results[-1])
    state = checkpoint_state(t, progress, epoch + 1)
    with uninterrupted():  # a signal now is honoured once both are written
        if improved:
            save_checkpoint(run_dir / "weights" / "best.pt", without_optimizer(state))
        save_checkpoint(run_dir / "weights" / "last.pt", state)


def seconds_left(t: TrainingState, progress: Progress, epoch: int, val_seconds: float) -> float:
    """The remaining epochs at the mean epoch time so far, then the final evaluation: every split, each
    process its share, at the speed validation just ran (`val_seconds`)."""
    cfg = t.cfg
    splits = (t.data.train, t.data.val, t.data.test)
    n_train, n_val, n_test = (eval_count(len(s), cfg.eval_batch_size, cfg.limit_eval_batches) for s in splits)
    final_seconds = val_seconds * (n_train + n_val + n_test) / max(n_val, 1)
    return progress.elapsed / len(progress.results) * (cfg.epochs - epoch - 1) + final_seconds


MACHINE_SETTINGS = {"device", "workers"}  # what a resume may change: where it runs, not what it computes


def run_train(args) -> None:
    """`googlenet train`: the flags over --config over --preset, or --resume RUN with nothing else but this machine's
    settings."""
    values = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "config", "resume", "func")}
    if args.resume:
        others = [f"--{k.replace('_', '-')}" for k, v in values.items() if v is not None and k not in MACHINE_SETTINGS]
        others += ["--config"] * bool(args.config) + ["--preset"] * bool(args.preset)
        if others:  # never ignored silently: a resume replays the run as it was configured
            raise ConfigError(
                f"--resume continues {args.resume} exactly as it was configured, so {', '.join(others)} cannot apply; "
                "to train on from its weights with other settings, start a new run: googlenet train --weights "
                f"{args.resume} ..."
            )
        # workers None: the run's own
        fit(resolve_config("fast", device=args.device), resume=args.resume, workers=args.workers)
        return
    file_values = load_yaml(args.config) if args.config else None
    fit(resolve_config(args.preset, file_values, **values))


def fit(cfg: TrainConfig | None = None, resume: str | Path | None = None, **settings: Any) -> Path:
    """Train as `cfg` says (default: the fast preset) with `settings` on top, or resume a run directory; returns the run
    directory.

    googlenet.fit(epochs=1, limit_train_batches=20)            # settings: the fields of TrainConfig
    googlenet.fit(googlenet.resolve_config("original", seed=1))  # as `googlenet train --preset original --seed 1`
    """
    workers = None
    if (
        resume is not None
    ):  # as the CLI: a resume replays the run as it was configured, on this machine's device and workers
        if set(settings) - MACHINE_SETTINGS:
            raise ConfigError(
                f"resume continues {resume} exactly as it was configured, so "
                f"{', '.join(sorted(set(settings) - MACHINE_SETTINGS))} cannot apply"
            )
        workers = settings.pop("workers", None)  # checked against the run's dataset (load_resume_state)
    settings = with_current_names(settings)  # e.g. time=40, as before time_limit
    cfg = resolve_config(**settings) if cfg is None else replace(cfg, **settings).validate() if settings else cfg

    device = select_device(cfg.device)
    dist_utils.init(device)
    try:
        return run_training(cfg, resume, device, workers)
    finally:  # on every way out: a process that leaves with its process group alive can abort in gloo's teardown
        dist_utils.cleanup()


def run_training(cfg: TrainConfig, resume: str | Path | None, device: torch.device, workers: int | None) -> Path:
    """fit, inside the process group (`workers`: a resume's --workers)."""
    run_dir, resume_state = None, None
    if resume is not None:
        run_dir, resume_state, cfg = load_resume_state(Path(resume), cfg.device, workers)
    if dist_utils.world_size() > 1 and cfg.batch_size % dist_utils.world_size():
        raise ConfigError(
            f"batch size {cfg.batch_size} does not split across {dist_utils.world_size()} processes: use a multiple"
        )
    configure_backends(device, cfg.deterministic)
    torch.manual_seed(cfg.seed)

    data = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        cfg.download,
        cfg.val_fraction,
        cfg.seed,
        cfg.image_size,
        cfg.data_loading,
        cfg.memory_budget,
        default_workers() if cfg.workers is None else cfg.workers,
    )
    if resume_state is None:  # the run records where its images are, for evaluate and --resume from anywhere
        data_dir = cfg.data_dir and os.path.abspath(Path(cfg.data_dir).expanduser())
        cfg = replace(cfg, dataset=absolute_dataset(cfg.dataset), data_dir=data_dir)
    t = build_training(cfg, data, device, None if resume_state is None else preprocess_from_checkpoint(resume_state))
    progress = Progress() if resume_state is None else restore(resume_state, str(resume), run_dir, t)
    writer = tensorboard_writer(t.cfg) if dist_utils.is_main() else None
    if run_dir is None:
        run_dir = claim_on_rank_0(t.cfg)
    board = writer(str(run_dir / "tensorboard")) if writer is not None else None
    start_run(t, run_dir, device, resume_state, progress)
    train_epochs(t, progress, run_dir, board)

    try:
        with StopFinalEvaluation(run_dir) as final:  # Ctrl-C or SIGTERM here: stop, and --resume finishes the run
            log(final_summary(write_final_outputs(run_dir, data, device, t.cfg, final.check), run_dir))
    except DiskFullError as exc:
        raise _disk_full(exc, run_dir) from None
    return run_dir


def claim_on_rank_0(cfg: TrainConfig) -> Path:
    """The new run's directory: rank 0 claims it (rundir.claim_run_dir) and tells the others which it is."""
    claimed, problem = None, None
    if dist_utils.is_main():
        try:
            claimed = claim_run_dir(cfg)
        except (UserError, OSError) as exc:
            problem = exc
    run_dir, failed = dist_utils.broadcast_object((claimed, problem is not None))
    if problem is not None:
        raise problem
    if failed:
        raise SystemExit(2)  # rank 0 says why
    return run_dir


def start_run(
    t: TrainingState, run_dir: Path, device: torch.device, resume_state: dict[str, Any] | None, progress: Progress
) -> None:
    """Before the first epoch: rank 0 brings the run directory up to date (config.yaml, env.json, summary.md; a
    resume's repaired first), and the log says what trains, from what, where and how."""
    if not dist_utils.is_main():  # the others write and say nothing
        return
    plain = GoogLeNet(**t.model_args)  # the network of model.py, frozen as trained: summary.md's rows and counts
    if t.cfg.freeze:
        freeze_through(plain, t.cfg.freeze)
    facts = model_facts(plain, t.cfg.weights)
    if resume_state is not None:  # only now, every check of the resume passed: bring its directory up to date
        repair_run_dir(resume_state, run_dir, progress)
    summary = summarize(plain, t.cfg.image_size)
    if "weights" in facts:
        summary += f"\nStarting weights: `{facts['weights']['file']}` (sha1 {facts['weights']['sha1']})\n"
    start_run_dir(run_dir, t.cfg, device, resume_state is not None, summary, facts)
    counts = facts["parameters"]
    frozen = f", {counts['frozen']:,} frozen (conv1 to {t.cfg.freeze})" if counts["frozen"] else ""
    if "weights" in facts:
        frozen += f", from {Path(facts['weights']['file']).name} (sha1 {facts['weights']['sha1']})"
    sizes = f"{len(t.data.train)} train / {len(t.data.val)} val / {len(t.data.test)} test"
    log(
        f"Training GoogLeNet on {t.cfg.dataset} ({sizes}) at {t.cfg.image_size} px on {device} in "
        f"{resolve_amp(t.cfg.amp, device)[1]}, {t.cfg.epochs} epochs, "
        f"{counts['trainable']:,} trainable parameters{frozen}, run directory {run_dir}"
    )


def train_epochs(t: TrainingState, progress: Progress, run_dir: Path, board=None) -> None:
    """The epochs from `progress.start_epoch` on, each validated and saved (finish_epoch), until the last planned
    one or early stopping. Ctrl-C or SIGTERM stops at a step boundary with last.pt saved for --resume; divergence
    and a full disk stop with a one-line error that says what is kept."""
    epoch = progress.start_epoch
    last_epoch = progress.start_epoch if progress.finished else t.cfg.epochs  # a finished run resumed: evaluation only
    with StopOnInterrupt() as stop:
        try:
            for epoch in range(progress.start_epoch, last_epoch):
                start = time.perf_counter()
                reseed_for_epoch(t, progress, epoch)
                bar = progress_bar(
                    total=t.steps_per_epoch,
                    initial=progress.epoch_state.step,
                    desc=f"epoch {epoch + 1}/{t.cfg.epochs}",
                    unit="batch",
                    leave=False,
                )
                with bar:
                    train_one_epoch(t, epoch, progress.epoch_state, bar, stop)
                if finish_epoch(t, progress, epoch, start, run_dir, board):
                    break
                if stop.requested():  # Ctrl-C during validation or saving: stop now that the epoch is saved
                    raise TrainingInterrupted
        except TrainingDiverged as exc:
            last = run_dir / "weights" / "last.pt"
            kept = "no checkpoint was written"
            if epoch > 0 and last.is_file():
                kept = f"the last good checkpoint (epoch {len(progress.results)}) is kept in {last}"
            raise TrainingDiverged(f"{exc}; {kept}") from None
        except KeyboardInterrupt as exc:
            stop_interrupted(exc, run_dir, t, progress, epoch)
        except DiskFullError as exc:
            raise _disk_full(exc, run_dir) from None
        finally:
            if t.loader is not None:  # a streamed folder's workers: not needed by the final evaluation
                t.loader.close()
        if stop.requested():  # Ctrl-C while the last epoch was validated or saved: stop before the final evaluation
            stop_before_final_evaluation(run_dir)


def _disk_full(exc: DiskFullError, run_dir: Path) -> DiskFullError:
    """A full disk during training: the previous checkpoint is intact, so say how to resume."""
    if (run_dir / "weights" / "last.pt").is_file():
        return DiskFullError(exc.path, exc.reason, f"resume with googlenet train --resume {run_dir}")
    return DiskFullError(exc.path, exc.reason, "start the run again")
