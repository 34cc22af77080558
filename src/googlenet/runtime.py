"""Device and process helpers: which device to train on, autocast, the allocator, the main-process log."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed as dist_utils
from .config import ConfigError, TrainConfig

__all__ = [
    "amp_dtype_for",
    "configure_backends",
    "cpu_name",
    "keep_freed_memory",
    "log",
    "native_bf16",
    "native_bf16_unit",
    "needs_grad_scaler",
    "on_terminal",
    "progress_bar",
    "resolve_amp",
    "select_device",
]

CPUINFO = Path("/proc/cpuinfo")  # Linux's processor description: the model name and the instruction-set flags
# The dtypes of config.CHOICES["amp"] but auto, which resolve_amp picks per device.
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Detect:
    """The default of an injectable capability: ask the hardware."""


DETECT = Detect()


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


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `cfg.amp` on `device`, or None for float32."""
    return resolve_amp(cfg.amp, device)[0]


def resolve_amp(
    amp: str, device: torch.device, bf16_unit: str | None | Detect = DETECT
) -> tuple[torch.dtype | None, str]:
    """The autocast dtype of `--amp amp` on `device` (None: float32) and what runs, and why, in words.

    auto: bf16 where the device multiplies bf16 natively (a CPU with AMX or AVX512-BF16, a GPU of
    compute capability 8.0 or later); fp16 with a gradient scaler on older GPUs (T4, V100), which
    have fp16 units but emulate bf16; fp32 on other CPUs, where bf16 is emulated and autocast many
    times slower (docs/experiments.md). `bf16_unit` is the device's native bf16 unit as
    `native_bf16_unit` reports it; tests pass it to run every branch on any machine.
    """
    if amp != "auto":
        dtype = AMP_DTYPES[amp]
        return dtype, f"{amp} autocast (--amp {amp})" if dtype else "fp32 (--amp off)"
    if device.type not in ("cpu", "cuda"):
        return None, f"fp32 (auto: autocast on CUDA and native-bf16 CPUs only, not {device.type})"
    unit = native_bf16_unit(device) if bf16_unit is DETECT else bf16_unit
    if unit:
        return torch.bfloat16, f"bf16 autocast (auto: the {'GPU' if device.type == 'cuda' else 'processor'} has {unit})"
    if device.type == "cuda":
        return torch.float16, "fp16 autocast with gradient scaling (auto: the GPU has no native bf16)"
    return None, "fp32 (auto: no native bf16 on this processor)"


def native_bf16_unit(device: torch.device) -> str | None:
    """What multiplies bf16 natively on `device`, in words, or None: the CPU's unit, or the GPU's capability."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        major, minor = torch.cuda.get_device_capability(device)
        return f"compute capability {major}.{minor}"
    return native_bf16() if device.type == "cpu" else None


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling (torch.amp.GradScaler); bf16 has float32's range."""
    return dtype == torch.float16


def native_bf16() -> str | None:
    """The processor's unit that multiplies bf16 natively, "AMX" or "AVX512-BF16", or None (none, or not known)."""
    if hasattr(torch.cpu, "get_capabilities"):  # what PyTorch detects (cpuinfo), in recent versions
        flags = {name for name, present in torch.cpu.get_capabilities().items() if present is True}
    else:  # the flags Linux reports; elsewhere not known
        try:
            lines = CPUINFO.read_text().splitlines()
        except OSError:
            return None
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """--deterministic: deterministic algorithms (and cuBLAS's fixed workspace). Otherwise, on CUDA, cuDNN
    times its convolution algorithms once per input shape and keeps the fastest (a training run's shapes
    never change), which may pick differently from run to run: so only without --deterministic."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


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
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def cpu_name() -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(msg: str) -> None:
    """Print on the main process only (every process runs the same code under torchrun)."""
    if dist_utils.is_main():
        print(msg, flush=True)


LOG_EVERY = 30.0  # seconds between progress lines in a log file (Ultralytics and Lightning print about as often)


def on_terminal() -> bool:
    """Whether progress is shown as a live bar (the main process, on a terminal) rather than as lines in a log."""
    return sys.stderr.isatty() and dist_utils.is_main()


class _Lines:
    """A file for tqdm that turns each refresh into a line of its own: a log has no carriage returns."""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            print(text, flush=True)

    def flush(self) -> None:
        pass


def progress_bar(**kwargs) -> tqdm:
    """tqdm's bar on a terminal; in a log, its line (done, rate, ETA) at most every LOG_EVERY seconds, none for
    shorter work; nothing on torchrun's other processes."""
    if not dist_utils.is_main():
        return tqdm(disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(**kwargs)
    return tqdm(file=_Lines(), mininterval=LOG_EVERY, delay=LOG_EVERY, ascii=True, **kwargs)
