"""`googlenet benchmark`: throughput of the real training step and how close it runs to the hardware.

The step timed is the one `googlenet train` runs: the default config's batch
transform (augmentation included) on in-memory MNIST, the model in its memory
format, GoogLeNet's loss with the auxiliary heads, backward and the optimiser
step. FLOPs per image come from `torch.utils.flop_counter`; the machine's
matmul peak, in the precision timed (`--amp`, whose auto is what `googlenet
train` runs here), is the best of several GEMM shapes (squares up to 4096 and
the tall, thin multiplies of the network's 1x1 convolutions at this batch), so
the fraction of peak compares across processors; it is measured again at the
start of every repetition.
Variants are timed interleaved, repetition by repetition; img/s are medians,
and the fraction of peak and the ratios between variants are medians of
per-repetition ratios, so a noisy machine shifts both sides of each ratio
alike.
"""

from __future__ import annotations

import math
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import MAX_BATCH_SIZE, MAX_WORKERS, ConfigError, TrainConfig, check_count, check_image_size
from .data import (
    DIGITS,
    FileSplit,
    Preprocess,
    batch_transform,
    default_workers,
    eval_side,
    folder_splits,
    load_dataset,
    make_jpeg_folder,
    pipeline_images_per_second,
)
from .kernels import SPEEDUPS, accelerate
from .model import GoogLeNet, GoogLeNetOutput
from .recipe import build_optimizer
from .runtime import amp_dtype_for, needs_grad_scaler, resolve_amp, select_device
from .tables import format_table
from .train import train_step

__all__ = ["conv1x1_shapes", "make_step", "matmul_peak_gflops", "run_benchmark"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# (M, K, N) of square multiplies: each (M x K) @ (K x N) costs 2 M K N FLOPs.
SQUARES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096))


