"""Runtime helpers: the allocator setting of googlenet train and benchmark, and what --amp auto resolves to."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from googlenet import rundir, runtime
from googlenet.config import resolve_config
from googlenet.runtime import keep_freed_memory

# ------------------------------------------------------------------- allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """Without it glibc maps tensors over 32 MB from the kernel (above the heap's end) and unmaps them on free."""
    assert keep_freed_memory()
    sbrk = ctypes.CDLL("libc.so.6").sbrk
    sbrk.restype = ctypes.c_void_p
    big = torch.empty(64 * 2**20 // 4)  # 64 MB: beyond any mmap threshold glibc allows
    assert big.data_ptr() < sbrk(0)  # inside the heap, below its current end


# ------------------------------------------------------------------- --amp auto

AVX2 = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False}


@pytest.mark.parametrize(
    "capabilities, unit",
    [
        ({**AVX2, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}, "AMX"),  # Sapphire Rapids and later
        ({**AVX2, "avx512_f": True, "avx512_bf16": True}, "AVX512-BF16"),  # Zen 4/5, Cooper Lake
        ({**AVX2, "avx512_f": True}, None),  # AVX-512 without bf16 (Skylake-X)
        (AVX2, None),
        ({"architecture": "arm64", "neon": True, "bf16": True}, None),  # not a unit this project knows: fp32
        ({}, None),
    ],
)
def test_native_bf16_reads_pytorchs_processor_capabilities(monkeypatch, capabilities, unit):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    assert runtime.native_bf16() == unit


@pytest.mark.parametrize(
    "flags, unit",
    [("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX"), ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"), ("fpu sse2 avx2", None)],
)
def test_native_bf16_falls_back_to_the_linux_flags(monkeypatch, tmp_path, flags, unit):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # a PyTorch without it
    monkeypatch.setattr(runtime, "CPUINFO", cpuinfo)
    assert runtime.native_bf16() == unit
    monkeypatch.setattr(runtime, "CPUINFO", tmp_path / "missing")  # not Linux: not known, so fp32
    assert runtime.native_bf16() is None


@pytest.mark.parametrize(
    "unit, device, dtype, said",
    [
        ("AMX", "cpu", torch.bfloat16, "bf16 autocast (auto: the processor has AMX)"),
        ("AVX512-BF16", "cpu", torch.bfloat16, "bf16 autocast (auto: the processor has AVX512-BF16)"),
        (None, "cpu", None, "fp32 (auto: no native bf16 on this processor)"),  # AVX2 only, or not known
        ("compute capability 9.0", "cuda", torch.bfloat16, "bf16 autocast (auto: the GPU has compute capability 9.0)"),
        (None, "cuda", torch.float16, "fp16 autocast with gradient scaling (auto: the GPU has no native bf16)"),  # T4, V100
        ("AMX", "mps", None, "fp32 (auto: autocast on CUDA and native-bf16 CPUs only, not mps)"),
    ],
)
def test_amp_auto_resolves_by_the_devices_bf16_unit(unit, device, dtype, said):
    assert runtime.resolve_amp("auto", torch.device(device), bf16_unit=unit) == (dtype, said)
    assert runtime.needs_grad_scaler(dtype) == (dtype == torch.float16)


@pytest.mark.parametrize("unit", ["AMX", None])
def test_amp_auto_asks_the_processor_by_default(monkeypatch, unit):
    monkeypatch.setattr(runtime, "native_bf16", lambda: unit)
    assert runtime.native_bf16_unit(torch.device("cpu")) == unit
    expected = torch.bfloat16 if unit else None
    assert runtime.resolve_amp("auto", torch.device("cpu"))[0] == expected
    assert runtime.amp_dtype_for(resolve_config(amp="auto"), torch.device("cpu")) == expected


@pytest.mark.parametrize("native, unit", [(True, "compute capability 8.0"), (False, None)])
def test_a_gpu_has_native_bf16_only_where_pytorch_says_so_without_emulation(monkeypatch, native, unit):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["emulation"] = including_emulation
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert runtime.native_bf16_unit(torch.device("cuda", 0)) == unit
    assert asked == {"emulation": False}  # a T4 emulates bf16: not native


def test_explicit_amp_ignores_the_processor(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: "AMX")
    cpu = torch.device("cpu")
    assert runtime.resolve_amp("off", cpu) == (None, "fp32 (--amp off)")
    assert runtime.resolve_amp("bf16", cpu) == (torch.bfloat16, "bf16 autocast (--amp bf16)")
    assert runtime.resolve_amp("fp16", cpu) == (torch.float16, "fp16 autocast (--amp fp16)")


def test_env_json_records_the_precision_that_ran(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: "AVX512-BF16")
    env = rundir.environment(resolve_config(), torch.device("cpu"))
    assert env["precision"] == "bf16 autocast (auto: the processor has AVX512-BF16)"
    assert rundir.environment(resolve_config(amp="off"), torch.device("cpu"))["precision"] == "fp32 (--amp off)"
