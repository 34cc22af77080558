"""`googlenet benchmark`: throughput of the real training step and how close it runs to the hardware.

The step timed is the one `googlenet train` runs: the default config's batch
transform (augmentation included) on in-memory MNIST, the model in its memory
format, GoogLeNet's loss with the auxiliary heads, backward and the optimiser
step. FLOPs per image come from `torch.utils.flop_counter`; the machine's
matmul peak (fp32, or the autocast dtype with `--amp`) is the best of a few
large matrix multiplies, measured again at the start of every repetition.
Variants are timed interleaved, repetition by repetition; img/s are medians,
and the fraction of peak and the ratios between variants are medians of
per-repetition ratios, so a noisy machine shifts both sides of each ratio
alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection
from dataclasses import replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import MAX_BATCH_SIZE, ConfigError, TrainConfig, check_count, check_image_size
from .data import DIGITS, Preprocess, batch_transform, load_dataset
from .kernels import SPEEDUPS, accelerate
from .model import GoogLeNet, GoogLeNetOutput
from .runtime import amp_dtype_for, select_device
from .tables import format_table
from .train import build_optimizer, train_step

__all__ = ["make_step", "matmul_peak_gflops", "run_benchmark"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n matrix multiply (2 n^3 FLOPs each) in `dtype`.

    The side grows from 256 to `n` only while one multiply takes under 0.1 s, so a dtype
    the processor only emulates (bf16 without AMX or AVX512-BF16) is measured in seconds, not minutes.
    """
    side = min(256, n)
    while True:
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        t = time.perf_counter()
        a @ b
        _sync(device)
        if side >= n or time.perf_counter() - t > 0.1:
            break
        side = min(2 * side, n)
    n = side
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


