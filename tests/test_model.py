"""Tests for googlenet.model: shapes, parameter counts, structure, init, LRN, aux pooling.

Reference: the paper's Table 1 (arXiv:1409.4842) and BVLC's bvlc_googlenet definition (tests/data/caffe). Most
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
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (
        3,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
    )
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
    hooks = [
        aux.pool.register_forward_hook(lambda _m, inp, out: seen.append((inp[0], out)))
        for aux in (model.aux1, model.aux2)
    ]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (1, 10)
    assert [tuple(i.shape) for i, _ in seen] == [(1, 512, 14, 14), (1, 528, 14, 14)]
    for inp, pooled in seen:
        assert pooled.shape[-2:] == (4, 4)
        torch.testing.assert_close(pooled, F.avg_pool2d(inp, 5, stride=3))
