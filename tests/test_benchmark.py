"""The benchmark command on a tiny budget, and the exactness of every speed-up it times."""

from __future__ import annotations

import re

import pytest
import torch

from googlenet.benchmark import SPEEDUPS, matmul_peak_gflops, set_speedups
from googlenet.cli import main
from googlenet.model import GoogLeNet


def _outputs_and_grads(model: GoogLeNet, x: torch.Tensor, seed: int = 0):
    model.zero_grad()
    torch.manual_seed(seed)  # same dropout masks
    out = model(x)
    (out.logits.square().sum() + out.aux1.sum() + out.aux2.sum()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "speedups,channels_last",
    [
        (["fast_lrn"], False),
        (["fuse_1x1"], False),
        (["crop_kernels"], False),
        (["matmul_1x1"], True),  # the GEMM paths need channels_last
        (["relu_after_pool1"], False),
        (["crop_kernels", "matmul_small_maps"], True),
        (["fuse_1x1", "crop_kernels", "matmul_1x1", "matmul_small_maps"], True),
        (list(SPEEDUPS), True),
    ],
)
def test_speedups_keep_outputs_and_gradients(speedups: list[str], channels_last: bool) -> None:
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=10, in_channels=1).double()
    # 40 px: inception4 runs on 2x2 maps and inception5 on 1x1 maps, so the
    # 3x3 and 5x5 kernels there are cropped, and run as GEMMs over the map.
    x = torch.randn(3, 1, 40, 40, dtype=torch.float64)
    ref_out, ref_grads = _outputs_and_grads(set_speedups(model, ()), x)
    set_speedups(model, speedups)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out, grads = _outputs_and_grads(model, x)
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_set_speedups_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown speed-ups"):
        set_speedups(GoogLeNet(10, 1), ["fast_lrm"])


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
