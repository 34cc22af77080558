"""GoogLeNet (Inception-v1), exactly as in the paper and the BVLC Caffe model.

Sources: Szegedy et al., "Going Deeper with Convolutions" (arXiv:1409.4842),
Table 1 and sections 5-7; BVLC Caffe `models/bvlc_googlenet/train_val.prototxt`
for the details the paper leaves out (biases, LRN constants, ceil-rounded
pooling, initialisation). Layer names follow Table 1 rows; block arguments
follow its columns. This module imports only torch and is the network and
nothing else: the exact speed-ups that training uses are applied to it from
outside by `googlenet.kernels.accelerate`.

Deviations from the paper are options or are forced by the input size, and
each is commented where it happens:
- `init="pytorch" | "kaiming"` replaces Caffe's Xavier + bias 0.2 init.
- inputs other than 224 px: the auxiliary heads pool adaptively to 4x4 (the
  paper's 5x5/3 average pool only gives 4x4 on a 14-16 px map), and the main
  head averages globally (identical to the paper's 7x7/1 pool at 224 px).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MIN_IMAGE_SIZE", "GoogLeNet", "GoogLeNetOutput", "Inception", "InceptionAux", "count_parameters"]

InitName = Literal["caffe", "pytorch", "kaiming"]
INIT_SCHEMES: tuple[InitName, ...] = get_args(InitName)  # the init= names GoogLeNet takes

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


def conv_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
) -> nn.Sequential:
    """Convolution with bias followed by ReLU: every convolution of the network."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
    )


def max_pool() -> nn.MaxPool2d:
    """Caffe's 3x3/2 max pool: no padding, output size rounded up."""
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


def local_response_norm() -> nn.LocalResponseNorm:
    """Caffe's LRN across 5 channels: x / (1 + 1e-4/5 * sum of x^2)^0.75."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Four branches concatenated on channels: 1x1 / 3x3 / 5x5 / pool proj (Table 1's columns)."""

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
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), conv_relu(in_channels, pool_proj, 1)
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:  # N x in_channels x H x W
        b1 = self.branch1(x)  # N x ch1x1 x H x W
        b2 = self.branch2(x)  # N x ch3x3 x H x W
        b3 = self.branch3(x)  # N x ch5x5 x H x W
        b4 = self.branch4(x)  # N x pool_proj x H x W
        return torch.cat([b1, b2, b3, b4], 1)  # N x out_channels x H x W


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

    def forward(self, x: Tensor) -> Tensor:  # N x C x 14 x 14 at 224 px
        x = self.pool(x)  # N x C x 4 x 4
        x = self.conv(x)  # N x 128 x 4 x 4
        x = self.flatten(x)  # N x 2048
        x = self.fc1(x)  # N x 1024
        x = self.dropout(x)  # N x 1024
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
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.4,
        dropout_aux: float = 0.7,
        init: InitName = "caffe",
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.aux_logits = aux_logits

        self.conv1 = conv_relu(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = max_pool()
        self.lrn1 = local_response_norm()
        self.conv2 = conv_relu(64, 64, 1)
        self.conv3 = conv_relu(64, 192, 3, padding=1)
        self.lrn2 = local_response_norm()
        self.maxpool2 = max_pool()

        #                              in   1x1 3x3red 3x3 5x5red 5x5 pool proj
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

        self.reset_parameters(init)

    def reset_parameters(self, init: InitName = "caffe") -> None:
        """Initialise every layer; "caffe" is the paper's (BVLC) scheme."""
        if init not in INIT_SCHEMES:
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

    def forward(self, x: Tensor) -> GoogLeNetOutput:
        self.check_input(x)  # N x 3 x 224 x 224
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
        x = self.avgpool(x)  # N x 1024 x 1 x 1
        x = self.flatten(x)  # N x 1024
        x = self.dropout(x)  # N x 1024
        logits = self.fc(x)  # N x num_classes
        return GoogLeNetOutput(logits, aux1, aux2)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
