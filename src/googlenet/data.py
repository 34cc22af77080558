"""Datasets held in memory as uint8 tensors, seeded splits, and batch transforms.

Every dataset becomes three `Split`s (train, val, test) of uint8 images
N x C x H x W and int64 labels. Transforms run on whole batches as tensor ops
on the training device: one `grid_sample` does augmentation (rotation, scale,
translation, elastic distortion) and the resize to the model's image size at
once, then channel expansion and normalisation. Nothing here reads the disk after loading.

An image folder too big for memory (`--data-loading stream`, or auto over
`--memory-budget`) becomes `FileSplit`s instead: the same files, labels and
seeded splits, read while training by stream.py's DataLoader workers.

MNIST ships inside the package (see datasets/mnist/README.md for its source
and licence) and is checked against the official MD5s on every load.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import math
import os
import struct
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import MAX_CLASSES, MAX_IMAGE_SIZE
from .errors import UserError

__all__ = [
    "DATASETS",
    "DataError",
    "Augment",
    "Dataset",
    "FileSplit",
    "Preprocess",
    "Split",
    "batch_transform",
    "dataset_info",
    "elastic_field",
    "eval_side",
    "load_dataset",
    "read_idx",
    "read_image",
    "stratified_split",
]


class DataError(UserError):
    """A dataset problem the user can fix; the message says how."""


MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Largest IDX payload we accept (a hostile header must not make us allocate more).
MAX_IDX_BYTES = 1 << 31


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


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    native_size: int  # side of the stored images
    augment: Augment  # the default augmentation for this kind of data
    torchvision_class: str | None = None


DIGITS = Augment(rotate=10.0, translate=0.1, scale=0.1)
PHOTOS = Augment(hflip=True, crop_padding=4)
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, Augment(translate=0.1, hflip=True), "FashionMNIST"),
    "kmnist": DatasetInfo("kmnist", 1, 28, DIGITS, "KMNIST"),
    "cifar10": DatasetInfo("cifar10", 3, 32, PHOTOS, "CIFAR10"),
    "cifar100": DatasetInfo("cifar100", 3, 32, PHOTOS, "CIFAR100"),
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Split:
    images: Tensor  # N x C x H x W, uint8
    labels: Tensor  # N, int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class FileSplit:
    """A split left on disk (`--data-loading stream`): its image files and labels, read as they are used (stream.py).

    Evaluation reads each file as `load_image(path, channels, size, crop=True)` does, the shorter side
    resized to `size` and the centre square kept, exactly as `googlenet predict` reads it; training reads
    the whole image for its random crops (`read_image`).
    """

    files: list[Path]
    labels: Tensor  # N, int64
    channels: int  # the folder's: 1 grey, 3 colour
    size: int  # evaluation's shorter side (`eval_side`; Preprocess.resize)
    workers: int = 0  # DataLoader processes that read it (0: the main process)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> FileSplit:
        """The files stay on disk; each batch goes to the device as it is read."""
        return self

    def image(self, i: int) -> Tensor:
        """Image `i` as evaluation reads it, uint8 C x size x size."""
        return load_image(self.files[i], self.channels, self.size, crop=True)


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


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split | FileSplit
    val: Split | FileSplit
    test: Split | FileSplit
    channels: int
    native_size: int
    default_augment: Augment
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    resize: int | None = None  # evaluation's shorter side and centre crop (Preprocess.resize); None: the whole image squeezed

    @property
    def streamed(self) -> bool:
        """Whether the splits stay on disk (FileSplit) rather than in memory."""
        return isinstance(self.train, FileSplit)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)


# ---------------------------------------------------------------- IDX files


def read_idx(data: bytes, name: str = "file") -> np.ndarray:
    """Parse an IDX file (MNIST's format) of unsigned bytes, checking its header."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name} is not an IDX file (bad magic number): replace it with the original file")
    if data[2] != 0x08:
        raise DataError(f"{name}: only unsigned-byte IDX files are supported (type 0x{data[2]:02x})")
    ndim = data[3]
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{name}: IDX header is truncated or has {ndim} dimensions: replace it with the original file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    size = math.prod(dims)
    if size > MAX_IDX_BYTES or len(data) - 4 - 4 * ndim != size:
        raise DataError(
            f"{name}: IDX header says {dims} ({size} bytes) but the file holds {len(data) - 4 - 4 * ndim}: "
            "the file is truncated or corrupted, replace it with the original"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_mnist_file(directory: Path | resources.abc.Traversable, stem: str, verify: bool, fix: str) -> np.ndarray:
    gz = directory / f"{stem}.gz"
    plain = directory / stem
    try:
        if gz.is_file():
            with gz.open("rb") as raw, gzip.GzipFile(fileobj=raw) as f:
                data = f.read(MAX_IDX_BYTES + 64)  # capped: a gzip bomb stops here
            if len(data) > MAX_IDX_BYTES + 32:
                raise DataError(f"MNIST file {stem}.gz decompresses to more than {MAX_IDX_BYTES} bytes: restore the original file")
        elif plain.is_file():
            data = plain.read_bytes()
        else:
            raise DataError(
                f"MNIST file {stem}(.gz) is missing from {directory}: {fix}"
            )
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"MNIST file {stem}.gz cannot be decompressed ({exc}): {fix}") from None
    if verify and hashlib.md5(data).hexdigest() != MNIST_FILES[stem]:
        raise DataError(
            f"MNIST file {stem} fails its MD5 check (corrupted): {fix}"
        )
    return read_idx(data, stem)


def mnist_dir() -> resources.abc.Traversable:
    return resources.files("googlenet") / "datasets" / "mnist"


def _load_mnist(directory=None, verify: bool = True) -> tuple[Split, Split]:
    built_in = directory is None
    directory = mnist_dir() if built_in else Path(directory)
    # The hint fits where the files came from: the package's own copy, or the user's folder.
    fix = "reinstall the package (pip install --force-reinstall googlenet)" if built_in else "restore the file from the original MNIST download"
    arrays = {stem: _read_mnist_file(directory, stem, verify, fix) for stem in MNIST_FILES}
    splits = []
    for prefix in ("train", "t10k"):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"MNIST {prefix} images and labels do not match: restore the original files")
        splits.append(Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1]


