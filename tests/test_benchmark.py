"""The benchmark command on a tiny budget (the speed-ups it times are tested in test_kernels.py)."""

from __future__ import annotations

import re

import torch

from googlenet.benchmark import matmul_peak_gflops
from googlenet.cli import main


def test_matmul_peak_is_positive() -> None:
    assert matmul_peak_gflops(torch.device("cpu"), n=128, repeats=2) > 0


def test_benchmark_command_tiny_budget(capsys) -> None:
    args = ["benchmark", "--image-size", "32", "--batch-size", "4", "--steps", "1", "--repeats", "2", "--warmup", "0"]
    assert main([*args, "--mode", "both", "--compare", "torchvision", "--variants"]) == 0
    out = capsys.readouterr().out
    assert "train step, 32 px, batch 4" in out and "eval step, 32 px, batch 4" in out
    for name in ("googlenet (this project)", "torchvision googlenet", "+ fast LRN", "+ channels_last"):
        assert name in out
    ratios = [float(r) for r in re.findall(r"this project / torchvision: ([0-9.]+)x", out)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    # FLOPs per image are counted, not assumed: the training step costs more than inference.
    flops = {mode: float(re.search(rf"{mode} step.*?googlenet \(this project\)\s+\S+\s+\S+\s+([0-9,.]+)", out, re.S).group(1).replace(",", "")) for mode in ("train", "eval")}
    assert flops["train"] > 2 * flops["eval"]


def test_benchmark_rejects_small_images(capsys) -> None:
    assert main(["benchmark", "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "minimum of 31" in err and "Traceback" not in err


def test_benchmark_under_autocast_uses_that_dtypes_peak(capsys) -> None:
    args = ["benchmark", "--image-size", "32", "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0", "--amp", "bf16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bf16 autocast; bf16 matmul peak" in out and "fp32" not in out
