"""The exact speed-ups of kernels.py: each kernel against the plain op, and `accelerate(model)` against the plain model.

The plain network (model.py) is the reference: the accelerated one must give
the same outputs and gradients in float64, at the paper's 224 px and at the
64 and 32 px of the CPU recipes (where the small-map paths apply), in train
and eval mode, and keep every parameter and state_dict key.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from googlenet import kernels as K
from googlenet.kernels import FastLocalResponseNorm, accelerate
from googlenet.model import GoogLeNet, Inception

# ------------------------------------------------------------- the whole model


def _outputs_and_grads(model: GoogLeNet, x: torch.Tensor, train: bool):
    model.zero_grad()
    model.train(train)
    torch.manual_seed(0)  # the same dropout masks
    out = model(x)
    loss = out.logits.square().sum() + (out.aux1.sum() + out.aux2.sum() if train else 0)
    loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check_accelerated(size: int, train: bool, speedups=K.ALL, channels_last: bool = True, batch: int = 2) -> None:
    torch.manual_seed(0)
    plain = GoogLeNet(num_classes=10, in_channels=1).double()
    fast = accelerate(copy.deepcopy(plain), speedups)
    x = torch.randn(batch, 1, size, size, dtype=torch.float64)
    ref_out, ref_grads = _outputs_and_grads(plain, x, train)
    if channels_last:  # the GEMM paths apply to channels_last tensors only (as googlenet train runs them)
        fast = fast.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out, grads = _outputs_and_grads(fast, x, train)
    assert (out.aux1 is None) == (not train)
    for a, b in zip(out, ref_out):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("size", [32, 64, pytest.param(224, marks=pytest.mark.slow)])
def test_accelerated_model_equals_the_plain_model(size: int, train: bool) -> None:
    """At 32 px inception4 runs on 2x2 maps and inception5 on 1x1 (cropped kernels, GEMMs over the map); at 64 px
    inception5 on 2x2."""
    _check_accelerated(size, train, batch=1 if size == 224 else 2)


@pytest.mark.parametrize(
    "speedups,channels_last",
    [
        (["fast_lrn"], False),
        (["fuse_1x1"], False),
        (["crop_kernels"], False),
        (["matmul_1x1"], True),
        (["relu_after_pool1"], False),
        (["crop_kernels", "matmul_small_maps"], True),
        (["fuse_1x1", "crop_kernels", "matmul_1x1", "matmul_small_maps"], True),
        (K.ALL, False),  # off channels_last the GEMM paths fall back to convolutions
    ],
)
def test_each_speedup_alone_keeps_outputs_and_gradients(speedups, channels_last: bool) -> None:
    _check_accelerated(40, True, speedups, channels_last)  # 40 px: 2x2 maps in inception4, 1x1 in inception5


def test_accelerate_keeps_parameters_and_state_dict_keys() -> None:
    model = GoogLeNet(10, 1)
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    assert accelerate(model) is model
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())  # swapped modules, the same tensors
    assert isinstance(model.inception3a, K.FastInception) and isinstance(model.lrn1, FastLocalResponseNorm)
    plain = GoogLeNet(10, 1)
    plain.load_state_dict(model.state_dict())  # checkpoints move freely between the two


def test_accelerate_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown speed-ups"):
        accelerate(GoogLeNet(10, 1), ["fast_lrm"])


# ---------------------------------------------------------------------- LRN


def _compare_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> None:
    """Forward and backward of the fast LRN against PyTorch's, in float64."""
    x_ref = x.detach().clone().requires_grad_(True)
    x_fast = x.detach().clone().requires_grad_(True)
    ref = nn.LocalResponseNorm(size, alpha, beta, k)(x_ref)
    fast = FastLocalResponseNorm(nn.LocalResponseNorm(size, alpha, beta, k), fast=True)(x_fast)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x_ref, g)
    (gx_fast,) = torch.autograd.grad(fast, x_fast, g)
    torch.testing.assert_close(gx_fast, gx_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [5, 4, 1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("alpha", "beta", "k"), [(1e-4, 0.75, 1.0), (2.0, 0.75, 0.5), (2.0, 0.6, 0.5)])
def test_fast_lrn_matches_pytorch(size, channels_last, alpha, beta, k):
    # The first constants are the paper's; the others make the normalisation
    # strong, so a wrong window or backward would show, with the paper's beta
    # (its own d^-0.75 path) and with another.
    torch.manual_seed(size)
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _compare_lrn(x, size, alpha, beta, k)


@pytest.mark.parametrize("size", [5, 4])
def test_fast_lrn_gradcheck(size):
    torch.manual_seed(0)
    x = (torch.randn(1, 6, 2, 3, dtype=torch.float64) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: K.local_response_norm(t, size, 2.0, 0.75, 1.0), (x,))


def test_fast_lrn_with_fewer_channels_than_the_window():
    torch.manual_seed(0)
    _compare_lrn(torch.randn(2, 2, 3, 3, dtype=torch.float64), 5, 1.0, 0.75, 1.0)


def test_fast_lrn_float32_and_non_4d_input():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(K.local_response_norm(x, 5), F.local_response_norm(x, 5))
    x3 = torch.randn(2, 16, 10)  # 3-D input goes to PyTorch's implementation
    torch.testing.assert_close(K.local_response_norm(x3, 5, 1.0), F.local_response_norm(x3, 5, 1.0))


def test_lrn_fast_flag_switches_kernel():
    slow = FastLocalResponseNorm(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), fast=False)
    assert (slow.size, slow.alpha, slow.beta, slow.k) == (5, 1e-4, 0.75, 1.0)
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64) * 30
    torch.testing.assert_close(slow(x), FastLocalResponseNorm(slow, fast=True)(x))
    model = accelerate(GoogLeNet(10, 3), ["fuse_1x1"])
    assert isinstance(model.lrn1, FastLocalResponseNorm) and model.lrn1.fast is False and model.lrn2.fast is False


