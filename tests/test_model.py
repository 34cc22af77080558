"""Tests for googlenet.model: shapes, parameter counts, structure, init, LRN, aux pooling.

Reference: ../shared/PAPER.md (paper Table 1 and the BVLC Caffe model). Most
tests run at 32-64 px with batch 2 to stay fast on a small CPU; the ones about
the paper's geometry run once at 224 px with batch 1.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from googlenet import model as M
from googlenet.model import MIN_IMAGE_SIZE, GoogLeNet, GoogLeNetOutput, count_parameters

# Paper Table 1: (name, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, out_channels)
TABLE1 = [
    ("inception3a", 192, 64, 96, 128, 16, 32, 32, 256),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64, 480),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64, 512),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64, 512),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64, 512),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64, 528),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128, 832),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128, 832),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128, 1024),
]


@pytest.fixture(scope="module")
def net() -> GoogLeNet:
    """A 10-class, 3-channel model with aux heads (fresh state per test via train()/eval())."""
    torch.manual_seed(0)
    return GoogLeNet(num_classes=10, in_channels=3)


# ------------------------------------------------------------------ outputs


def test_train_mode_returns_logits_and_both_aux(net):
    net.train()
    out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, GoogLeNetOutput)
    assert out._fields == ("logits", "aux1", "aux2")
    assert out.logits.shape == (2, 10)
    assert out.aux1.shape == (2, 10)
    assert out.aux2.shape == (2, 10)


def test_eval_mode_drops_aux(net):
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, GoogLeNetOutput)
    assert out.logits.shape == (2, 10)
    assert out.aux1 is None and out.aux2 is None


def test_no_aux_heads_in_either_mode():
    model = GoogLeNet(num_classes=7, in_channels=1, aux_logits=False)
    assert model.aux1 is None and model.aux2 is None
    for training in (True, False):
        model.train(training)
        out = model(torch.randn(2, 1, 32, 32))
        assert out.logits.shape == (2, 7)
        assert out.aux1 is None and out.aux2 is None


def test_non_square_input():
    model = GoogLeNet(num_classes=4, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 72)).logits.shape == (1, 4)


# --------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("num_classes", "in_channels", "with_aux", "without_aux"),
    [
        (10, 3, 10_334_030, 5_983_802),  # the seed README's table
        (10, 1, 10_327_758, 5_977_530),
        (1000, 3, 13_378_280, 6_998_552),  # ImageNet
    ],
)
def test_parameter_counts(num_classes, in_channels, with_aux, without_aux):
    assert count_parameters(GoogLeNet(num_classes, in_channels, aux_logits=True)) == with_aux
    assert count_parameters(GoogLeNet(num_classes, in_channels, aux_logits=False)) == without_aux


def test_count_parameters_trainable_only():
    model = GoogLeNet(10, 3, aux_logits=False)
    model.conv1[0].weight.requires_grad_(False)
    assert count_parameters(model) == 5_983_802
    assert count_parameters(model, trainable_only=True) == 5_983_802 - 3 * 7 * 7 * 64


# ------------------------------------------------------ gradients and NaNs


def test_every_parameter_gets_a_finite_nonzero_gradient(net):
    net.train()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out = net(torch.randn(2, 3, 32, 32))
    for t in out:
        assert torch.isfinite(t).all()
    target = torch.tensor([3, 7])
    loss = sum(F.cross_entropy(t, target) for t in out)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    net.zero_grad(set_to_none=True)


def test_seeded_outputs_are_reproducible():
    def run(seed: int) -> GoogLeNetOutput:
        torch.manual_seed(seed)
        model = GoogLeNet(10, 1)  # init draws from the torch RNG
        x = torch.randn(2, 1, 32, 32)
        return model(x)  # train mode: dropout draws from it too

    a, b, c = run(0), run(0), run(1)
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    assert not torch.allclose(a.logits, c.logits)


# ---------------------------------------------------------------- structure


def test_inception_blocks_follow_table1(net):
    for name, cin, c1, c3r, c3, c5r, c5, pp, cout in TABLE1:
        block = getattr(net, name)
        assert block.out_channels == cout == c1 + c3 + c5 + pp
        convs = {
            "branch1": [block.branch1[0]],
            "branch2": [block.branch2[0][0], block.branch2[1][0]],
            "branch3": [block.branch3[0][0], block.branch3[1][0]],
            "branch4": [block.branch4[1][0]],
        }
        shapes = {k: [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in v] for k, v in convs.items()}
        assert shapes == {
            "branch1": [(cin, c1, (1, 1), (0, 0))],
            "branch2": [(cin, c3r, (1, 1), (0, 0)), (c3r, c3, (3, 3), (1, 1))],
            # A true 5x5 (torchvision's googlenet has a 3x3 here).
            "branch3": [(cin, c5r, (1, 1), (0, 0)), (c5r, c5, (5, 5), (2, 2))],
            "branch4": [(cin, pp, (1, 1), (0, 0))],
        }, name
        pool = block.branch4[0]
        assert isinstance(pool, nn.MaxPool2d)
        assert (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1)


def test_stem_matches_table1(net):
    conv1, conv2, conv3 = net.conv1[0], net.conv2[0], net.conv3[0]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (3, 64, (7, 7), (2, 2), (3, 3))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size) == (64, 64, (1, 1))
    assert (conv3.in_channels, conv3.out_channels, conv3.kernel_size, conv3.padding) == (64, 192, (3, 3), (1, 1))
    assert net.fc.in_features == 1024 and net.fc.out_features == 10


def test_max_pools_are_caffe_3x3_stride2_ceil(net):
    for name in ("maxpool1", "maxpool2", "maxpool3", "maxpool4"):
        pool = getattr(net, name)
        assert isinstance(pool, nn.MaxPool2d), name
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True), name


def test_lrn_constants(net):
    for lrn in (net.lrn1, net.lrn2):
        assert isinstance(lrn, nn.LocalResponseNorm)
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)


def test_no_batch_norm_and_no_buffers(net):
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in net.modules())
    assert list(net.buffers()) == []


def test_every_conv_has_a_bias_and_is_followed_by_relu(net):
    """Structure: every conv (and the aux heads' hidden FC) sits in a [layer, ReLU] pair."""
    modules = dict(net.named_modules())
    convs = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 + 9 * 6 + 2  # stem + 6 per inception block + one per aux head
    hidden_fcs = ["aux1.fc1.0", "aux2.fc1.0"]
    for name in convs + hidden_fcs:
        assert modules[name].bias is not None, name
        parent_name, index = name.rsplit(".", 1)
        parent = modules[parent_name]
        assert isinstance(parent, nn.Sequential) and len(parent) == 2 and index == "0", name
        assert isinstance(parent[1], nn.ReLU), f"{name} is followed by {type(parent[1]).__name__}"


def test_every_inception_output_is_rectified(net):
    """Behaviour: whatever the forward does internally, each branch ends in a ReLU."""
    outputs = []
    blocks = [getattr(net, row[0]) for row in TABLE1] + [net.conv2, net.conv3]
    hooks = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in blocks]
    # conv1's ReLU may run after maxpool1 (relu_after_pool1): what reaches lrn1 is rectified either way.
    blocks.append(net.lrn1)
    hooks.append(net.lrn1.register_forward_pre_hook(lambda _m, inputs: outputs.append(inputs[0])))
    try:
        net.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            net(torch.randn(1, 3, 64, 64) * 5)
    finally:
        for h in hooks:
            h.remove()
    assert len(outputs) == len(blocks)
    for out in outputs:
        assert out.min() >= 0