# ------------------------------------------------------- torchvision datasets


def _load_torchvision(info: DatasetInfo, data_dir: Path, download: bool) -> tuple[Split, Split, list[str]]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.torchvision_class)
    out = []
    corrupted = (
        f"{info.name} in {data_dir} has a corrupted or foreign file: delete {data_dir / info.torchvision_class} "
        "and pass --download, or put torchvision's original files there"
    )
    try:
        for train in (True, False):
            ds = cls(str(data_dir), train=train, download=download)
            images = torch.as_tensor(np.asarray(ds.data))
            images = images.permute(0, 3, 1, 2) if images.dim() == 4 else images.unsqueeze(1)
            labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
            if images.dim() != 4 or images.dtype != torch.uint8 or labels.dim() != 1 or len(labels) != len(images):
                raise DataError(f"{corrupted} (images and labels do not match)")
            if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(ds.classes):
                raise DataError(f"{corrupted} (a label outside the {len(ds.classes)} classes)")
            out.append(Split(images.contiguous(), labels))
    except RuntimeError as exc:
        if "not found" in str(exc).lower() or "corrupted" in str(exc).lower():
            raise DataError(
                f"{info.name} is not in {data_dir}: put torchvision's {info.torchvision_class} files there "
                "(--data-dir DIR) or pass --download"
            ) from None
        raise DataError(f"{info.name} could not be loaded from {data_dir}: {str(exc)[:200]}") from None
    except OSError as exc:  # network errors during --download
        raise DataError(f"{info.name} could not be downloaded ({exc}): check the network or use --data-dir") from None
    except (AssertionError, ValueError, IndexError, TypeError, EOFError) as exc:  # torchvision's readers assert on a bad header
        raise DataError(f"{corrupted} ({type(exc).__name__}{': ' + str(exc)[:120] if str(exc) else ''})") from None
    return out[0], out[1], list(ds.classes)


