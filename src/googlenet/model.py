"""GoogLeNet (Inception-v1), exactly as in the paper and the BVLC Caffe model.

Sources: Szegedy et al., "Going Deeper with Convolutions" (arXiv:1409.4842),
Table 1 and sections 5-7; BVLC Caffe `models/bvlc_googlenet/train_val.prototxt`
for the details the paper leaves out (biases, LRN constants, ceil-rounded
pooling, initialisation). Layer names follow Table 1 rows; block arguments
follow its columns. This module imports only torch.

Deviations from the paper are options or are forced by the input size, and
each is commented where it happens:
- `init="pytorch" | "kaiming"` replaces Caffe's Xavier + bias 0.2 init.
- inputs other than 224 px: the auxiliary heads pool adaptively to 4x4 (the
  paper's 5x5/3 average pool only gives 4x4 on a 14-16 px map), and the main
  head averages globally (identical to the paper's 7x7/1 pool at 224 px).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MIN_IMAGE_SIZE",
    "GoogLeNet",
    "GoogLeNetOutput",
    "Inception",
    "InceptionAux",
    "LocalResponseNorm",
    "conv1x1",
    "count_parameters",
    "cropped_conv2d",
    "local_response_norm",
    "small_map_conv2d",
]

InitName = Literal["caffe", "pytorch", "kaiming"]

# The smallest input side the network accepts: below it maxpool4 receives a
# 1x1 map and its ceil-rounded 3x3/2 window yields nothing (a test tries the
# sizes around it).
MIN_IMAGE_SIZE = 31


class GoogLeNetOutput(NamedTuple):
    """What `GoogLeNet.forward` returns in every mode.

    `aux1` and `aux2` are None in eval mode or when the model has no
    auxiliary heads, so callers never branch on the return type.
    """

    logits: Tensor
    aux1: Tensor | None = None
    aux2: Tensor | None = None


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
    """Add to `out` (which holds t's own channel) t's other channels in a window of `size`, zero-padded like PyTorch's LRN."""
    before, after = size // 2, (size - 1) // 2
    if transpose:
        before, after = after, before
    channels = t.shape[1]
    for shift in range(1, before + 1):  # channel c takes c - shift
        out[:, shift:] += t[:, : channels - shift]
    for shift in range(1, after + 1):  # channel c takes c + shift
        out[:, : channels - shift] += t[:, shift:]
    return out


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Same result as `torch.nn.functional.local_response_norm`, faster on 4-D input."""
    if x.dim() != 4:
        return F.local_response_norm(x, size, alpha, beta, k)
    return _LRNFunction.apply(x, size, alpha, beta, k)


class LocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` with the faster kernel above (same math, same repr)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, fast: bool = True) -> None:
        super().__init__(size, alpha, beta, k)
        self.fast = fast

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        if dtype in (torch.bfloat16, torch.float16):
            # Under autocast (or a half-precision model): alpha/size = 2e-5 is far below
            # bf16's resolution near k = 1, so the normalisation is computed in float32.
            x = x.float()
        y = local_response_norm(x, self.size, self.alpha, self.beta, self.k) if self.fast else super().forward(x)
        return y.to(dtype)


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Convolution with bias followed by ReLU: every convolution of the network."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def max_pool() -> nn.MaxPool2d:
    """Caffe's 3x3/2 max pool: no padding, output size rounded up."""
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class Inception(nn.Module):
    """Four branches concatenated on channels: 1x1 / 3x3 / 5x5 / pool proj."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = conv_relu(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(conv_relu(in_channels, ch3x3red, 1), conv_relu(ch3x3red, ch3x3, 3, padding=1))
        # A true 5x5, as in the paper; torchvision's googlenet uses 3x3 here.
        self.branch3 = nn.Sequential(conv_relu(in_channels, ch5x5red, 1), conv_relu(ch5x5red, ch5x5, 5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), conv_relu(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        # Run the three 1x1 convolutions that read x as one wider convolution:
        # the same weights and the same sums, one bigger matrix multiply.
        self.fuse_1x1 = True
        # Skip the kernel taps of the 3x3 and 5x5 convolutions that can only
        # ever fall on zero padding (maps smaller than the kernel: 1x1 and 2x2
        # at 32 px input); they add exact zeros, so the sums are the same.
        self.crop_kernels = True
        # Run the 1x1 convolutions as plain matrix multiplies on channels_last
        # CPU tensors (see `conv1x1`): same sums, faster weight gradients.
        self.matmul_1x1 = True
        # On maps so small that the cropped kernel links every output pixel to
        # every input pixel (2x2 and 1x1 maps), run the 3x3 and 5x5
        # convolutions as one matrix multiply over the whole map (see
        # `small_map_conv2d`): the same products, without oneDNN's overhead.
        self.matmul_small_maps = True

    # The switches above, each exact; `summary` turns them off to list every layer.
    FAST_PATHS = ("fuse_1x1", "crop_kernels", "matmul_1x1", "matmul_small_maps")

    def forward(self, x: Tensor) -> Tensor:
        if not self.fuse_1x1:
            b1 = self.branch1(x)  # branch order kept: the summary lists layers as they run
            b2 = self._spatial(self.branch2[0](x), self.branch2[1])
            b3 = self._spatial(self.branch3[0](x), self.branch3[1])
            return torch.cat([b1, b2, b3, self._pool_proj(x)], 1)
        convs = (self.branch1[0], self.branch2[0][0], self.branch3[0][0])
        weight = torch.cat([c.weight for c in convs])
        bias = torch.cat([c.bias for c in convs])
        y = F.relu(self._conv1x1(x, weight, bias), inplace=True)
        b1, b2, b3 = y.split([c.out_channels for c in convs], 1)
        return torch.cat([b1, self._spatial(b2, self.branch2[1]), self._spatial(b3, self.branch3[1]), self._pool_proj(x)], 1)

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
    if isinstance(conv.padding, str) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return conv(x)
    (ph, pw), (kh, kw) = conv.padding, conv.kernel_size
    h, w = x.shape[-2:]
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    whole_map = matmul_small_maps and conv.bias is not None and (rh, rw) == (h - 1, w - 1)  # every output pixel sees every input pixel
    if (kh, kw) != (2 * ph + 1, 2 * pw + 1) or ((rh, rw) == (ph, pw) and not whole_map):
        return conv(x)
    weight = conv.weight[:, :, ph - rh : ph + rh + 1, pw - rw : pw + rw + 1]
    if whole_map:
        return small_map_conv2d(x, weight, conv.bias)
    return F.conv2d(x, weight, conv.bias, padding=(rh, rw))


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


def _gemm_operands(x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The operands of a convolution run as matrix multiplies, or None where that path does not apply.

    It applies to channels_last CPU tensors outside torch.compile (which should
    see a plain convolution); under CPU autocast the operands are cast as
    autocast casts a convolution's.
    """
    if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or torch.compiler.is_compiling():
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    return (x, weight, bias) if x.dtype == weight.dtype == bias.dtype else None


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`F.conv2d(x, weight, bias)` for a 1x1 kernel; a GEMM on channels_last CPU tensors."""
    operands = _gemm_operands(x, weight, bias)
    return F.conv2d(x, weight, bias) if operands is None else _Conv1x1Function.apply(*operands)


@functools.cache
def _pair_taps(h: int, w: int) -> Tensor:
    """The kernel tap (row * (2w-1) + column) linking input pixel q to output pixel p on an h x w map, at [q * h w + p]."""
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
        wd = slices.index_select(0, taps).view(pixels, pixels, c, out_channels).transpose(1, 2).reshape(pixels * c, pixels * out_channels)
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
            dwd = (x2.t() @ g2).view(pixels, c, pixels, out_channels).transpose(1, 2).reshape(-1, c, out_channels)  # [(q, p), ci, co]
            dslices = g.new_zeros(kh * kw, c, out_channels).index_add_(0, _pair_taps(h, w), dwd)
            dw = dslices.view(kh, kw, c, out_channels).permute(3, 2, 0, 1)
        if ctx.needs_input_grad[2]:
            db = g2.sum(0).view(pixels, out_channels).sum(0)
        return dx, dw, db


def small_map_conv2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=(h-1, w-1))` for an h x w map and a (2h-1) x (2w-1) kernel; a GEMM on channels_last CPU tensors."""
    h, w = x.shape[-2:]
    if weight.shape[-2:] != (2 * h - 1, 2 * w - 1):
        raise ValueError(f"small_map_conv2d needs a {2 * h - 1}x{2 * w - 1} kernel on a {h}x{w} map, got {tuple(weight.shape[-2:])}")
    if x.dim() == 4 and x.stride(1) == 1:  # a channel slice of a channels_last map (an Inception branch): copy the few pixels
        x = x.contiguous(memory_format=torch.channels_last)
    operands = _gemm_operands(x, weight, bias)
    if operands is None:
        return F.conv2d(x, weight, bias, padding=(h - 1, w - 1))
    return _SmallMapConvFunction.apply(*operands)


class AuxPool(nn.Module):
    """The auxiliary heads' 5x5/3 average pool, or a 4x4 adaptive one.

    The paper's pool maps the 14x14 grid of a 224 px input to 4x4. On other
    grids it would change the FC's input size, so there we pool adaptively to
    4x4 and keep the FC at 2048 -> 1024 (a deviation forced by the input size).
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.shape[-2] - 5) // 3 + 1 == 4 and (x.shape[-1] - 5) // 3 + 1 == 4:
            return F.avg_pool2d(x, 5, stride=3)  # the paper's pool (at 224 px: 14x14 -> 4x4, as Caffe)
        return F.adaptive_avg_pool2d(x, 4)  # deviation: not 14-16 px, see the docstring


class InceptionAux(nn.Module):
    """Auxiliary classifier: avg pool -> 1x1 conv 128 -> FC 1024 -> dropout -> FC."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = AuxPool()
        self.conv = conv_relu(in_channels, 128, 1)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Sequential(nn.Linear(128 * 4 * 4, 1024), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)  # N x C x 4 x 4
        x = self.conv(x)  # N x 128 x 4 x 4
        x = self.flatten(x)  # N x 2048
        x = self.fc1(x)  # N x 1024
        x = self.dropout(x)
        return self.fc2(x)  # N x num_classes


class GoogLeNet(nn.Module):
    """The GoogLeNet of Table 1, with Caffe's LRN, pooling, biases and init.

    Args:
        num_classes: size of the classifier outputs.
        in_channels: channels of the input image (3 in the paper).
        aux_logits: build the two auxiliary classifiers (used in training only).
        dropout: dropout before the main classifier (0.4 in the paper).
        dropout_aux: dropout inside the auxiliary classifiers (0.7 in the paper).
        init: "caffe" (paper/Caffe: Xavier-uniform, bias 0.2, classifier biases 0),
            "pytorch" (PyTorch's layer defaults) or "kaiming" (He-normal, bias 0).
        fast_lrn: use the faster LRN kernel; same outputs as nn.LocalResponseNorm.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.4,
        dropout_aux: float = 0.7,
        init: InitName = "caffe",
        fast_lrn: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.aux_logits = aux_logits

        self.conv1 = conv_relu(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = max_pool()
        self.lrn1 = LocalResponseNorm(5, 1e-4, 0.75, 1.0, fast=fast_lrn)
        self.conv2 = conv_relu(64, 64, 1)
        self.conv3 = conv_relu(64, 192, 3, padding=1)
        self.lrn2 = LocalResponseNorm(5, 1e-4, 0.75, 1.0, fast=fast_lrn)
        self.maxpool2 = max_pool()

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = max_pool()

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = max_pool()

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None

        # The paper's 7x7/1 average pool is a global average at 224 px; global
        # averaging keeps the head valid at other sizes.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

        # Apply conv1's ReLU after maxpool1 instead of before it: max and ReLU
        # commute (max of ReLUs = ReLU of the max, and the gradient reaches the
        # same input), so outputs and gradients are the same with the ReLU and
        # its backward on a quarter of the pixels of the network's largest map.
        self.relu_after_pool1 = True

        self.reset_parameters(init)

    # The switch above, exact like Inception's; `summary` turns it off to list the layers in the paper's order.
    FAST_PATHS = ("relu_after_pool1",)

    def reset_parameters(self, init: InitName = "caffe") -> None:
        """Initialise every layer; "caffe" is the paper's (BVLC) scheme."""
        if init not in ("caffe", "pytorch", "kaiming"):
            raise ValueError(f"unknown init {init!r}: use caffe, pytorch or kaiming")
        classifiers = {self.fc} | ({self.aux1.fc2, self.aux2.fc2} if self.aux_logits else set())
        for m in self.modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            if init == "pytorch":  # deviation (option): PyTorch's default init
                m.reset_parameters()
            elif init == "kaiming":  # deviation (option): He-normal, zero bias
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            else:
                # Caffe's "xavier" filler: uniform +-sqrt(3 / fan_in).
                fan_in = m.weight[0].numel()
                bound = math.sqrt(3.0 / fan_in)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.constant_(m.bias, 0.0 if m in classifiers else 0.2)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear ValueError when `x` cannot pass through the network."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input N x {self.in_channels} x H x W, got {tuple(x.shape)}; "
                f"pass images with {self.in_channels} channel(s)"
            )
        if min(x.shape[-2:]) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is below the network's minimum of "
                f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}: use a larger image size"
            )

    def features(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The convolutional trunk; returns the final map and the aux logits."""
        self.check_input(x)
        # N x 3 x 224 x 224
        if self.relu_after_pool1:
            x = self.conv1[1](self.maxpool1(self.conv1[0](x)))  # N x 64 x 56 x 56
        else:
            x = self.conv1(x)  # N x 64 x 112 x 112
            x = self.maxpool1(x)  # N x 64 x 56 x 56
        x = self.lrn1(x)  # N x 64 x 56 x 56
        x = self.conv2(x)  # N x 64 x 56 x 56
        x = self.conv3(x)  # N x 192 x 56 x 56
        x = self.lrn2(x)  # N x 192 x 56 x 56
        x = self.maxpool2(x)  # N x 192 x 28 x 28

        x = self.inception3a(x)  # N x 256 x 28 x 28
        x = self.inception3b(x)  # N x 480 x 28 x 28
        x = self.maxpool3(x)  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None  # N x num_classes

        x = self.inception4b(x)  # N x 512 x 14 x 14
        x = self.inception4c(x)  # N x 512 x 14 x 14
        x = self.inception4d(x)  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None  # N x num_classes

        x = self.inception4e(x)  # N x 832 x 14 x 14
        x = self.maxpool4(x)  # N x 832 x 7 x 7
        x = self.inception5a(x)  # N x 832 x 7 x 7
        x = self.inception5b(x)  # N x 1024 x 7 x 7
        return x, aux1, aux2

    def forward(self, x: Tensor) -> GoogLeNetOutput:
        x, aux1, aux2 = self.features(x)
        x = self.avgpool(x)  # N x 1024 x 1 x 1
        x = self.flatten(x)  # N x 1024
        x = self.dropout(x)
        logits = self.fc(x)  # N x num_classes
        return GoogLeNetOutput(logits, aux1, aux2)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