def test_dropout_rates(net):
    assert net.dropout.p == 0.4
    assert net.aux1.dropout.p == 0.7 and net.aux2.dropout.p == 0.7
    custom = GoogLeNet(10, 3, dropout=0.1, dropout_aux=0.2)
    assert custom.dropout.p == 0.1 and custom.aux1.dropout.p == 0.2


def test_aux_heads_match_the_paper(net):
    for aux, cin in ((net.aux1, 512), (net.aux2, 528)):
        conv = aux.conv[0]
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (cin, 128, (1, 1))
        assert (aux.fc1[0].in_features, aux.fc1[0].out_features) == (2048, 1024)
        assert (aux.fc2.in_features, aux.fc2.out_features) == (1024, 10)


# --------------------------------------------------------------------- init


def test_caffe_init(net):
    classifiers = {id(net.fc), id(net.aux1.fc2), id(net.aux2.fc2)}
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 59 + 4 + 1  # convs, the aux heads' two FCs each, the main FC
    for m in layers:
        fan_in = m.weight[0].numel()
        bound = math.sqrt(3.0 / fan_in)
        w = m.weight.detach()
        assert w.abs().max() <= bound
        if w.numel() >= 4096:  # enough samples for a uniform's extremes and spread to show
            assert w.abs().max() > 0.95 * bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        expected_bias = 0.0 if id(m) in classifiers else 0.2
        assert torch.all(m.bias == expected_bias), m


