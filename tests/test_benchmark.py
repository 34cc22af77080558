"""The benchmark command on a tiny budget (the speed-ups it times are tested in test_kernels.py)."""

from __future__ import annotations

import re

import pytest
import torch

from googlenet import benchmark
from googlenet.benchmark import conv1x1_shapes, matmul_peak_gflops
from googlenet.cli import main
from googlenet.model import GoogLeNet
from googlenet.runtime import resolve_amp


def test_matmul_peak_is_positive() -> None:
    gflops, shape = matmul_peak_gflops(torch.device("cpu"), [(64, 32, 16), (128, 128, 128)], repeats=2)
    assert gflops > 0 and shape in [(64, 32, 16), (128, 128, 128)]


def test_matmul_peak_is_the_best_shape_and_skips_larger_ones_after_a_slow_one(monkeypatch) -> None:
    """The shapes run from the fewest FLOPs up; the first slow one is the last (bf16 emulated on AVX2 took minutes)."""
    seconds = {
        (8, 8, 8): 1e-6,
        (16, 4, 32): 1e-7,
        (32, 32, 32): 1.0,
        (64, 64, 64): 1e-9,
    }  # the fastest is never reached
    timed = []

    def fake_time(a, b, device):
        timed.append((a.shape[0], a.shape[1], b.shape[1]))
        return seconds[timed[-1]]

    monkeypatch.setattr(benchmark, "_time_matmul", fake_time)
    gflops, shape = matmul_peak_gflops(torch.device("cpu"), list(seconds), repeats=2)
    assert timed == [(8, 8, 8)] * 3 + [(16, 4, 32)] * 3 + [(32, 32, 32)] * 3
    assert shape == (16, 4, 32) and gflops == 2 * 16 * 4 * 32 / 1e-7 / 1e9


@pytest.mark.parametrize("image_size, batch", [(32, 3), (64, 2)])
def test_conv1x1_shapes_are_the_networks(image_size, batch) -> None:
    """(batch x H x W, C_in, C_out) of conv2 and of inception3a, 4a and 5a's fused 1x1s, as the real model's maps."""
    model = GoogLeNet(num_classes=10, in_channels=1, aux_logits=False).eval()
    seen = {}
    for name in ("conv2", "inception3a", "inception4a", "inception5a"):
        getattr(model, name).register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0].shape))
    with torch.no_grad():
        model(torch.zeros(batch, 1, image_size, image_size))

    def out_channels(name: str) -> int:  # conv2's, or a block's ch1x1 + ch3x3red + ch5x5red
        if name == "conv2":
            return model.conv2[0].out_channels
        block = getattr(model, name)
        return block.branch1[0].out_channels + block.branch2[0][0].out_channels + block.branch3[0][0].out_channels

    expected = [(s[0] * s[2] * s[3], s[1], out_channels(name)) for name, s in seen.items()]
    assert conv1x1_shapes(image_size, batch) == expected


TINY = ["benchmark", "--image-size", "32", "--batch-size", "4", "--steps", "1", "--repeats", "2", "--warmup", "0"]


@pytest.fixture
def small_peak(monkeypatch) -> None:
    """The matmul peak from one small square (and the 1x1 convolutions' shapes): its large ones take seconds."""
    monkeypatch.setattr(benchmark, "SQUARES", ((256, 256, 256),))


def test_benchmark_command_tiny_budget(capsys, small_peak) -> None:
    assert main([*TINY, "--mode", "both", "--compare", "torchvision"]) == 0
    out = capsys.readouterr().out
    assert "train step, 32 px, batch 4" in out and "eval step, 32 px, batch 4" in out
    assert "googlenet (this project)" in out and "torchvision googlenet" in out
    ratios = [float(r) for r in re.findall(r"this project / torchvision: ([0-9.]+)x", out)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    # FLOPs per image are counted, not assumed: the training step costs more than inference.
    flops = {
        mode: float(
            re.search(rf"{mode} step.*?googlenet \(this project\)\s+\S+\s+\S+\s+([0-9,.]+)", out, re.S)
            .group(1)
            .replace(",", "")
        )
        for mode in ("train", "eval")
    }
    assert flops["train"] > 2 * flops["eval"]


def test_benchmark_variants_add_the_speedups_one_by_one(capsys, small_peak) -> None:
    """--variants (the evaluation step: the rows are the same in both modes, and a training step costs 3x)."""
    assert main([*TINY, "--mode", "eval", "--variants"]) == 0
    out = capsys.readouterr().out
    names = [line.strip().split("  ")[0] for line in out.splitlines() if line.startswith(("googlenet", "  "))]
    assert names[0] == "googlenet (this project)" and names[1:3] == ["plain: no speed-ups, NCHW", "+ channels_last"]
    assert "+ fast LRN" in names and names[-1] == "+ fused Adam (= this project)"
    assert "this project / torchvision" not in out  # no --compare


def test_benchmark_rejects_small_images(capsys) -> None:
    assert main(["benchmark", "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "minimum of 31" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--data-loading", "stream", "--mode", "eval"], "--mode train"),
        (["--workers", "2"], "add --data-loading stream"),
        (["--data", "imgs"], "add --data-loading stream"),
        (["--images", "300"], "add --data-loading stream"),
        (["--data-loading", "stream", "--data", "imgs", "--images", "300"], "leave one of them out"),
    ],
)
def test_benchmark_refuses_stream_options_it_would_ignore(capsys, flags, names) -> None:
    assert main(["benchmark", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_benchmark_under_autocast_uses_that_dtypes_peak(capsys, small_peak) -> None:
    args = [
        "benchmark",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--amp",
        "bf16",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bf16 autocast (--amp bf16); bf16 matmul peak" in out and "fp32" not in out


def test_benchmark_says_what_amp_auto_resolved_to_and_the_winning_shape(capsys) -> None:
    args = ["benchmark", "--image-size", "32", "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"steps, {resolve_amp('auto', torch.device('cpu'))[1]}; " in out  # the precision googlenet train runs here
    shapes = re.search(r"best of up to (\d+) GEMM shapes at (\d+)x(\d+) @ (\d+)x(\d+)", out)
    assert shapes and int(shapes.group(1)) == 7
    m, k, k2, n = (int(shapes.group(i)) for i in range(2, 6))
    assert k == k2 and (m, k, n) in [*benchmark.SQUARES, *benchmark.conv1x1_shapes(32, 2)]  # one of the shapes tried


def test_compile_times_compiled_models_without_the_cpu_speed_ups(capsys, monkeypatch, small_peak) -> None:
    """--compile hands torch.compile the plain network (custom autograd kernels would break its graphs);
    torch.compile itself is replaced here: compiling on a 2-core CPU takes minutes (scripts/gpu_check.sh runs it)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    args = ["benchmark", "--image-size", "32", "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--compile", "--compare", "torchvision"]) == 0
    assert "torch.compile" in capsys.readouterr().out
    ours, theirs = compiled
    speedups = ("fast", "fuse_1x1", "crop_kernels", "matmul_1x1", "matmul_small_maps")
    assert not any(getattr(m, flag, False) for m in ours.modules() for flag in speedups)
    assert isinstance(ours.conv1[1], torch.nn.ReLU)  # nor relu_after_pool1
    assert isinstance(theirs, benchmark.TorchvisionAdapter)
