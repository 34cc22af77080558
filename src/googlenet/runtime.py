"""Device and process helpers: which device to train on, autocast, the allocator, the main-process log."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

from . import distributed as dist_utils
from .config import ConfigError, TrainConfig

__all__ = ["amp_dtype_for", "cpu_name", "keep_freed_memory", "log", "select_device"]


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
    # On CPUs without native bf16 autocast is many times slower, so auto means
    # bf16 on CUDA only (docs/experiments.md has the CPU figure).
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(msg: str) -> None:
    """Print on the main process only (every process runs the same code under torchrun)."""
    if dist_utils.is_main():
        print(msg, flush=True)
