"""What happens to a batch of stored uint8 images before the model, like torchvision's
references/classification/presets.py: the training augmentation (`Augment`) and the evaluation
geometry, folded into one `grid_sample` per batch by `batch_transform`; the input normalisation a
checkpoint carries (`Preprocess`); and the paper's random crops of streamed image folders
(`train_transform`, seeded per image by `crop_seed`). Also the test-time views of evaluation
(`tta_views`: flips and the paper's multi-crop of section 7), built on the same `evaluation_view`
and `resize_shorter`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import CHOICES, MAX_IMAGE_SIZE, TrainConfig
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


# The datasets' defaults (datasets.DATASETS): digits are never flipped; photos get CIFAR's padded crops and flips.
DIGITS = Augment(rotate=10.0, translate=0.1, scale=0.1)
PHOTOS = Augment(hflip=True, crop_padding=4)

# The Augment fields a run may set; each one left unset (None in TrainConfig) is the dataset's.
AUGMENT_SETTINGS = ("rotate", "translate", "scale", "hflip", "crop_padding", "elastic")


def augmentation_for(cfg: TrainConfig, default: Augment) -> Augment:
    """The one rule for which augmentation a run applies: none without `cfg.augment`, else each of `cfg`'s
    settings, and the dataset's `default` (DATASETS) for every setting left unset (None). config.yaml
    records the result."""
    if not cfg.augment:
        return Augment()
    chosen = {k: getattr(default, k) if getattr(cfg, k) is None else getattr(cfg, k) for k in AUGMENT_SETTINGS}
    return Augment(**chosen, elastic_sigma=cfg.elastic_sigma)


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
        """As saved in checkpoints; channel_order and resize only when set, so older googlenet versions still read
        the rest."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        return {k: v for k, v in d.items() if not (k == "channel_order" and v == "RGB" or k == "resize" and v is None)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def for_dataset(cls, data: Dataset, image_size: int, in_channels: int | None = None) -> Preprocess:
        """The preprocessing of `data`'s stored images for a model of `image_size` px and `in_channels` (default:
        the data's)."""
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
    """The shorter side evaluation resizes to before its centre crop: the paper's 256 for 224 px, in proportion
    otherwise."""
    return min(round(image_size * 256 / 224), MAX_IMAGE_SIZE)


def resize_shorter(x: Tensor, side: int) -> Tensor:
    """Bilinear resize of N x C x h x w images so that the shorter side is `side` (aspect ratio kept; antialiased
    when shrinking)."""
    h, w = x.shape[-2:]
    if min(h, w) == side:
        return x
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)


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
    if augment is not None and augment.active:
        x = _augmented(x, pre.image_size, augment, generator)
    else:
        x = evaluation_view(x, pre.image_size, pre.resize)
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
            raise DataError(
                f"cannot map {x.shape[1]}-channel images to {pre.in_channels} input channels: "
                f"use --in-channels {x.shape[1]}"
            )
    return x.contiguous()


def _augmented(x: Tensor, size: int, augment: Augment, generator: torch.Generator | None) -> Tensor:
    """Float N x C x h x w images, each rotated, zoomed, shifted, cropped, flipped and distorted at random and resized
    to size x size: one affine grid per image (plus the elastic field), one `grid_sample` for the batch. The random
    numbers come from `generator` on the CPU, so they are the same on every device."""
    n, dev = x.shape[0], x.device

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
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    if augment.elastic:
        grid = grid + elastic_field(n, size, x.shape[-1], augment.elastic, augment.elastic_sigma, generator).to(dev)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
    padded = F.pad(torch.eye(size)[:, None], (radius, radius), mode="reflect")
    blur = F.conv1d(padded, (taps / taps.sum())[None, None])[:, 0]
    offsets = blur.T @ noise @ blur
    return offsets.mul_(2 * alpha / native).permute(0, 2, 3, 1)


# ---------------------------------------------------------------- test-time views

TTA_MODES = CHOICES["tta"]
_VIEW_COUNTS = {"none": 1, "flip": 2, "crops10": 10, "crops144": 144}
# The paper's sides of the resized image at 224 px input (section 7); scaled in proportion for other sizes.
CROPS144_SIDES = (256, 288, 320, 352)
CROPS10_SIDE = 256


def tta_view_count(mode: str) -> int:
    """Views per image of a TTA mode: none 1, flip 2, crops10 10, crops144 144."""
    if mode not in _VIEW_COUNTS:
        raise ValueError(f"unknown TTA mode {mode!r}: use one of {', '.join(TTA_MODES)}")
    return _VIEW_COUNTS[mode]


