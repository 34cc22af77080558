"""What happens to a batch of stored uint8 images before the model, like torchvision's
references/classification/presets.py: the training augmentation (`Augment`) and the evaluation
geometry, folded into one `grid_sample` per batch by `batch_transform`; the input normalisation a
checkpoint carries (`Preprocess`); and the paper's random crops of streamed image folders
(`train_transform`, seeded per image by `crop_seed`). The TTA views of evaluation build on
`evaluation_view` and `resize_shorter` (evaluate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from ..config import MAX_IMAGE_SIZE
from ..errors import DataError

if TYPE_CHECKING:
    from .datasets import Dataset


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, applied per image on whole batches."""

    rotate: float = 0.0  # max rotation, degrees
    translate: float = 0.0  # max shift, fraction of the image side
    scale: float = 0.0  # max relative zoom in or out
    hflip: bool = False  # random horizontal flips (never for digits)
    crop_padding: int = 0  # random crop after zero-padding by this many native pixels (CIFAR style)
    elastic: float = 0.0  # elastic distortion strength alpha, native pixels (Simard et al. 2003: 34)
    elastic_sigma: float = 4.0  # smoothness of the elastic displacement field, native pixels (Simard: 4)

    @property
    def active(self) -> bool:
        return bool(self.rotate or self.translate or self.scale or self.hflip or self.crop_padding or self.elastic)


DIGITS = Augment(rotate=10.0, translate=0.1, scale=0.1)


PHOTOS = Augment(hflip=True, crop_padding=4)


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn stored uint8 images into model inputs.

    Saved in every checkpoint, so evaluate, predict and export apply exactly
    this. Pixels are scaled to 0-1 before `mean` and `std` apply, so Caffe's
    0-255 input minus a mean is mean = m / 255 with std = 1 / 255.
    """

    image_size: int  # model input side
    in_channels: int  # model input channels
    data_channels: int  # channels of the stored images
    native_size: int  # side the stored images have
    mean: tuple[float, ...]  # per model input channel, in `channel_order`
    std: tuple[float, ...]
    channel_order: str = "RGB"  # "BGR": colour channels reversed before normalising (Caffe's weights)
    # Evaluation and predict: None resizes the whole image to image_size; a side
    # resizes the shorter side to it and takes the centre image_size crop
    # (ImageNet's 256 -> 224).
    resize: int | None = None

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 (or 0-255 float) N x C x h x w images -> the model's input, as evaluation and predict make it."""
        return batch_transform(images, self)

    def to_dict(self) -> dict:
        """As saved in checkpoints; channel_order and resize only when set, so older googlenet versions still read the rest."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        return {k: v for k, v in d.items() if not (k == "channel_order" and v == "RGB" or k == "resize" and v is None)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def for_dataset(cls, data: Dataset, image_size: int, in_channels: int | None = None) -> Preprocess:
        """The preprocessing of `data`'s stored images for a model of `image_size` px and `in_channels` (default: the data's)."""
        return cls(
            image_size=image_size,
            in_channels=in_channels or data.channels,
            data_channels=data.channels,
            native_size=data.native_size,
            mean=data.mean,
            std=data.std,
            resize=data.resize,
        )


def eval_side(image_size: int) -> int:
    """The shorter side evaluation resizes to before its centre crop: the paper's 256 for 224 px, in proportion otherwise."""
    return min(round(image_size * 256 / 224), MAX_IMAGE_SIZE)


def resize_shorter(x: Tensor, side: int) -> Tensor:
    """Bilinear resize of N x C x h x w images so that the shorter side is `side` (aspect ratio kept; antialiased when shrinking)."""
    h, w = x.shape[-2:]
    if min(h, w) == side:
        return x
    scale = side / min(h, w)
    return F.interpolate(x, size=(max(side, round(h * scale)), max(side, round(w * scale))), mode="bilinear", align_corners=False, antialias=scale < 1)


def evaluation_view(x: Tensor, size: int, resize: int | None = None) -> Tensor:
    """Evaluation's geometry: the whole image resized to size x size, or with `resize` (`Preprocess.resize`)
    the shorter side resized to it and the centre size x size crop."""
    if resize and x.shape[-2:] != (size, size):
        x = resize_shorter(x, resize)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        return x[..., top : top + size, left : left + size]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return x


