"""Runtime helpers: the allocator setting of googlenet train and benchmark, and what --amp auto resolves to."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

import googlenet.data
import googlenet.distributed
from googlenet import rundir, runtime, state, train
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

AVX2 = {
    "architecture": "x86_64",
    "avx2": True,
    "avx512_f": False,
    "avx512_bf16": False,
    "amx_bf16": False,
    "amx_tile": False,
}


@pytest.mark.parametrize(
    "capabilities, unit",
    [
        # Sapphire Rapids and later
        (
            {**AVX2, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True},
            "AMX",
        ),
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
    [
        ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX"),
        ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"),
        ("fpu sse2 avx2", None),
    ],
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
        # T4, V100
        (
            None,
            "cuda",
            torch.float16,
            "fp16 autocast with gradient scaling (auto: the GPU has no native bf16)",
        ),
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


# ------------------------------------------------ what a GPU run decides, checked on the CPU


@pytest.mark.parametrize(
    "device, deterministic, tuned", [("cuda", False, True), ("cuda", True, False), ("cpu", False, False)]
)
def test_cudnn_benchmark_only_on_cuda_and_never_with_deterministic(monkeypatch, device, deterministic, tuned):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not tuned)  # the opposite first; restored after the test
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: None)  # not this process's for good
    runtime.configure_backends(torch.device(device), deterministic)
    assert torch.backends.cudnn.benchmark is tuned


def test_streamed_batches_are_pinned_for_a_gpu_only():
    from googlenet.data import stream

    split = googlenet.data.FileSplit([], torch.zeros(0, dtype=torch.int64), 1, 32)
    for device, pinned in (("cuda", True), ("cpu", False)):
        loader = stream._loader(stream.ImageFiles(split), [[]], 0, torch.device(device))
        assert loader.pin_memory is pinned


@pytest.mark.parametrize("device, backend", [("cuda", "nccl"), ("cpu", "gloo")])
def test_torchrun_uses_nccl_for_gpus_and_gloo_for_cpus(monkeypatch, device, backend):
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", chosen.append)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    googlenet.distributed.init(torch.device(device))
    assert chosen == [backend]


@pytest.mark.parametrize("amp, scaled", [("fp16", True), ("bf16", False), ("off", False)])
def test_fp16_trains_with_a_gradient_scaler_whose_state_a_resume_restores(amp, scaled):
    cfg = resolve_config(amp=amp, batch_size=8, limit_train_batches=1, epochs=1, image_size=32)
    data = googlenet.data.load_dataset("mnist", val_fraction=0.1, seed=0)
    data.train = googlenet.data.Split(data.train.images[:16], data.train.labels[:16])
    t = train.build_training(cfg, data, torch.device("cpu"))
    assert (t.scaler is not None) is scaled
    if not scaled:
        return
    progress = state.Progress()
    state.reseed_for_epoch(t, progress, 0)
    train.train_one_epoch(t, 0, progress.epoch_state)
    saved = state.checkpoint_state(t, progress, 0, per_rank=[(state.rng_state(t.augment_rng, t.device), {})])
    assert saved["scaler"]["scale"] == t.scaler.get_scale() and saved["scaler"]["_growth_tracker"] == 1
    fresh = train.build_training(cfg, data, torch.device("cpu"))
    fresh.scaler.load_state_dict(saved["scaler"])  # what resume.restore does with it
    assert fresh.scaler.state_dict() == t.scaler.state_dict()


def test_compile_gets_the_plain_network(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    data = googlenet.data.load_dataset("mnist", val_fraction=0.1, seed=0)
    t = train.build_training(resolve_config(compile=True, batch_size=8), data, torch.device("cpu"))
    assert compiled == [t.model]
    speedups = ("fast", "fuse_1x1", "crop_kernels", "matmul_1x1", "matmul_small_maps")
    assert not any(getattr(m, flag, False) for m in t.model.modules() for flag in speedups)


@pytest.mark.parametrize("unit, dtype", [("AMX", torch.bfloat16), (None, torch.float32)])
def test_training_runs_in_what_amp_auto_resolves_to_on_either_kind_of_processor(monkeypatch, unit, dtype):
    """Both branches of --amp auto on any machine: the processor's bf16 unit is injected (bf16 is emulated,
    slowly, where there is none: one step of 8 images)."""
    monkeypatch.setattr(runtime, "native_bf16", lambda: unit)
    data = googlenet.data.load_dataset("mnist", val_fraction=0.1, seed=0)
    t = train.build_training(resolve_config(batch_size=8, limit_train_batches=1), data, torch.device("cpu"))
    seen = []
    t.model.fc.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    progress = state.Progress()
    state.reseed_for_epoch(t, progress, 0)
    train.train_one_epoch(t, 0, progress.epoch_state)
    assert seen == [dtype]


# ------------------------------------------------------------------- progress in a log


def test_progress_in_a_log_is_a_line_every_interval(monkeypatch, capsys):
    """Outside a terminal (pytest's capture is not one) a bar becomes plain lines: none for work shorter than the
    interval, then one per interval with the count, rate and time left."""
    with runtime.progress_bar(total=10, desc="epoch 1/1", unit="batch", leave=False) as bar:
        bar.update(5)
    assert capsys.readouterr().out == ""  # quicker than LOG_EVERY: silent
    monkeypatch.setattr(runtime, "LOG_EVERY", 0.0)
    with runtime.progress_bar(total=10, desc="epoch 1/1", unit="batch", leave=False) as bar:
        for _ in range(10):
            bar.update(1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and all("\r" not in line for line in lines)
    assert lines[-1].startswith("epoch 1/1: 100%") and "10/10" in lines[-1] and "batch/s" in lines[-1]
