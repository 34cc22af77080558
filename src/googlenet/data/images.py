"""Image files to uint8 tensors: PIL's decoding with one-line errors, grey/colour conversion, resizing and
centre crops (`load_image`, as evaluation and predict read a file), and whole images for the streamed
training crops (`read_image`: torchvision's libjpeg-turbo decoder for JPEGs).
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def open_image(path: Path, note: bool = True):
    """PIL's Image.open, its DecompressionBombWarning (over 89 Mpx) replaced by one line of ours on stderr (`note`).

    Images over twice that limit raise PIL's DecompressionBombError, which the callers turn into a DataError.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    limit = Image.MAX_IMAGE_PIXELS
    if note and limit and img.width * img.height > limit:
        size = f"{img.width}x{img.height} pixels ({img.width * img.height / 1e6:.0f} Mpx)"
        print(f"note: image {path} is {size}: decoding it takes time and memory", file=sys.stderr)
    return img


def _is_colour(img) -> bool:
    """Whether a PIL image holds colour: an RGB-like mode, or a palette with colours in it."""
    if img.mode != "P":
        return img.mode not in ("L", "1", "I", "I;16", "I;16B", "I;16L", "LA", "F")
    r, g, b = img.convert("RGB").split()
    return ImageChops.difference(r, g).getbbox() is not None or ImageChops.difference(g, b).getbbox() is not None


def load_image(path: Path, channels: int, size: int, crop: bool = False, note_colour: bool = False) -> Tensor:
    """Read one image file as a uint8 C x size x size tensor (clear error if unreadable).

    The whole image is resized to size x size, or with `crop` its shorter side
    is resized to `size` and the centre square kept (the aspect ratio kept).
    `note_colour`: say on stderr when a colour image is converted to grey.
    """
    with _image_errors(path), open_image(path) as img:
        if note_colour and channels == 1 and _is_colour(img):  # before draft(), which may decode JPEGs as grey
            print(f"note: {path} is a colour image; converted to grey for this 1-channel model", file=sys.stderr)
        img.draft("L" if channels == 1 else "RGB", (size, size))  # fast JPEG downscale
        img = _convert(img, channels)
        if crop:
            w, h = img.size
            scale = size / min(w, h)
            if max(w, h) * scale > 4 * size:  # a long strip (1 x 60000 px): scale its centre square, not 256 x 15 M
                side = min(w, h)
                left, top = (w - side) / 2, (h - side) / 2
                img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
            else:
                img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
                left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
                img = img.crop((left, top, left + size, top + size))
        else:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return _chw(arr)


def _convert(img, channels: int):
    """A PIL image as 8-bit grey (`channels` 1) or RGB: 16-bit grey scaled, not clipped; transparency flattened."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits, not clip
        img = Image.fromarray((np.asarray(img.convert("I"), dtype=np.int64) // 257).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent background: flatten onto black (MNIST's background) for grey models
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if channels == 1 else (255, 255, 255, 255))
        img = Image.alpha_composite(flat, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def read_image(path: Path, channels: int) -> Tensor:
    """One image file at its full size as uint8 C x H x W, converted as `load_image` converts it (for the streamed
    training crops).

    JPEGs decode with torchvision.io.decode_image (libjpeg-turbo straight to a tensor); other formats, and any
    file it refuses, go through PIL as in `load_image`. PIL reads the header first either way, so the pixel
    limit and the one-line errors are load_image's.
    """
    with _image_errors(path), open_image(path) as img:
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            # imported on first use: `import torchvision` takes about a second, and only streamed training decodes here
            from torchvision.io import ImageReadMode, decode_image

            try:
                data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
                return decode_image(data, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)
            except RuntimeError:
                pass  # truncated or corrupt: PIL's reading below names the problem as the in-memory path does
        arr = np.asarray(_convert(img, channels), dtype=np.uint8)
    return _chw(arr)


@contextmanager
def _image_errors(path: Path):
    """An unreadable or oversized image file as load_image's and read_image's one-line DataError."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {path} has too many pixels to decode safely ({exc}): resize it") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; pass a valid PNG or JPEG file") from None


def _chw(arr: np.ndarray) -> Tensor:
    """A PIL image's H x W (grey) or H x W x C uint8 array as a C x H x W tensor of its own."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)