def _resize(x: Tensor, h: int, w: int) -> Tensor:
    if x.shape[-2:] == (h, w):
        return x
    shrinks = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrinks)


def _five_crops(x: Tensor, size: int) -> list[Tensor]:
    """The 4 corners (top-left, top-right, bottom-left, bottom-right) and the centre size x size crop."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return [
        x[..., :size, :size],
        x[..., :size, w - size :],
        x[..., h - size :, :size],
        x[..., h - size :, w - size :],
        x[..., top : top + size, left : left + size],
    ]


def weighted_views(
    images: Tensor, image_size: int, mode: str, resize: int | None = None, merge: bool = True
) -> Iterator[tuple[Tensor, int]]:
    """(view, multiplicity) pairs in the order of `tta_views`, made lazily; the multiplicities sum to
    `tta_view_count(mode)`.

    Each view is a new float 0-255 tensor N x C x image_size x image_size that
    the caller may modify. With `merge`, views that coincide (the three squares
    of a square image) are made once, with multiplicity 3, so that a weighted
    average over these pairs equals the average over all the views; without
    it every multiplicity is 1.
    """
    count = tta_view_count(mode)
    x = images.float()
    size = image_size
    if mode in ("none", "flip"):  # the geometry of batch_transform without augmentation
        view = evaluation_view(x, size, resize).clone(memory_format=torch.contiguous_format)
        mirror = view.flip(-1) if mode == "flip" else None  # made before the caller may modify `view`
        yield view, 1
        if mirror is not None:
            yield mirror, 1
        return
    if mode == "crops10":
        for crop in _five_crops(resize_shorter(x, round(size * CROPS10_SIDE / 224)), size):
            crop = crop.clone(memory_format=torch.contiguous_format)
            mirror = crop.flip(-1)
            yield crop, 1
            yield mirror, 1
        return
    made = 0
    for side in CROPS144_SIDES:
        scaled = resize_shorter(x, round(size * side / 224))
        h, w = scaled.shape[-2:]
        short, long = min(h, w), max(h, w)
        offsets = (0, (long - short) // 2, long - short)  # left, centre, right (top, centre, bottom if portrait)
        squares = [(offsets[0], 3)] if merge and long == short else [(o, 1) for o in offsets]
        for offset, repeat in squares:
            square = scaled[..., :, offset : offset + short] if w > h else scaled[..., offset : offset + short, :]
            for crop in [*_five_crops(square, size), _resize(square, size, size)]:
                crop = crop.clone(memory_format=torch.contiguous_format)
                mirror = crop.flip(-1)
                yield crop, repeat
                yield mirror, repeat
                made += 2 * repeat
    assert made == count


def tta_views(images: Tensor, image_size: int, mode: str, resize: int | None = None) -> Tensor:
    """The test-time views of a batch: V x N x C x image_size x image_size, float 0-255.

    `images` are stored images N x C x h x w (uint8 or float 0-255, any h and w).
    Every view is followed by its mirror (left-right flip):

    - none (V = 1): the image as evaluation sees it (`evaluation_view`: resized to
      image_size, or with `resize` its shorter side resized and centre-cropped, as `Preprocess.resize`);
    - flip (2): that view and its mirror;
    - crops10 (10): the shorter side resized to image_size * 256/224, then the
      4 corner and the centre image_size crops, each with its mirror;
    - crops144 (144, the paper's section 7): the shorter side resized to
      image_size * s/224 for s = 256, 288, 320, 352; of each, the left, centre
      and right squares (top, centre, bottom for portrait images); of each
      square, the 4 corner and the centre crops and the whole square resized to
      image_size; each with its mirror. View index
      ((scale * 3 + square) * 6 + crop) * 2 + mirrored.

    Resizing is bilinear (align_corners=False), antialiased when it shrinks.
    `evaluate.evaluate_split` makes the same views lazily; this function stacks them all.
    """
    return torch.stack([v for v, _ in weighted_views(images, image_size, mode, resize, merge=False)])


# ---------------------------------------------------------------- streamed image folders


def train_transform(image_size: int, hflip: bool = True, color_jitter: float = 0.0):
    """The paper's training crops on a uint8 C x H x W tensor: 8-100% of the area, aspect 3/4-4/3, resized
    (antialiased) to image_size."""
    # imported on first use: `import torchvision` takes about a second, and only streamed folders crop this way
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter:  # deviation: torchvision's jitter, not Howard 2013's relighting (the README's deviations)
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps)


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image `index`'s random crop in `epoch`: the same whichever worker, process or resume reads it."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % (2**63)