# -------------------------------------------------------------- image folders


def _inside(path: Path, top: Path, what: str) -> None:
    """Refuse a folder that is a link leading out of the dataset folder `top` (e.g. to / : the whole disk would be scanned)."""
    if path.is_symlink() and not path.resolve().is_relative_to(top.resolve()):
        raise DataError(
            f"{what} {path} is a link to {path.resolve()}, outside the image folder {top}: links out of the dataset are not followed, "
            "copy or move the images into it"
        )


def _check_class_name(name: str, root: Path) -> None:
    """Class names come from folder names and end up in CSV, JSON, Markdown and the checkpoint: printable UTF-8 only."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"class folder {os.fsencode(name)!r} in {root} has a name that is not valid UTF-8: rename it") from None
    if not name.isprintable():
        raise DataError(f"class folder {name!r} in {root} has a control character (e.g. a newline) in its name: rename it")


def _image_files(root: Path, top: Path | None = None) -> dict[str, list[Path]]:
    """Each class folder under `root` (the dataset folder `top`) and its image files: regular files only
    (a FIFO or device named x.png would block or never end), in folders that stay inside `top`."""
    top = top or root
    folders = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    for d in folders:
        _inside(d, top, "class folder")
        _check_class_name(d.name, root)
    return {d.name: sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()) for d in folders}


def open_image(path: Path, note: bool = True):
    """PIL's Image.open, with its DecompressionBombWarning (over 89 Mpx) replaced by one line of ours on stderr (`note`).

    Images over twice that limit raise PIL's DecompressionBombError, which the callers turn into a DataError.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    limit = Image.MAX_IMAGE_PIXELS
    if note and limit and img.width * img.height > limit:
        print(f"note: image {path} is {img.width}x{img.height} pixels ({img.width * img.height / 1e6:.0f} Mpx): decoding it takes time and memory", file=sys.stderr)
    return img