def batch_transform(
    images: Tensor,
    pre: Preprocess,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """uint8 N x C x h x w -> normalised float N x in_channels x S x S, on images' device.

    With `augment`, each image gets its own random rotation, zoom, shift,
    crop, flip and elastic distortion, all folded into one `grid_sample` that
    also resizes.
    Without it, a plain bilinear resize (the same sampling as the identity
    transform) so that training and evaluation see the same geometry.
    """
    x = images.to(torch.float32, copy=True).div_(255)  # a copy even of float input: the caller's tensor stays as it was
    n, size = x.shape[0], pre.image_size
    if augment is not None and augment.active:
        dev = x.device

        def uniform(limit: float) -> Tensor:
            return (torch.rand(n, generator=generator, device="cpu") * 2 - 1).mul_(limit).to(dev)

        angle = uniform(math.radians(augment.rotate))
        zoom = 1.0 + uniform(augment.scale)  # >1 zooms in
        shift_x, shift_y = uniform(2 * augment.translate), uniform(2 * augment.translate)
        if augment.crop_padding:  # a random crop of the zero-padded image is a shift by whole pixels
            pixel = 2.0 / x.shape[-1]  # one native pixel in grid coordinates
            p = augment.crop_padding
            shift_x = shift_x + (torch.randint(-p, p + 1, (n,), generator=generator) * pixel).to(dev)
            shift_y = shift_y + (torch.randint(-p, p + 1, (n,), generator=generator) * pixel).to(dev)
        flip = torch.ones(n, device=dev)
        if augment.hflip:
            flip = (torch.rand(n, generator=generator) < 0.5).float().mul_(-2).add_(1).to(dev)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
        )
        grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
        if augment.elastic:
            grid = grid + elastic_field(n, size, x.shape[-1], augment.elastic, augment.elastic_sigma, generator).to(dev)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        x = evaluation_view(x, size, pre.resize)
    if pre.channel_order == "BGR" and x.shape[1] == 3:
        x = x.flip(1)  # the weights were trained on BGR input (Caffe)
    mean = torch.tensor(pre.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    if pre.in_channels != x.shape[1]:
        if x.shape[1] == 1:
            x = x.expand(-1, pre.in_channels, -1, -1)  # grey copied to every channel (the seed's 3-channel MNIST)
        elif pre.in_channels == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot map {x.shape[1]}-channel images to {pre.in_channels} input channels: use --in-channels {x.shape[1]}")
    return x.contiguous()


def elastic_field(
    n: int, size: int, native: int, alpha: float, sigma: float, generator: torch.Generator | None = None
) -> Tensor:
    """Per-image elastic displacements (Simard et al. 2003) as grid offsets, n x size x size x 2.

    Uniform noise in [-1, 1] per output pixel and axis, smoothed by a Gaussian
    of `sigma` native pixels and scaled to `alpha` native pixels, in the
    [-1, 1] coordinates of `grid_sample`. Made on the CPU with `generator`.
    """
    noise = torch.rand(n, 2, size, size, generator=generator).mul_(2).sub_(1)
    s = sigma * size / native  # in output pixels
    radius = min(math.ceil(3 * s), size - 1)  # reflect padding needs radius < size
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / s) ** 2)
    # The blur with reflect padding as a size x size matrix (row i: the blurred unit vector e_i),
    # so the separable blur is two small matrix products (a 2-D convolution is 20x slower here).
    blur = F.conv1d(F.pad(torch.eye(size)[:, None], (radius, radius), mode="reflect"), (taps / taps.sum())[None, None])[:, 0]
    offsets = blur.T @ noise @ blur
    return offsets.mul_(2 * alpha / native).permute(0, 2, 3, 1)


def train_transform(image_size: int, hflip: bool = True, color_jitter: float = 0.0):
    """The paper's training crops on a uint8 C x H x W tensor: 8-100% of the area, aspect 3/4-4/3, resized (antialiased) to image_size."""
    steps = [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:  # deviation: torchvision's jitter, not Howard 2013's relighting (the README's deviations)
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps)


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image `index`'s random crop in `epoch`: the same whichever worker, process or resume reads it."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % (2**63)