def test_other_inits_differ_from_caffe():
    torch.manual_seed(0)
    kaiming = GoogLeNet(10, 3, init="kaiming")
    assert torch.all(kaiming.conv1[0].bias == 0)
    torch.manual_seed(0)
    pytorch = GoogLeNet(10, 3, init="pytorch")
    bias = pytorch.conv1[0].bias
    assert not torch.all(bias == 0.2) and bias.abs().max() <= 1 / math.sqrt(3 * 49)
    with pytest.raises(ValueError, match="unknown init"):
        GoogLeNet(10, 3, init="xavier")


# --------------------------------------------------------- input checking


def test_minimum_image_size_works_and_one_less_raises():
    model = GoogLeNet(10, 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)).logits.shape == (1, 10)
        with pytest.raises(ValueError, match=f"minimum of {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}"):
            model(torch.randn(1, 3, MIN_IMAGE_SIZE - 1, MIN_IMAGE_SIZE - 1))
        with pytest.raises(ValueError, match=str(MIN_IMAGE_SIZE)):
            model(torch.randn(1, 3, 64, MIN_IMAGE_SIZE - 1))  # one side too small is enough


@pytest.mark.parametrize("size", [29, 30, 31, 32])
def test_min_image_size_is_really_the_minimum(size):
    """Bypass check_input and run the plain layer sequence (in train mode, so the aux heads run too)."""
    model = GoogLeNet(10, 3)
    model.check_input = lambda x: None  # the instance attribute shadows the method
    x = torch.randn(1, 3, size, size)
    if size < MIN_IMAGE_SIZE:
        with pytest.raises(RuntimeError, match="too small"):
            model(x)
    else:
        out = model(x)
        assert out.logits.shape == (1, 10) and out.aux2.shape == (1, 10)