class TorchvisionAdapter(nn.Module):
    """torchvision's googlenet behind GoogLeNet's interface: 1-channel input repeated to 3, outputs as GoogLeNetOutput."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> GoogLeNetOutput:
        out = self.model(x.expand(-1, 3, -1, -1))  # torchvision's googlenet takes 3 channels
        if isinstance(out, torch.Tensor):  # eval mode: the logits alone
            return GoogLeNetOutput(out)
        return GoogLeNetOutput(out.logits, out.aux_logits1, out.aux_logits2)  # torchvision's order is (logits, aux2, aux1)


def make_step(model: nn.Module, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor, pre: Preprocess, train: bool, device: torch.device, channels_last: bool, fused_optimizer: bool = True) -> Callable[[], None]:
    """One training step exactly as `googlenet train` runs it (`train.train_step` after the batch transform), or one inference step."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device, fused=fused_optimizer)
    gen = torch.Generator().manual_seed(0)
    amp = amp_dtype_for(cfg, device)

    def step() -> None:
        x = batch_transform(images, pre, DIGITS if train else None, gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if train:
            train_step(model, x, labels, optimizer, cfg, amp)
        else:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                model(x)

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


def run_benchmark(args) -> None:
    """Time the variants interleaved and print img/s, GFLOP/s and the fraction of the matmul peak."""
    check_image_size(args.image_size)
    check_count("--batch-size", args.batch_size, MAX_BATCH_SIZE)  # the training bound (config.py): memory
    if min(args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0:
        raise ConfigError("--batch-size, --steps and --repeats must be positive and --warmup not negative")
    device = select_device(args.device)
    cfg = replace(TrainConfig(), image_size=args.image_size, batch_size=args.batch_size, amp=args.amp)
    # The peak that matters is that of the dtype the matrix multiplies run in (AMX's bf16 peak is 6x its fp32 one).
    peak_dtype = amp_dtype_for(cfg, device) or torch.float32
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[peak_dtype]
    data = load_dataset("mnist", val_fraction=cfg.val_fraction, seed=cfg.seed)
    pre = Preprocess.for_dataset(data, args.image_size)
    images = data.train.images[: args.batch_size].to(device)
    labels = data.train.labels[: args.batch_size].to(device)
    modes = ["train", "eval"] if args.mode == "both" else [args.mode]

    def ours(on: Collection[str] = tuple(SPEEDUPS)) -> nn.Module:
        torch.manual_seed(0)
        return accelerate(GoogLeNet(data.num_classes, data.channels), on)

    for mode in modes:
        train = mode == "train"
        variants: dict[str, Callable[[], None]] = {
            "googlenet (this project)": make_step(ours(), cfg, images, labels, pre, train, device, cfg.channels_last)
        }
        if args.variants:  # the speed-ups one by one, each added to the previous ones
            plain = {"fused_optimizer": False}
            variants["  plain: no speed-ups, NCHW"] = make_step(ours(()), cfg, images, labels, pre, train, device, False, **plain)
            variants["  + channels_last"] = make_step(ours(()), cfg, images, labels, pre, train, device, True, **plain)
            for i, label in enumerate(SPEEDUPS.values(), start=1):
                variants[f"  + {label}"] = make_step(ours(list(SPEEDUPS)[:i]), cfg, images, labels, pre, train, device, True, **plain)
            variants["  + fused Adam (= this project)"] = make_step(ours(), cfg, images, labels, pre, train, device, True)
        if args.compare == "torchvision":
            import torchvision

            torch.manual_seed(0)
            tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, num_classes=data.num_classes)
            variants["torchvision googlenet"] = make_step(TorchvisionAdapter(tv), cfg, images, labels, pre, train, device, False)

        flops = {name: count_step_flops(step) / args.batch_size for name, step in variants.items()}
        for step in variants.values():
            for _ in range(args.warmup):
                step()
        _sync(device)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        peaks: list[float] = []
        for _ in range(args.repeats):
            # The peak is measured in every repetition, next to the steps it is compared with:
            # the fraction of peak is a ratio within one moment of a machine whose speed moves.
            peaks.append(matmul_peak_gflops(device, repeats=3, dtype=peak_dtype))
            for name, step in variants.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                _sync(device)
                rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
        data_ms = data_pipeline_ms(images, pre, train, device, args.repeats * args.steps)

        ours_rates = rates["googlenet (this project)"]
        base = statistics.median(ours_rates)
        peak = statistics.median(peaks)
        rows = []
        for name, r in rates.items():
            ips = statistics.median(r)
            of_peak = statistics.median(rate * flops[name] / 1e9 / p for rate, p in zip(r, peaks))
            vs_ours = statistics.median(a / b for a, b in zip(r, ours_rates))
            rows.append((name, f"{ips:,.1f}", f"{min(r):,.1f}-{max(r):,.1f}", f"{flops[name] / 1e6:,.1f}", f"{ips * flops[name] / 1e9:,.1f}", f"{100 * of_peak:.0f}%", f"{vs_ours:.2f}"))
        threads = torch.get_num_threads() if device.type == "cpu" else "-"
        print(
            f"{mode} step, {args.image_size} px, batch {args.batch_size}, {device} ({threads} threads), "
            f"median of {args.repeats} x {args.steps} steps{'' if precision == 'fp32' else f', {precision} autocast'}; "
            f"{precision} matmul peak {peak:,.1f} GFLOP/s "
            f"(median; {min(peaks):,.1f}-{max(peaks):,.1f})"
        )
        print(format_table(["model", "img/s", "range", "MFLOP/img", "GFLOP/s", "of peak", "vs ours"], rows, "text"))
        step_ms = 1000 * args.batch_size / base
        print(f"data pipeline (index, {'augment, ' if train else ''}resize, normalise): {data_ms:.1f} ms per batch = {100 * data_ms / step_ms:.1f}% of the step")
        if args.compare == "torchvision":
            ratio = statistics.median(a / b for a, b in zip(ours_rates, rates["torchvision googlenet"]))
            print(f"this project / torchvision: {ratio:.2f}x (median of the {args.repeats} repetitions' ratios)")
        print()