def test_inception_fast_path_matches_the_plain_branches():
    """The fused block computes exactly the four plain branches, with each switch on or off."""
    torch.manual_seed(0)
    block = Inception(192, 64, 96, 128, 16, 32, 32).double()
    x = torch.randn(2, 192, 9, 9, dtype=torch.float64)
    plain = block(x)
    for speedups in (K.ALL, ["fuse_1x1"], ["crop_kernels"], []):
        fast = K.FastInception(block, speedups)
        assert fast.branch1 is block.branch1  # the same modules: the parameters are shared, not copied
        torch.testing.assert_close(fast(x), plain)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("height,width", [(1, 1), (2, 2), (1, 3), (2, 5), (3, 3), (6, 6)])
def test_cropped_conv_matches_the_full_kernel(kernel, height, width):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, padding=kernel // 2).double()
    x = torch.randn(2, 4, height, width, dtype=torch.float64, requires_grad=True)
    full = conv(x)
    grads = torch.autograd.grad(full.square().sum(), (x, conv.weight, conv.bias))
    cropped = K.cropped_conv2d(x, conv)
    torch.testing.assert_close(cropped, full)
    for g, ref in zip(torch.autograd.grad(cropped.square().sum(), (x, conv.weight, conv.bias)), grads):
        torch.testing.assert_close(g, ref)
    if min(height, width) <= kernel // 2:  # some taps only see padding: their gradient is exactly zero
        assert grads[1].abs().sum(dim=(0, 1)).eq(0).any()