def test_wrong_channel_count_raises():
    model = GoogLeNet(10, 1)
    with pytest.raises(ValueError, match="1 channel"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        model(torch.randn(1, 32, 32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="positive"):
        GoogLeNet(num_classes=0)
    with pytest.raises(ValueError, match="positive"):
        GoogLeNet(in_channels=0)


# ---------------------------------------------------------------------- LRN


def _compare_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> None:
    """Forward and backward of the fast LRN against PyTorch's, in float64."""
    x_ref = x.detach().clone().requires_grad_(True)
    x_fast = x.detach().clone().requires_grad_(True)
    ref = nn.LocalResponseNorm(size, alpha, beta, k)(x_ref)
    fast = M.LocalResponseNorm(size, alpha, beta, k, fast=True)(x_fast)
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
    assert torch.autograd.gradcheck(lambda t: M.local_response_norm(t, size, 2.0, 0.75, 1.0), (x,))


def test_fast_lrn_with_fewer_channels_than_the_window():
    torch.manual_seed(0)
    _compare_lrn(torch.randn(2, 2, 3, 3, dtype=torch.float64), 5, 1.0, 0.75, 1.0)


def test_fast_lrn_float32_and_non_4d_input():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(M.local_response_norm(x, 5), F.local_response_norm(x, 5))
    x3 = torch.randn(2, 16, 10)  # 3-D input goes to PyTorch's implementation
    torch.testing.assert_close(M.local_response_norm(x3, 5, 1.0), F.local_response_norm(x3, 5, 1.0))


def test_lrn_fast_flag_switches_kernel():
    slow = M.LocalResponseNorm(5, fast=False)
    assert repr(slow) == repr(nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64) * 30
    torch.testing.assert_close(slow(x), M.LocalResponseNorm(5, fast=True)(x))
    model = GoogLeNet(10, 3, fast_lrn=False)
    assert model.lrn1.fast is False and model.lrn2.fast is False


def test_inception_fast_path_matches_the_plain_branches():
    """If a block has a fused fast path (fuse_1x1), it must compute exactly the four plain branches."""
    block = M.Inception(192, 64, 96, 128, 16, 32, 32).double()
    if not hasattr(block, "fuse_1x1"):
        pytest.skip("no fused path in this version of Inception")
    torch.manual_seed(0)
    x = torch.randn(2, 192, 9, 9, dtype=torch.float64)
    plain = torch.cat([block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)], 1)
    for fuse in (True, False):
        block.fuse_1x1 = fuse
        torch.testing.assert_close(block(x), plain)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("height,width", [(1, 1), (2, 2), (1, 3), (2, 5), (3, 3), (6, 6)])
def test_cropped_conv_matches_the_full_kernel(kernel, height, width):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, padding=kernel // 2).double()
    x = torch.randn(2, 4, height, width, dtype=torch.float64, requires_grad=True)
    full = conv(x)
    grads = torch.autograd.grad(full.square().sum(), (x, conv.weight, conv.bias))
    cropped = M.cropped_conv2d(x, conv)
    torch.testing.assert_close(cropped, full)
    for g, ref in zip(torch.autograd.grad(cropped.square().sum(), (x, conv.weight, conv.bias)), grads):
        torch.testing.assert_close(g, ref)
    if min(height, width) <= kernel // 2:  # some taps only see padding: their gradient is exactly zero
        assert grads[1].abs().sum(dim=(0, 1)).eq(0).any()


@pytest.mark.parametrize(
    "kernel,height,width",
    [(3, 1, 1), (3, 2, 2), (3, 1, 2), (3, 2, 1), (5, 1, 1), (5, 2, 2), (5, 3, 3), (5, 2, 3), (5, 3, 1)],  # maps of at most kernel // 2 + 1 pixels a side
)
def test_small_map_gemm_matches_the_convolution(kernel, height, width):
    """Where the cropped kernel reaches the whole map it runs as one GEMM: same outputs and gradients."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 6, kernel, padding=kernel // 2).double()
    x = torch.randn(3, 5, height, width, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    full = conv(x)
    grads = torch.autograd.grad(full.square().sum(), (x, conv.weight, conv.bias))
    out = M.cropped_conv2d(x, conv, matmul_small_maps=True)
    assert "SmallMapConv" in type(out.grad_fn).__name__ and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, full)
    for g, ref in zip(torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias)), grads):
        torch.testing.assert_close(g, ref)


def test_small_map_gemm_takes_a_channel_slice_and_checks_the_kernel():
    torch.manual_seed(0)
    y = torch.randn(2, 9, 2, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x = y[:, 3:7]  # what an Inception branch receives from the fused 1x1 convolutions
    w, b = torch.randn(4, 4, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(M.small_map_conv2d(x, w, b), F.conv2d(x, w, b, padding=1))
    with pytest.raises(ValueError, match="3x3 kernel on a 2x2 map"):
        M.small_map_conv2d(x, torch.randn(4, 4, 5, 5, dtype=torch.float64), b)


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
    _check_gemm_path_under_bf16_autocast(M.small_map_conv2d, kernel=3, side=2, function_name="SmallMapConv")


@pytest.mark.parametrize("side", [1, 2, 5])
def test_conv1x1_gemm_matches_conv2d(side):
    torch.manual_seed(0)
    x = torch.randn(3, 6, side, side, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = M.conv1x1(x, w, b)
    assert out.grad_fn is not None and "Conv1x1" in type(out.grad_fn).__name__  # the GEMM path ran
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.conv2d(x, w, b))
    assert torch.autograd.gradcheck(M.conv1x1, (x, w, b))
    F.relu(out, inplace=True).sum().backward()  # the output takes an in-place ReLU


def test_conv1x1_falls_back_to_conv2d_off_its_path():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)  # NCHW: not the GEMM path
    w, b = torch.randn(5, 3, 1, 1), torch.randn(5)
    out = M.conv1x1(x, w, b)
    assert "Conv1x1" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, w, b))


def test_conv1x1_gemm_under_cpu_autocast_matches_conv2d():
    _check_gemm_path_under_bf16_autocast(M.conv1x1, kernel=1, side=3, function_name="Conv1x1")


@pytest.mark.parametrize("fast", [True, False])
def test_lrn_of_half_precision_input_is_computed_in_float32(fast):
    """bf16 cannot hold 1 + 2e-5 * sum(x^2): the LRN computes in float32 and rounds only its output."""
    torch.manual_seed(0)
    x = (torch.randn(2, 16, 4, 4) * 5).relu().bfloat16()
    ref = F.local_response_norm(x.double(), 5, 1e-4, 0.75, 1.0)
    y = M.LocalResponseNorm(5, fast=fast)(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), ref, rtol=2**-8, atol=0)  # within bf16's rounding of the exact result
    naive = M.local_response_norm(x, 5)  # the same kernel run in bf16 throughout is off by far more
    assert not torch.allclose(naive.double(), ref, rtol=2**-8, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert M.LocalResponseNorm(5, fast=fast)(x).dtype == torch.bfloat16


def test_model_output_is_the_same_with_either_lrn():
    torch.manual_seed(0)
    fast = GoogLeNet(10, 3).double().eval()
    slow = GoogLeNet(10, 3, fast_lrn=False).double().eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64) * 5
    with torch.no_grad():
        torch.testing.assert_close(fast(x).logits, slow(x).logits)


# ------------------------------------------------------------- aux pooling


@pytest.mark.parametrize("side", [14, 15, 16])
def test_aux_pool_is_the_papers_5x5_stride3_where_it_gives_4x4(side):
    torch.manual_seed(0)
    x = torch.randn(2, 5, side, side)
    out = M.AuxPool()(x)
    assert out.shape == (2, 5, 4, 4)
    torch.testing.assert_close(out, F.avg_pool2d(x, 5, stride=3))


@pytest.mark.parametrize("side", [2, 4, 7, 13, 17, 28])
def test_aux_pool_is_adaptive_4x4_elsewhere(side):
    torch.manual_seed(0)
    x = torch.randn(2, 5, side, side)
    out = M.AuxPool()(x)
    assert out.shape == (2, 5, 4, 4)
    torch.testing.assert_close(out, F.adaptive_avg_pool2d(x, 4))


def test_adaptive_and_papers_pool_differ_on_14x14():
    # Otherwise the two tests above could not tell the pools apart.
    x = torch.randn(1, 1, 14, 14)
    assert not torch.allclose(F.avg_pool2d(x, 5, stride=3), F.adaptive_avg_pool2d(x, 4))


def test_aux_heads_at_224_pool_14x14_with_5x5_stride3():
    """One forward at the paper's 224 px: the aux heads see 14x14 maps and use the paper's pool."""
    torch.manual_seed(0)
    model = GoogLeNet(10, 3)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [aux.pool.register_forward_hook(lambda _m, inp, out: seen.append((inp[0], out))) for aux in (model.aux1, model.aux2)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (1, 10)
    assert [tuple(i.shape) for i, _ in seen] == [(1, 512, 14, 14), (1, 528, 14, 14)]
    for inp, pooled in seen:
        assert pooled.shape[-2:] == (4, 4)
        torch.testing.assert_close(pooled, F.avg_pool2d(inp, 5, stride=3))
