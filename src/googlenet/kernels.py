"""Exact speed-ups for the CPU, applied to a plain `GoogLeNet` by `accelerate(model)`.

model.py is the paper's network written plainly; this module makes the same
network faster without changing what it computes. `accelerate` swaps modules
in place and keeps every parameter and state_dict key, so checkpoints move
freely between the plain and the fast model. Each speed-up is exact: the
same sums (some in another order, or without products of padding zeros), and
tests/test_kernels.py checks outputs and gradients against the plain model
in float64. The speed-ups, by their names in `SPEEDUPS`:

- fast_lrn: cross-channel LRN as a few shifted adds and a hand-written
  backward (`local_response_norm`), instead of PyTorch's avg_pool3d over a
  padded copy and autograd's record of the pow chain.
- fuse_1x1: the three 1x1 convolutions of an Inception block that read the
  block's input run as one wider convolution (the same weights and sums).
- crop_kernels: 3x3 and 5x5 kernel taps that can only fall on zero padding
  (maps smaller than the kernel) are dropped (`cropped_conv2d`).
- matmul_1x1: 1x1 convolutions of channels_last CPU tensors as plain matrix
  multiplies (`conv1x1`): same sums, faster weight gradients.
- relu_after_pool1: conv1's ReLU after maxpool1: max and ReLU commute (and so
  do their gradients), so the ReLU runs on a quarter of the pixels.
- matmul_small_maps: 3x3 and 5x5 convolutions on maps so small that every
  output pixel sees every input pixel (2x2, 1x1) as one matrix multiply over
  the whole map (`small_map_conv2d`).

Whatever the speed-ups, the accelerated LRN computes in float32 under
autocast: alpha/size = 2e-5 is below bf16's resolution near k = 1.
docs/benchmarks.md has what each speed-up gains (`googlenet benchmark --variants`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import GoogLeNet, Inception

__all__ = ["ALL", "SPEEDUPS", "accelerate", "conv1x1", "cropped_conv2d", "local_response_norm", "small_map_conv2d"]

# The speed-ups with their `googlenet benchmark --variants` labels, in the order that table adds them.
SPEEDUPS = {
    "fast_lrn": "fast LRN",
    "fuse_1x1": "fused 1x1",
    "crop_kernels": "cropped kernels",
    "matmul_1x1": "1x1 as GEMM",
    "relu_after_pool1": "ReLU after pool1",
    "matmul_small_maps": "small maps as GEMM",
}
ALL = tuple(SPEEDUPS)


def accelerate(model: GoogLeNet, speedups: Collection[str] = ALL) -> GoogLeNet:
    """Turn a plain GoogLeNet into the fast one in place (same parameters, same state_dict keys); returns it."""
    unknown = set(speedups) - set(SPEEDUPS)
    if unknown:
        raise ValueError(f"unknown speed-ups {sorted(unknown)}: choose from {', '.join(SPEEDUPS)}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LocalResponseNorm):
                setattr(parent, name, FastLocalResponseNorm(child, fast="fast_lrn" in speedups))
            elif isinstance(child, Inception):
                setattr(parent, name, FastInception(child, speedups))
    if "relu_after_pool1" in speedups and isinstance(model.conv1[1], nn.ReLU):
        model.conv1[1] = nn.Identity()  # parameter-free modules: the state_dict keys stay
        model.maxpool1 = nn.Sequential(model.maxpool1, nn.ReLU(inplace=True))
    return model


# ---------------------------------------------------------------- LRN


class FastLocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` computed in float32 under autocast, with the faster kernel when `fast`."""

    def __init__(self, plain: nn.LocalResponseNorm, fast: bool = True) -> None:
        super().__init__(plain.size, plain.alpha, plain.beta, plain.k)
        self.fast = fast

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        if dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # see the module docstring: bf16 cannot resolve 1 + 2e-5 x sum
        y = local_response_norm(x, self.size, self.alpha, self.beta, self.k) if self.fast else super().forward(x)
        return y.to(dtype)


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Same result as `torch.nn.functional.local_response_norm`, faster on 4-D input."""
    if x.dim() != 4:
        return F.local_response_norm(x, size, alpha, beta, k)
    return _LRNFunction.apply(x, size, alpha, beta, k)


class _LRNFunction(torch.autograd.Function):
    """Cross-channel LRN with a hand-written backward.

    y = x * d^-beta with d = k + alpha/size * sum_{window} x^2. The window sum
    is shifted adds instead of PyTorch's avg_pool3d over a padded copy, and
    the backward reuses d and y instead of letting autograd record the pow
    chain: dx = g d^-beta - 2 alpha beta / size * x * window_sum(g y / d).
    Written for few passes over memory: these maps are the network's largest.
    """

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        q = torch.addcmul(x.new_zeros(()), x, x, value=alpha / size)  # alpha/size * x^2 in one pass
        d = _add_window(q + k, q, size)
        if beta == 0.75:  # the paper's beta: d^-0.75 = d^-0.5 * d^-0.25, 4x faster than pow on a CPU
            inv = d.rsqrt()
            inv.mul_(inv.sqrt())
        else:
            inv = d.pow(-beta)
        y = x * inv
        ctx.save_for_backward(x, inv, d, y)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, inv, d, y = ctx.saved_tensors
        # Each input is in the windows of the outputs whose windows it falls in:
        # the transposed window (the same one for odd sizes).
        t = (g * y).div_(d)
        s = _add_window(t.clone(), t, ctx.size, transpose=True)
        return torch.addcmul(g * inv, s, x, value=-2.0 * ctx.alpha * ctx.beta / ctx.size), None, None, None, None


def _add_window(out: Tensor, t: Tensor, size: int, transpose: bool = False) -> Tensor:
    """Add to `out` (which holds t's own channel) t's other channels in a window of `size`, zero-padded like PyTorch's
    LRN."""
    before, after = size // 2, (size - 1) // 2
    if transpose:
        before, after = after, before
    channels = t.shape[1]
    for shift in range(1, before + 1):  # channel c takes c - shift
        out[:, shift:] += t[:, : channels - shift]
    for shift in range(1, after + 1):  # channel c takes c + shift
        out[:, : channels - shift] += t[:, shift:]
    return out


# ---------------------------------------------------------------- Inception


class FastInception(Inception):
    """An Inception block that runs its plain branches' layers through the speed-ups (same modules, same keys)."""

    def __init__(self, plain: Inception, speedups: Collection[str] = ALL) -> None:
        nn.Module.__init__(self)
        self.branch1, self.branch2, self.branch3, self.branch4 = (
            plain.branch1,
            plain.branch2,
            plain.branch3,
            plain.branch4,
        )
        self.out_channels = plain.out_channels
        self.fuse_1x1 = "fuse_1x1" in speedups
        self.crop_kernels = "crop_kernels" in speedups
        self.matmul_1x1 = "matmul_1x1" in speedups
        self.matmul_small_maps = "matmul_small_maps" in speedups

    def forward(self, x: Tensor) -> Tensor:
        if not self.fuse_1x1:
            b1 = self.branch1(x)
            b2 = self._spatial(self.branch2[0](x), self.branch2[1])
            b3 = self._spatial(self.branch3[0](x), self.branch3[1])
            return torch.cat([b1, b2, b3, self._pool_proj(x)], 1)
        convs = (self.branch1[0], self.branch2[0][0], self.branch3[0][0])
        weight = torch.cat([c.weight for c in convs])
        bias = torch.cat([c.bias for c in convs])
        y = F.relu(self._conv1x1(x, weight, bias), inplace=True)
        b1, b2, b3 = y.split([c.out_channels for c in convs], 1)
        return torch.cat(
            [b1, self._spatial(b2, self.branch2[1]), self._spatial(b3, self.branch3[1]), self._pool_proj(x)], 1
        )

    def _conv1x1(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return conv1x1(x, weight, bias) if self.matmul_1x1 else F.conv2d(x, weight, bias)

    def _pool_proj(self, x: Tensor) -> Tensor:
        if not self.matmul_1x1:
            return self.branch4(x)
        conv = self.branch4[1][0]
        return F.relu(self._conv1x1(self.branch4[0](x), conv.weight, conv.bias), inplace=True)

    def _spatial(self, x: Tensor, layer: nn.Sequential) -> Tensor:
        """The 3x3 or 5x5 conv + ReLU of a branch, cropped to the taps that can see the map."""
        if not self.crop_kernels:
            return layer(x)
        return F.relu(cropped_conv2d(x, layer[0], self.matmul_small_maps), inplace=True)


def cropped_conv2d(x: Tensor, conv: nn.Conv2d, matmul_small_maps: bool = False) -> Tensor:
    """`conv(x)` for a stride-1 zero-padded convolution, without the taps that only see padding.

    An output pixel reads the input at offsets -p..p around it; on an H-pixel
    side no offset beyond H-1 reaches the map, so those kernel rows and
    columns only ever multiply padding zeros. Dropping them leaves the same
    sums (and zero gradients for the dropped taps, as before). When the
    cropped kernel reaches the whole map from every pixel and
    `matmul_small_maps` is set, it runs as `small_map_conv2d`.
    """
    if (
        isinstance(conv.padding, str)
        or conv.stride != (1, 1)
        or conv.dilation != (1, 1)
        or conv.padding_mode != "zeros"
    ):
        return conv(x)
    (ph, pw), (kh, kw) = conv.padding, conv.kernel_size
    h, w = x.shape[-2:]
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    # every output pixel sees every input pixel
    whole_map = matmul_small_maps and conv.bias is not None and (rh, rw) == (h - 1, w - 1)
    if (kh, kw) != (2 * ph + 1, 2 * pw + 1) or ((rh, rw) == (ph, pw) and not whole_map):
        return conv(x)
    weight = conv.weight[:, :, ph - rh : ph + rh + 1, pw - rw : pw + rw + 1]
    if whole_map:
        return small_map_conv2d(x, weight, conv.bias)
    return F.conv2d(x, weight, conv.bias, padding=(rh, rw))


# ---------------------------------------------------------------- convolutions as GEMMs


def _gemm_operands(x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The operands of a convolution run as matrix multiplies, or None where that path does not apply.

    It applies to channels_last CPU tensors outside torch.compile (which should
    see a plain convolution); under CPU autocast the operands are cast as
    autocast casts a convolution's.
    """
    if (
        x.device.type != "cpu"
        or x.dim() != 4
        or not x.is_contiguous(memory_format=torch.channels_last)
        or torch.compiler.is_compiling()
    ):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    return (x, weight, bias) if x.dtype == weight.dtype == bias.dtype else None


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`F.conv2d(x, weight, bias)` for a 1x1 kernel; a GEMM on channels_last CPU tensors."""
    operands = _gemm_operands(x, weight, bias)
    return F.conv2d(x, weight, bias) if operands is None else _Conv1x1Function.apply(*operands)


class _Conv1x1Function(torch.autograd.Function):
    """A 1x1 convolution of a channels_last tensor as one matrix multiply.

    In channels_last memory an N x C x H x W tensor is an (N*H*W) x C matrix,
    so y = x W^T + b, dx = g W and dW = g^T x are three plain GEMMs. On the
    project's CPU they run as fast as oneDNN's convolution on 8x8 maps and up
    to 2.8x faster on the 1x1-4x4 maps of 32-64 px inputs (forward + backward).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        n, c, h, w = x.shape
        x2 = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view: x is channels_last
        w2 = weight.reshape(weight.shape[0], c)
        out = torch.empty((n, w2.shape[0], h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        # Written through a view so that the output is a tensor of its own
        # (a view returned by a Function could not take the in-place ReLU).
        torch.addmm(bias, x2, w2.t(), out=out.permute(0, 2, 3, 1).view(-1, w2.shape[0]))
        ctx.save_for_backward(x2, w2)
        ctx.input_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, w2 = ctx.saved_tensors
        n, _, h, w = ctx.input_shape
        g2 = g.permute(0, 2, 3, 1).reshape(-1, w2.shape[0])
        dx = (g2 @ w2).view(n, h, w, -1).permute(0, 3, 1, 2) if ctx.needs_input_grad[0] else None
        dw = (g2.t() @ x2).view(w2.shape[0], -1, 1, 1) if ctx.needs_input_grad[1] else None
        db = g2.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, db


def small_map_conv2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=(h-1, w-1))` for an h x w map and a (2h-1) x (2w-1) kernel; a GEMM on
    channels_last CPU tensors."""
    h, w = x.shape[-2:]
    if weight.shape[-2:] != (2 * h - 1, 2 * w - 1):
        raise ValueError(
            f"small_map_conv2d needs a {2 * h - 1}x{2 * w - 1} kernel on a {h}x{w} map, got {tuple(weight.shape[-2:])}"
        )
    if (
        x.dim() == 4 and x.stride(1) == 1
    ):  # a channel slice of a channels_last map (an Inception branch): copy the few pixels
        x = x.contiguous(memory_format=torch.channels_last)
    operands = _gemm_operands(x, weight, bias)
    if operands is None:
        return F.conv2d(x, weight, bias, padding=(h - 1, w - 1))
    return _SmallMapConvFunction.apply(*operands)


@functools.cache
def _pair_taps(h: int, w: int) -> Tensor:
    """The kernel tap (row * (2w-1) + column) linking input pixel q to output pixel p on an h x w map, at [q * h w +
    p]."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return ((rows[:, None] - rows[None, :] + h - 1) * (2 * w - 1) + cols[:, None] - cols[None, :] + w - 1).flatten()


class _SmallMapConvFunction(torch.autograd.Function):
    """A stride-1 convolution whose (2h-1) x (2w-1) kernel reaches the whole h x w map from every pixel.

    Every output pixel p then reads every input pixel q through one kernel tap,
    so in channels_last memory the convolution is one matrix multiply:
    y[n, (p, co)] = sum over (q, ci) of x[n, (q, ci)] * W[co, ci, tap(q, p)]
    + b[co], with a weight matrix of (h w)^2 kernel slices. These are the
    products the convolution computes without those with padding zeros; the
    backward is two more GEMMs, and the weight gradient sums each tap's slices.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        n, c, h, w = x.shape
        pixels, out_channels = h * w, weight.shape[0]
        taps = _pair_taps(h, w)
        slices = weight.permute(2, 3, 1, 0).reshape(-1, c, out_channels)  # [tap, ci, co]
        # [q, p, ci, co] -> the (q, ci) x (p, co) matrix
        wd = (
            slices.index_select(0, taps)
            .view(pixels, pixels, c, out_channels)
            .transpose(1, 2)
            .reshape(pixels * c, pixels * out_channels)
        )
        x2 = x.permute(0, 2, 3, 1).reshape(n, pixels * c)  # a view: x is channels_last
        out = torch.empty((n, out_channels, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        torch.addmm(bias.repeat(pixels), x2, wd, out=out.permute(0, 2, 3, 1).view(n, pixels * out_channels))
        ctx.save_for_backward(x2, wd)
        ctx.shapes = (x.shape, weight.shape)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, wd = ctx.saved_tensors
        (n, c, h, w), (out_channels, _, kh, kw) = ctx.shapes
        pixels = h * w
        g2 = g.permute(0, 2, 3, 1).reshape(n, pixels * out_channels)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (g2 @ wd.t()).view(n, h, w, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            # [(q, p), ci, co]
            dwd = (x2.t() @ g2).view(pixels, c, pixels, out_channels).transpose(1, 2).reshape(-1, c, out_channels)
            dslices = g.new_zeros(kh * kw, c, out_channels).index_add_(0, _pair_taps(h, w), dwd)
            dw = dslices.view(kh, kw, c, out_channels).permute(3, 2, 0, 1)
        if ctx.needs_input_grad[2]:
            db = g2.sum(0).view(pixels, out_channels).sum(0)
        return dx, dw, db