def _is_colour(img) -> bool:
    """Whether a PIL image holds colour: an RGB-like mode, or a palette with colours in it."""
    from PIL import ImageChops

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
    from PIL import Image

    with _image_errors(path), open_image(path) as img:
        if note_colour and channels == 1 and _is_colour(img):  # before draft(), which may decode JPEGs as grey
            print(f"note: {path} is a colour image; converted to grey for this 1-channel model", file=sys.stderr)
        img.draft("L" if channels == 1 else "RGB", (size, size))  # fast JPEG downscale
        img = _convert(img, channels)
        if crop:
            w, h = img.size
            scale = size / min(w, h)
            if max(w, h) * scale > 4 * size:  # a long strip (1 x 60000 px): scale only its centre square, not 256 x 15 M
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
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits, not clip
        img = Image.fromarray((np.asarray(img.convert("I"), dtype=np.int64) // 257).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent background: flatten onto black (MNIST's background) for grey models
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if channels == 1 else (255, 255, 255, 255))
        img = Image.alpha_composite(flat, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def read_image(path: Path, channels: int) -> Tensor:
    """One image file at its full size as uint8 C x H x W, converted as `load_image` converts it (the streamed training crops).

    JPEGs decode with torchvision.io.decode_image (libjpeg-turbo straight to a tensor); other formats, and any
    file it refuses, go through PIL as in `load_image`. PIL reads the header first either way, so the pixel
    limit and the one-line errors are load_image's.
    """
    from torchvision.io import ImageReadMode, decode_image

    with _image_errors(path), open_image(path) as img:
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
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
    from PIL import Image, UnidentifiedImageError

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


def _folder_channels(files: list[Path]) -> int:
    from PIL import Image

    for path in files[:50]:
        try:
            with open_image(path) as img:
                if img.mode not in ("L", "1", "I", "I;16", "LA"):
                    return 3
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # load_image says what is wrong with it
    return 1


def _check_fits_memory(count: int, channels: int, size: int, root: Path) -> None:
    """Datasets live in memory as uint8: refuse a folder whose images at `size` px cannot fit (twice, while stacking)."""
    need = 2 * count * channels * size * size
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return  # not POSIX: no check
    if need > have:
        raise DataError(
            f"{count:,} images of {root} at {size} px need about {need / 1e9:.1f} GB of memory to load, more than this machine's "
            f"{have / 1e9:.1f} GB: use a smaller --image-size or fewer images"
        )


def memory_budget_bytes(gb: float | None) -> int:
    """--memory-budget in bytes: `gb` gigabytes, or (None) half of this machine's memory shared among torchrun's
    processes on it, each of which holds its own copy (no limit where the memory is unknown)."""
    if gb is not None:
        return round(gb * 1e9)
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62
    return machine // 2 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def eval_side(image_size: int) -> int:
    """The shorter side evaluation resizes to before its centre crop: the paper's 256 for 224 px, in proportion otherwise."""
    return min(round(image_size * 256 / 224), MAX_IMAGE_SIZE)


Files = tuple[list[Path], Tensor]  # image files and their labels


def _labelled(files: dict[str, list[Path]], classes: list[str], root: Path) -> Files:
    """The files of `classes` in class order, with their labels."""
    paths = [p for cls in classes for p in files.get(cls, [])]
    if not paths:
        raise DataError(f"no images found in {root}: put images in one subfolder per class")
    labels = [label for label, cls in enumerate(classes) for _ in files.get(cls, [])]
    return paths, torch.tensor(labels, dtype=torch.int64)


def _pick(files: Files, idx: Tensor) -> Files:
    return [files[0][i] for i in idx.tolist()], files[1][idx]


def folder_splits(root: Path, val_fraction: float, seed: int) -> tuple[dict[str, Files], list[str], int]:
    """An image folder's train, val and test files and labels, its classes and its channels (1 or 3); nothing decoded.

    One subfolder per class; train/, val/ and test/ when present. Without test/, 20% of each class is held out
    (seeded); without val/, `val_fraction` of the rest. Both data paths start from these lists, so they see the
    same images in the same order.
    """
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: pass imagefolder:PATH with one subfolder per class")
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    for d in split_dirs.values():
        _inside(d, root, "split folder")
    train_root = split_dirs.get("train", root)
    files = _image_files(train_root, root)
    classes = [c for c, f in files.items() if f]
    if len(classes) < 2:
        raise DataError(f"{train_root} needs at least two class subfolders with images (found {len(classes)})")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{train_root} has {len(classes):,} class folders, more than the {MAX_CLASSES:,} a model can have here")
    channels = _folder_channels([f for c in classes for f in files[c]])
    train = _labelled(files, classes, train_root)
    if "test" in split_dirs:
        test = _labelled(_image_files(split_dirs["test"], root), classes, split_dirs["test"])
    else:  # no test/ folder: hold out 20% of the images, stratified and seeded
        rest, held = stratified_split(train[1], 0.2, seed + 1)
        train, test = _pick(train, rest), _pick(train, held)
    if "val" in split_dirs:
        val = _labelled(_image_files(split_dirs["val"], root), classes, split_dirs["val"])
    else:
        keep, held = stratified_split(train[1], val_fraction, seed)
        train, val = _pick(train, keep), _pick(train, held)
    return {"train": train, "val": val, "test": test}, classes, channels


def _decode_split(files: Files, channels: int, size: int, crop: bool) -> Split:
    images = [load_image(path, channels, size, crop) for path in files[0]]
    stacked = torch.stack(images) if images else torch.zeros(0, channels, size, size, dtype=torch.uint8)
    return Split(stacked, files[1])


def _sample_stats(split: FileSplit, seed: int, count: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a seeded sample of `count` training images, as evaluation reads them (the
    in-memory path uses every training image; a streamed folder may hold a million)."""
    idx = np.random.default_rng(seed).permutation(len(split))[:count]
    pixels = torch.stack([split.image(int(i)) for i in np.sort(idx)]).float().div_(255)
    return tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist())


def _load_imagefolder(
    root: Path, image_size: int, val_fraction: float, seed: int, loading: str = "memory", memory_budget: float | None = None,
    workers: int = 0, resize: int | None = None,
) -> Dataset:
    """An image folder in memory (each image squeezed to image_size, or with `resize` its centre square at that side)
    or, with `loading` stream (or auto over the budget), left on disk as FileSplits read at `resize` or `eval_side`."""
    splits, classes, channels = folder_splits(root, val_fraction, seed)
    count = sum(len(f[0]) for f in splits.values())
    side = resize or image_size
    need, budget = count * channels * side * side, memory_budget_bytes(memory_budget)
    if loading == "stream" or (loading == "auto" and need > budget):
        side = resize or eval_side(image_size)
        train, val, test = (FileSplit(*splits[s], channels, side, workers) for s in ("train", "val", "test"))
        mean, std = _sample_stats(train, seed)
        return Dataset(f"imagefolder:{root}", classes, train, val, test, channels, side, Augment(hflip=True), mean, std, side)
    if need > budget:
        raise DataError(
            f"{count:,} images of {root} at {side} px need about {need / 1e9:.1f} GB of memory decoded, more than the memory budget "
            f"of {budget / 1e9:.1f} GB: stream them from disk with --data-loading stream (or auto), or raise --memory-budget"
        )
    _check_fits_memory(count, channels, side, root)
    train, val, test = (_decode_split(splits[s], channels, side, resize is not None) for s in ("train", "val", "test"))
    return Dataset(f"imagefolder:{root}", classes, train, val, test, channels, side, PHOTOS, resize=resize)


# --------------------------------------------------------------------- splits


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (keep, held out): `fraction` of each class held out, seeded.

    numpy's PCG64 stream is the same on every platform, so the split is
    identical across runs and machines for the same seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction {fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    keep, held = [], []
    for c in np.unique(labels_np):
        idx = np.flatnonzero(labels_np == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.from_numpy(np.sort(np.concatenate(keep))), torch.from_numpy(np.sort(np.concatenate(held)))


def _take(split: Split, idx: Tensor) -> Split:
    return Split(split.images[idx], split.labels[idx])


def dataset_info(name: str) -> DatasetInfo:
    if name.startswith("imagefolder:"):
        return DatasetInfo(name, 3, 0, PHOTOS)
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DataError(f"unknown dataset {name!r}: {hint}use one of {', '.join(DATASETS)} or imagefolder:PATH")
    return DATASETS[name]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int = 224,
    loading: str = "memory",
    memory_budget: float | None = None,
    workers: int = 0,
    resize: int | None = None,
) -> Dataset:
    """Load a dataset by name into memory with its seeded validation split.

    The validation split is carved from the training set (stratified); the
    test split is the dataset's own and is never used for training or model
    selection. Normalisation statistics come from the training split alone.
    An image folder may instead stay on disk (`loading` stream, or auto when
    its decoded images would exceed `memory_budget` GB): see `_load_imagefolder`.
    """
    info = dataset_info(name)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive), e.g. 0.1")
    if name.startswith("imagefolder:"):
        root = Path(name.split(":", 1)[1]).expanduser()
        data = _load_imagefolder(root, image_size, val_fraction, seed, loading, memory_budget, workers, resize)
        if data.streamed:
            return data
        pixels = data.train.images.float().div_(255)
        return replace(data, name=name, mean=tuple(pixels.mean(dim=(0, 2, 3)).tolist()), std=tuple(pixels.std(dim=(0, 2, 3)).tolist()))
    if loading == "stream":
        raise DataError(f"--data-loading stream reads image folders (imagefolder:PATH); {name} is held in memory: use --data-loading auto")
    val = None
    if name == "mnist":
        train, test = _load_mnist(data_dir)
        classes, channels, native = [str(i) for i in range(10)], 1, 28
    else:
        root = Path(data_dir or Path.home() / ".cache" / "googlenet" / "data").expanduser()
        train, test, classes = _load_torchvision(info, root, download)
        channels, native = info.channels, info.native_size
    if val is None:
        keep, held = stratified_split(train.labels, val_fraction, seed)
        train, val = _take(train, keep), _take(train, held)
    pixels = train.images.float().div_(255)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).tolist())
    return Dataset(name, classes, train, val, test, channels, native, info.augment, mean, std)


def load_evaluation_data(
    name: str, pre: Preprocess, data_dir: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0,
    loading: str = "memory", memory_budget: float | None = None, workers: int = 0,
) -> Dataset:
    """What `googlenet evaluate --dataset` evaluates a checkpoint on.

    A named dataset is loaded as for training. An image folder with train/,
    val/ or test/ subfolders is too; one with only class subfolders is all
    test split (nothing carved off), read as the checkpoint's preprocessing
    says: at `pre.resize` with the centre square kept when it has one (the
    shorter side 256 of ImageNet's evaluation), else squeezed to image_size.
    `loading`, `memory_budget`, `workers`: the training run's, for an image folder.
    """
    root = Path(name.split(":", 1)[1]).expanduser() if name.startswith("imagefolder:") else None
    if root is None or not root.is_dir() or any((root / s).is_dir() for s in ("train", "val", "test")):
        loading = loading if root is not None else "memory"
        return load_dataset(name, data_dir, False, val_fraction, seed, pre.image_size, loading, memory_budget, workers, pre.resize)
    files = _image_files(root, root)
    classes = list(files)  # empty class folders too: they keep the classes' count and order (e.g. ILSVRC's 1000 synsets)
    if not any(files.values()):
        raise DataError(f"{root} has no class subfolders with images: put the images in one subfolder per class")
    size, crop = (pre.resize, True) if pre.resize else (pre.image_size, False)
    count = sum(len(files[c]) for c in classes)
    if crop and (loading == "stream" or loading == "auto" and count * pre.data_channels * size * size > memory_budget_bytes(memory_budget)):
        paths = [path for c in classes for path in files[c]]
        labels = torch.tensor([label for label, c in enumerate(classes) for _ in files[c]], dtype=torch.int64)
        empty = FileSplit([], torch.zeros(0, dtype=torch.int64), pre.data_channels, size, workers)
        test = FileSplit(paths, labels, pre.data_channels, size, workers)
        return Dataset(name, classes, empty, empty, test, pre.data_channels, size, Augment(), resize=size)
    _check_fits_memory(sum(len(files[c]) for c in classes), pre.data_channels, size, root)
    images = [load_image(path, pre.data_channels, size, crop) for c in classes for path in files[c]]
    labels = [label for label, c in enumerate(classes) for _ in files[c]]
    empty = Split(torch.zeros(0, pre.data_channels, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    return Dataset(name, classes, empty, empty, Split(torch.stack(images), torch.tensor(labels)), pre.data_channels, size, Augment())


# ------------------------------------------------------------ batch transforms


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


def list_datasets(args) -> None:
    """`googlenet datasets`: each dataset, whether it is here, and its split sizes."""
    from .tables import format_table

    rows = []
    for name, info in DATASETS.items():
        try:
            ds = load_dataset(name, args.data_dir, False, args.val_fraction, 0)
            status = "built in" if name == "mnist" else "local"
            sizes = (f"{len(ds.train) + len(ds.val):,}", f"{len(ds.train):,}", f"{len(ds.val):,}", f"{len(ds.test):,}")
        except DataError:
            status, sizes = "missing (use --download or --data-dir)", ("-", "-", "-", "-")
        rows.append((name, status, f"{info.channels} x {info.native_size} x {info.native_size}", *sizes))
    rows.append(("imagefolder:PATH", "your folder", "any (resized)", "-", "-", "-", "-"))
    print(format_table(["dataset", "available", "image", "train (all)", "train", f"val ({args.val_fraction:g})", "test"], rows, "text"))