@pytest.mark.parametrize(
    "kernel,height,width",
    [
        (3, 1, 1),
        (3, 2, 2),
        (3, 1, 2),
        (3, 2, 1),
        (5, 1, 1),
        (5, 2, 2),
        (5, 3, 3),
        (5, 2, 3),
        (5, 3, 1),
    ],  # maps of at most kernel // 2 + 1 pixels a side
)
def test_small_map_gemm_matches_the_convolution(kernel, height, width):
    """Where the cropped kernel reaches the whole map it runs as one GEMM: same outputs and gradients."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 6, kernel, padding=kernel // 2).double()
    x = (
        torch.randn(3, 5, height, width, dtype=torch.float64)
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_()
    )
    full = conv(x)
    grads = torch.autograd.grad(full.square().sum(), (x, conv.weight, conv.bias))
    out = K.cropped_conv2d(x, conv, matmul_small_maps=True)
    assert "SmallMapConv" in type(out.grad_fn).__name__ and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, full)
    for g, ref in zip(torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias)), grads):
        torch.testing.assert_close(g, ref)


def test_small_map_gemm_takes_a_channel_slice_and_checks_the_kernel():
    torch.manual_seed(0)
    y = torch.randn(2, 9, 2, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x = y[:, 3:7]  # what an Inception branch receives from the fused 1x1 convolutions
    w, b = torch.randn(4, 4, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(K.small_map_conv2d(x, w, b), F.conv2d(x, w, b, padding=1))
    with pytest.raises(ValueError, match="3x3 kernel on a 2x2 map"):
        K.small_map_conv2d(x, torch.randn(4, 4, 5, 5, dtype=torch.float64), b)


def _check_gemm_path_under_bf16_autocast(gemm, kernel: int, side: int, function_name: str) -> None:
    """Under bf16 autocast a GEMM path casts every operand, as autocast does for a convolution."""
    torch.manual_seed(0)
    x = torch.randn(4, 16, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 16, kernel, kernel, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gemm(x, w, b)
        ref = F.conv2d(x, w, b, padding=kernel // 2)
    assert function_name in type(out.grad_fn).__name__ and out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=5e-2)
    grads = torch.autograd.grad(out.float().square().sum(), (x, w, b))
    ref_grads = torch.autograd.grad(ref.float().square().sum(), (x, w, b))
    for g, r, p in zip(grads, ref_grads, (x, w, b)):
        assert g.dtype == p.dtype == torch.float32  # the parameters keep float32 gradients
        torch.testing.assert_close(g, r, rtol=5e-2, atol=5e-2 * r.abs().max().item())


def test_small_map_gemm_under_cpu_autocast_matches_conv2d():
    _check_gemm_path_under_bf16_autocast(K.small_map_conv2d, kernel=3, side=2, function_name="SmallMapConv")


@pytest.mark.parametrize("side", [1, 2, 5])
def test_conv1x1_gemm_matches_conv2d(side):
    torch.manual_seed(0)
    x = (
        torch.randn(3, 6, side, side, dtype=torch.float64)
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_()
    )
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = K.conv1x1(x, w, b)
    assert out.grad_fn is not None and "Conv1x1" in type(out.grad_fn).__name__  # the GEMM path ran
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w, b))
    assert torch.autograd.gradcheck(K.conv1x1, (x, w, b))
    F.relu(out, inplace=True).sum().backward()  # the output takes an in-place ReLU


def test_conv1x1_falls_back_to_conv2d_off_its_path():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)  # NCHW: not the GEMM path
    w, b = torch.randn(5, 3, 1, 1), torch.randn(5)
    out = K.conv1x1(x, w, b)
    assert "Conv1x1" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, w, b))


def test_conv1x1_gemm_under_cpu_autocast_matches_conv2d():
    _check_gemm_path_under_bf16_autocast(K.conv1x1, kernel=1, side=3, function_name="Conv1x1")


@pytest.mark.parametrize("fast", [True, False])
def test_lrn_of_half_precision_input_is_computed_in_float32(fast):
    """bf16 cannot hold 1 + 2e-5 * sum(x^2): the LRN computes in float32 and rounds only its output."""
    torch.manual_seed(0)
    x = (torch.randn(2, 16, 4, 4) * 5).relu().bfloat16()
    ref = F.local_response_norm(x.double(), 5, 1e-4, 0.75, 1.0)
    lrn = FastLocalResponseNorm(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), fast=fast)
    y = lrn(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), ref, rtol=2**-8, atol=0)  # within bf16's rounding of the exact result
    naive = K.local_response_norm(x, 5)  # the same kernel run in bf16 throughout is off by far more
    assert not torch.allclose(naive.double(), ref, rtol=2**-8, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lrn(x).dtype == torch.bfloat16