def _pooled(side: int) -> int:
    """A map's side after Caffe's 3x3/2 max pool, rounded up (model.max_pool)."""
    return -(-(side - 3) // 2) + 1


def conv1x1_shapes(image_size: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of the GEMMs the network's 1x1 convolutions run as at this size and batch: (batch x H x W) x C_in @
    C_in x C_out.

    One per map size: conv2's, and the fused 1x1s (kernels.fuse_1x1) of inception3a, 4a and 5a,
    whose outputs are the ch1x1 + ch3x3red + ch5x5red columns of Table 1.
    """
    side = _pooled((image_size - 1) // 2 + 1)  # conv1 (7x7/2, padding 3), then maxpool1
    shapes = [(batch_size * side**2, 64, 64)]  # conv2
    for in_channels, out_channels in ((192, 64 + 96 + 16), (480, 192 + 96 + 16), (832, 256 + 160 + 32)):
        side = _pooled(side)  # maxpool2, 3, 4 (conv3 keeps the side)
        shapes.append((batch_size * side**2, in_channels, out_channels))
    return shapes


def _time_matmul(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> float:
    t = time.perf_counter()
    a @ b
    _sync(device)
    return time.perf_counter() - t


def matmul_peak_gflops(
    device: torch.device,
    shapes: Collection[tuple[int, int, int]] = SQUARES,
    repeats: int = 8,
    dtype: torch.dtype = torch.float32,
    slow_s: float = 0.1,
) -> tuple[float, tuple[int, int, int]]:
    """The best GFLOP/s of (M x K) @ (K x N) multiplies in `dtype` over `shapes`, and the (M, K, N) that reached it.

    No single shape shows every processor's peak (a large square suits one, the tall, thin
    multiplies of 1x1 convolutions another), so the peak is the best over several. They run
    from the fewest FLOPs up, and after the first shape slower than `slow_s` the larger ones
    are skipped, so a dtype the processor only emulates (bf16 without AMX or AVX512-BF16) is
    measured in seconds, not minutes.
    """
    best, best_shape = 0.0, (0, 0, 0)
    for m, k, n in sorted(set(shapes), key=lambda shape: (math.prod(shape), shape)):
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        # The fastest of 1 + `repeats` multiplies (the first may include choosing or compiling a kernel).
        seconds = min(_time_matmul(a, b, device) for _ in range(1 + repeats))
        if 2 * m * k * n / seconds / 1e9 > best:
            best, best_shape = 2 * m * k * n / seconds / 1e9, (m, k, n)
        if seconds > slow_s:
            break
    return best, best_shape


def gemm_name(shape: tuple[int, int, int]) -> str:
    m, k, n = shape
    return f"{m}x{k} @ {k}x{n}"


class TorchvisionAdapter(nn.Module):
    """torchvision's googlenet behind GoogLeNet's interface: 1-channel input repeated to 3, outputs as
    GoogLeNetOutput."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        out = self.model(x.expand(-1, 3, -1, -1))  # torchvision's googlenet takes 3 channels
        if isinstance(out, torch.Tensor):  # eval mode: the logits alone
            return GoogLeNetOutput(out)
        # torchvision's order is (logits, aux2, aux1)
        return GoogLeNetOutput(out.logits, out.aux_logits1, out.aux_logits2)


def make_step(
    model: nn.Module,
    cfg: TrainConfig,
    batch: tuple[torch.Tensor, torch.Tensor],
    pre: Preprocess,
    train: bool,
    device: torch.device,
    channels_last: bool,
    fused_optimizer: bool = True,
) -> Callable[[], None]:
    """One training step exactly as `googlenet train` runs it (`train.train_step` after the batch transform),
    or one inference step; under torch.compile with `cfg.compile`."""
    images, labels = batch
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device, fused=fused_optimizer)
    gen = torch.Generator().manual_seed(0)
    amp = amp_dtype_for(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(amp) else None  # fp16, as googlenet train
    step_model = torch.compile(model) if cfg.compile else model

    def step() -> None:
        x = batch_transform(images, pre, DIGITS if train else None, gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if train:
            train_step(step_model, x, labels, optimizer, cfg, amp, scaler)
        else:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                step_model(x)

    model.train(train)
    return step


def data_pipeline_ms(images: torch.Tensor, pre: Preprocess, train: bool, device: torch.device, repeats: int) -> float:
    """Median time of the batch transform alone (what `googlenet train` does to each batch before the model)."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(max(repeats, 3)):
        t = time.perf_counter()
        x = batch_transform(images, pre, DIGITS if train else None, gen).contiguous(memory_format=torch.channels_last)
        _sync(device)
        times.append(1000 * (time.perf_counter() - t))
    del x
    return statistics.median(times)


def count_step_flops(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def check_arguments(args) -> None:
    """Refuse settings out of bounds, and stream options the run would ignore, before anything is loaded."""
    check_image_size(args.image_size)
    check_count("--batch-size", args.batch_size, MAX_BATCH_SIZE)  # the training bound (config.py): memory
    if min(args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0:
        raise ConfigError("--batch-size, --steps and --repeats must be positive and --warmup not negative")
    streaming = args.data_loading == "stream"
    if streaming and args.mode == "eval":
        raise ConfigError(
            "--data-loading stream times the training pipeline beside the training step: use --mode train or --mode "
            "both"
        )
    if not streaming and (args.data or args.workers is not None or args.images is not None):
        raise ConfigError(
            "--data, --workers and --images set what the streamed pipeline reads: add --data-loading stream"
        )
    if args.data and args.images is not None:
        raise ConfigError(
            "--images sets how many synthetic JPEGs to make when there is no --data: leave one of them out"
        )
    if args.images is not None:
        check_images(args.images)  # before anything is loaded


def run_benchmark(args) -> None:
    """Time the variants interleaved and print img/s, GFLOP/s and the fraction of the matmul peak."""
    check_arguments(args)
    device = select_device(args.device)
    cfg = replace(
        TrainConfig(), image_size=args.image_size, batch_size=args.batch_size, amp=args.amp, compile=args.compile
    )
    # The peak that matters is that of the dtype the matrix multiplies run in (AMX's bf16 peak is 6x its fp32 one).
    amp, described = resolve_amp(cfg.amp, device)  # auto: what googlenet train runs on this machine
    data = load_dataset("mnist", val_fraction=cfg.val_fraction, seed=cfg.seed)
    pre = Preprocess.for_dataset(data, args.image_size)
    batch = data.train.images[: args.batch_size].to(device), data.train.labels[: args.batch_size].to(device)
    streamed = streamed_pipeline(args) if args.data_loading == "stream" else None  # before the model: alone
    for mode in ["train", "eval"] if args.mode == "both" else [args.mode]:
        train = mode == "train"
        variants = step_variants(args, cfg, data, batch, pre, train, device)
        timing = time_variants(variants, args, device, amp or torch.float32)
        print(f"{mode} step, {args.image_size} px, batch {args.batch_size}, {timing.heading(device, args, described)}")
        print(
            format_table(
                ["model", "img/s", "range", "MFLOP/img", "GFLOP/s", "of peak", "vs ours"], timing.rows(), "text"
            )
        )
        step_ms = 1000 * args.batch_size / statistics.median(timing.rates[OURS])
        data_ms = data_pipeline_ms(batch[0], pre, train, device, args.repeats * args.steps)
        what = f"index, {'augment, ' if train else ''}resize, normalise"
        print(f"data pipeline ({what}): {data_ms:.1f} ms per batch = {100 * data_ms / step_ms:.1f}% of the step")
        if streamed is not None and train:
            print(streamed_pipeline_line(*streamed, statistics.median(timing.rates[OURS])))
        if args.compare == "torchvision":
            ratio = statistics.median(a / b for a, b in zip(timing.rates[OURS], timing.rates[TORCHVISION]))
            print(f"this project / torchvision: {ratio:.2f}x (median of the {args.repeats} repetitions' ratios)")
        print()


OURS, TORCHVISION = "googlenet (this project)", "torchvision googlenet"


def step_variants(
    args, cfg: TrainConfig, data, batch, pre: Preprocess, train: bool, device: torch.device
) -> dict[str, Callable[[], None]]:
    """The steps to time, by name: this project's; with --variants its speed-ups one by one; torchvision's."""

    def ours(on: Collection[str] = tuple(SPEEDUPS)) -> nn.Module:
        torch.manual_seed(0)
        return accelerate(GoogLeNet(data.num_classes, data.channels), () if cfg.compile else on)  # compiled: plain ops

    def step(model: nn.Module, channels_last: bool, **kwargs) -> Callable[[], None]:
        return make_step(model, cfg, batch, pre, train, device, channels_last, **kwargs)

    variants = {OURS: step(ours(), cfg.channels_last)}
    if args.variants:  # the speed-ups one by one, each added to the previous ones
        variants["  plain: no speed-ups, NCHW"] = step(ours(()), False, fused_optimizer=False)
        variants["  + channels_last"] = step(ours(()), True, fused_optimizer=False)
        for i, label in enumerate(SPEEDUPS.values(), start=1):
            variants[f"  + {label}"] = step(ours(list(SPEEDUPS)[:i]), True, fused_optimizer=False)
        variants["  + fused Adam (= this project)"] = step(ours(), True)
    if args.compare == "torchvision":
        torch.manual_seed(0)
        tv = torchvision.models.googlenet(
            weights=None, aux_logits=True, init_weights=True, num_classes=data.num_classes
        )
        variants[TORCHVISION] = step(TorchvisionAdapter(tv), False)
    return variants


@dataclass
class Timing:
    """Per-variant img/s and FLOPs per image, and the matmul peak measured beside them, per repetition."""

    flops: dict[str, float]
    rates: dict[str, list[float]]
    peaks: list[float]
    winners: list[tuple[int, int, int]]
    shapes: int  # GEMM shapes tried for the peak
    dtype: torch.dtype

    def heading(self, device: torch.device, args, described: str) -> str:
        threads = torch.get_num_threads() if device.type == "cpu" else "-"
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        peak = statistics.median(self.peaks)
        return (
            f"{device} ({threads} threads), median of {args.repeats} x {args.steps} steps"
            f"{', torch.compile' if args.compile else ''}, {described}; {precision} matmul peak {peak:,.1f} GFLOP/s "
            f"(median; {min(self.peaks):,.1f}-{max(self.peaks):,.1f}), best of up to {self.shapes} GEMM shapes at "
            f"{gemm_name(statistics.mode(self.winners))}"
        )

    def rows(self) -> list[tuple[str, ...]]:
        """A table row per variant; the fraction of peak and the ratio to ours are medians of per-repetition ratios."""
        rows = []
        for name, r in self.rates.items():
            ips, flops = statistics.median(r), self.flops[name]
            of_peak = statistics.median(rate * flops / 1e9 / p for rate, p in zip(r, self.peaks))
            vs_ours = statistics.median(a / b for a, b in zip(r, self.rates[OURS]))
            rows.append((name, f"{ips:,.1f}", f"{min(r):,.1f}-{max(r):,.1f}", f"{flops / 1e6:,.1f}"))
            rows[-1] += (f"{ips * flops / 1e9:,.1f}", f"{100 * of_peak:.0f}%", f"{vs_ours:.2f}")
        return rows


def time_variants(variants: dict[str, Callable[[], None]], args, device: torch.device, dtype: torch.dtype) -> Timing:
    """Warm up, then time every variant in each repetition, beside a fresh measurement of the matmul peak."""
    shapes = [*SQUARES, *conv1x1_shapes(args.image_size, args.batch_size)]
    flops = {name: count_step_flops(step) / args.batch_size for name, step in variants.items()}
    for step in variants.values():
        for _ in range(args.warmup):
            step()
    _sync(device)
    timing = Timing(flops, {name: [] for name in variants}, [], [], len(set(shapes)), dtype)
    for _ in range(args.repeats):
        # The peak is measured in every repetition, next to the steps it is compared with:
        # the fraction of peak is a ratio within one moment of a machine whose speed moves.
        gflops, shape = matmul_peak_gflops(device, shapes, repeats=3, dtype=dtype)
        timing.peaks.append(gflops)
        timing.winners.append(shape)
        for name, step in variants.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            _sync(device)
            timing.rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
    return timing


# --images: synthetic JPEGs of 256-500 px are about 56 kB each and take about 8 ms each to make (one core), so
# 20,000 fill about 1.1 GB of $TMPDIR in about 3 minutes; the timing reads (steps x repeats + 2) batches, 6,656
# images at the defaults (10 x 5 steps of 128), which 20,000 cover three times over.
DEFAULT_IMAGES = 2000
MAX_IMAGES = 20_000


def check_images(images: object) -> None:
    """--images within [1, MAX_IMAGES]: the temporary folder must not fill the disk."""
    if isinstance(images, bool) or not isinstance(images, int) or not 1 <= images <= MAX_IMAGES:
        raise ConfigError(
            f"--images must be an integer from 1 to {MAX_IMAGES:,} (the synthetic JPEGs, about 56 kB each, go to a "
            f"temporary folder: {MAX_IMAGES:,} are about 1.1 GB), got {images!r}: use --images {MAX_IMAGES} or less, "
            "or --data FOLDER for a larger set"
        )


class TerminateAsInterrupt:
    """SIGTERM raises KeyboardInterrupt inside the block, as Ctrl-C does, so that the `with` blocks it leaves clean up
    (the temporary folder of JPEGs); a repeated SIGTERM is ignored until the block is left (the cleanup is not cut
    short), then the previous handler is back. Main thread only (elsewhere Python cannot set handlers): a no-op."""

    def __enter__(self) -> TerminateAsInterrupt:
        self.previous: object = None
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.signalled = False
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.signalled:
            self.signalled = True
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous if self.previous is not None else signal.SIG_DFL)


def streamed_pipeline(args) -> tuple[float, int, str]:
    """`--data-loading stream`: (images per second, workers, what was read) of the streamed training pipeline alone
    (stream.pipeline_images_per_second) over --data PATH, or over a temporary folder of --images synthetic JPEGs,
    removed on every way out: an error, Ctrl-C or SIGTERM (see TerminateAsInterrupt)."""
    workers = default_workers() if args.workers is None else args.workers
    check_count("--workers", workers, MAX_WORKERS, low=0)
    images = DEFAULT_IMAGES if args.images is None else args.images
    check_images(images)
    if args.data:
        return _pipeline_rate(Path(args.data), args, workers), workers, f"the training split of {args.data}"
    with TerminateAsInterrupt(), tempfile.TemporaryDirectory(prefix="googlenet-jpegs-") as tmp:
        print(f"making {images:,} synthetic JPEGs of 256-500 px in a temporary folder ...", flush=True)
        rate = _pipeline_rate(make_jpeg_folder(Path(tmp), images), args, workers)
    return rate, workers, f"{images:,} synthetic 256-500 px JPEGs"


def _pipeline_rate(root: Path, args, workers: int) -> float:
    splits, _, channels = folder_splits(root, 0.1, 0)
    split = FileSplit(*splits["train"], channels, eval_side(args.image_size), workers)
    return pipeline_images_per_second(split, args.image_size, args.batch_size, batches=args.steps * args.repeats)


def streamed_pipeline_line(rate: float, workers: int, what: str, step_rate: float) -> str:
    """The streamed pipeline's img/s beside the training step's, and which of the two limits training."""
    verdict = (
        "keeps up with the step"
        if rate >= step_rate
        else f"is the bottleneck: {step_rate / rate:.1f}x slower than the step"
    )
    return (
        f"streamed data pipeline (read, decode, random-resized crop, flip; {workers} worker(s), {what}): "
        f"{rate:,.0f} img/s vs the training step's {step_rate:,.0f} img/s: it {verdict}"
    )
