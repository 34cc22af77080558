"""The datasets by name: the registry (`DATASETS`), the types every path shares (`Split` in memory,
`FileSplit` on disk, `Dataset`), and `load_dataset`, which gives every dataset its three seeded splits
(train, val, test) and the training split's per-channel statistics. Also `googlenet datasets`.

Every dataset becomes three `Split`s of uint8 images N x C x H x W and int64 labels, held in memory;
an image folder too big for memory (`--data-loading stream`, or auto over `--memory-budget`) becomes
`FileSplit`s instead: the same files, labels and seeded splits, read while training by stream.py's
DataLoader workers.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import TrainConfig
from ..errors import DataError
from ..tables import format_table
from .folders import (
    TEST_FRACTION,
    Files,
    _check_fits_memory,
    _image_files,
    folder_splits,
    memory_budget_bytes,
    stratified_split,
)
from .images import load_image, open_image
from .mnist import read_mnist
from .transforms import AUGMENT_SETTINGS, DIGITS, PHOTOS, Augment, Preprocess, eval_side


@dataclass(frozen=True)
class DatasetInfo:
    """What `googlenet datasets` lists and training defaults to for a named dataset."""

    name: str
    channels: int
    native_size: int  # side of the stored images
    augment: Augment  # the default augmentation for this kind of data
    torchvision_class: str | None = None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, Augment(translate=0.1, hflip=True), "FashionMNIST"),
    "kmnist": DatasetInfo("kmnist", 1, 28, DIGITS, "KMNIST"),
    "cifar10": DatasetInfo("cifar10", 3, 32, PHOTOS, "CIFAR10"),
    "cifar100": DatasetInfo("cifar100", 3, 32, PHOTOS, "CIFAR100"),
}


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
    # evaluation's shorter side and centre crop (Preprocess.resize); None: the whole image squeezed
    resize: int | None = None

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


def _load_mnist(directory: str | Path | None = None, verify: bool = True) -> tuple[Split, Split]:
    """MNIST's train (60,000) and test (10,000) splits: the package's copy, or the IDX files in `directory`.

    The package's copy is the process's cache (`mnist.read_mnist`): index or clone it, never change it in place.
    """
    train, test = read_mnist(Path(directory) if directory else None, verify)
    return Split(*train), Split(*test)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 N x C x H x W images, on the 0-1 scale."""
    pixels = images.float().div_(255)
    return tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist())


def _load_torchvision(info: DatasetInfo, data_dir: Path, download: bool) -> tuple[Split, Split, list[str]]:
    # imported on first use: `import torchvision` takes about a second, and MNIST and image folders never need it
    import torchvision.datasets

    cls = getattr(torchvision.datasets, info.torchvision_class)
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
    except (AssertionError, ValueError, IndexError, TypeError, EOFError) as exc:  # its readers assert on a bad header
        raise DataError(f"{corrupted} ({type(exc).__name__}{': ' + str(exc)[:120] if str(exc) else ''})") from None
    return out[0], out[1], list(ds.classes)


def _decode_split(files: Files, channels: int, size: int, crop: bool) -> Split:
    images = [load_image(path, channels, size, crop) for path in files[0]]
    stacked = torch.stack(images) if images else torch.zeros(0, channels, size, size, dtype=torch.uint8)
    return Split(stacked, files[1])


def _sample_stats(split: FileSplit, seed: int, count: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a seeded sample of `count` training images, as evaluation reads them (the
    in-memory path uses every training image; a streamed folder may hold a million)."""
    idx = np.random.default_rng(seed).permutation(len(split))[:count]
    return channel_stats(torch.stack([split.image(int(i)) for i in np.sort(idx)]))


def _load_imagefolder(
    root: Path,
    image_size: int,
    val_fraction: float,
    seed: int,
    loading: str = "memory",
    memory_budget: float | None = None,
    workers: int = 0,
    resize: int | None = None,
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
        name = f"imagefolder:{root}"
        return Dataset(name, classes, train, val, test, channels, side, Augment(hflip=True), mean, std, side)
    if need > budget:
        raise DataError(
            f"{count:,} images of {root} at {side} px need about {need / 1e9:.1f} GB of memory decoded, more than the "
            f"memory budget of {budget / 1e9:.1f} GB: stream them from disk with --data-loading stream (or auto), "
            "or raise --memory-budget"
        )
    _check_fits_memory(count, channels, side, root)
    train, val, test = (_decode_split(splits[s], channels, side, resize is not None) for s in ("train", "val", "test"))
    mean, std = channel_stats(train.images)  # every training image
    return Dataset(f"imagefolder:{root}", classes, train, val, test, channels, side, PHOTOS, mean, std, resize)


def absolute_dataset(name: str) -> str:
    """`name` as a run records it: an image folder's path made absolute (~ expanded), so that the run is evaluated
    and resumed from any directory."""
    if not name.startswith("imagefolder:"):
        return name
    return "imagefolder:" + os.path.abspath(Path(name.split(":", 1)[1]).expanduser())


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
        return data if data.streamed else replace(data, name=name)
    if loading == "stream":
        raise DataError(
            f"--data-loading stream reads image folders (imagefolder:PATH); {name} is held in memory: "
            "use --data-loading auto"
        )
    if name == "mnist":
        train, test = _load_mnist(data_dir)
        test = Split(test.images.clone(), test.labels.clone())  # the process's cached copy stays as read
        classes, channels, native = [str(i) for i in range(10)], 1, 28
    else:
        root = Path(data_dir or Path.home() / ".cache" / "googlenet" / "data").expanduser()
        train, test, classes = _load_torchvision(info, root, download)
        channels, native = info.channels, info.native_size
    keep, held = stratified_split(train.labels, val_fraction, seed)
    train, val = _take(train, keep), _take(train, held)  # copies: MNIST's cached tensors stay as read
    mean, std = channel_stats(train.images)  # the training split's alone
    return Dataset(name, classes, train, val, test, channels, native, info.augment, mean, std)


def load_evaluation_data(
    name: str,
    pre: Preprocess,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    loading: str = "memory",
    memory_budget: float | None = None,
    workers: int = 0,
    run_splits: bool = False,
) -> Dataset:
    """What `googlenet evaluate` evaluates a checkpoint on.

    The run's own data (`run_splits`, no --dataset) and a named dataset are loaded as for training: the same seeded
    train/val/test splits, image for image. An image folder with train/, val/ or test/ subfolders is too; other
    data with only class subfolders is all test split (nothing carved off), read as the checkpoint's preprocessing
    says: at `pre.resize` with the centre square kept when it has one (the shorter side 256 of ImageNet's
    evaluation), else squeezed to image_size. `loading`, `memory_budget`, `workers`: the training run's, for an
    image folder.
    """
    root = Path(name.split(":", 1)[1]).expanduser() if name.startswith("imagefolder:") else None
    if run_splits or root is None or not root.is_dir() or any((root / s).is_dir() for s in ("train", "val", "test")):
        loading = loading if root is not None else "memory"
        return load_dataset(
            name, data_dir, False, val_fraction, seed, pre.image_size, loading, memory_budget, workers, pre.resize
        )
    return _class_folders_as_test(name, root, pre, loading, memory_budget, workers)


def _class_folders_as_test(
    name: str, root: Path, pre: Preprocess, loading: str, memory_budget: float | None, workers: int
) -> Dataset:
    """A folder of class subfolders as one test split, read as `pre` says: streamed from disk (`loading` stream, or
    auto over the budget) when `pre.resize` crops, else decoded into memory."""
    files = _image_files(root, root)
    classes = list(files)  # empty class folders too: they keep the classes' count and order (ILSVRC's 1000 synsets)
    if not any(files.values()):
        raise DataError(f"{root} has no class subfolders with images: put the images in one subfolder per class")
    size, crop = (pre.resize, True) if pre.resize else (pre.image_size, False)
    channels = pre.data_channels
    paths = [path for c in classes for path in files[c]]
    labels = torch.tensor([label for label, c in enumerate(classes) for _ in files[c]], dtype=torch.int64)
    over_budget = len(paths) * channels * size * size > memory_budget_bytes(memory_budget)
    if crop and (loading == "stream" or loading == "auto" and over_budget):
        empty = FileSplit([], torch.zeros(0, dtype=torch.int64), channels, size, workers)
        test = FileSplit(paths, labels, channels, size, workers)
        return Dataset(name, classes, empty, empty, test, channels, size, Augment(), resize=size)
    _check_fits_memory(len(paths), channels, size, root)
    test = Split(torch.stack([load_image(path, channels, size, crop) for path in paths]), labels)
    empty = Split(torch.zeros(0, channels, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    return Dataset(name, classes, empty, empty, test, channels, size, Augment())


MAX_HEADERS = 2000  # image headers `googlenet datasets imagefolder:PATH` reads: an even sample of a bigger folder


def augment_flags(augment: Augment) -> str:
    """An augmentation as the `googlenet train` flags that set it, e.g. "--hflip --crop-padding 4"."""
    flags = []
    for key in AUGMENT_SETTINGS:
        value, flag = getattr(augment, key), "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value:
            flags.append(f"{flag} {value:g}")
    return " ".join(flags) or "none"


# An image folder's default: the in-memory path's (PHOTOS, as _load_imagefolder sets it) or the streamed path's.
FOLDER_AUGMENTATION = f"{augment_flags(PHOTOS)}; streamed from disk: the paper's random crops and --hflip"


def describe_folder(root: Path, val_fraction: float, seed: int) -> str:
    """`googlenet datasets imagefolder:PATH`: the classes and their image counts, the image sizes and modes seen
    (headers only, of up to MAX_HEADERS images), the channels training reads, and the seeded splits training
    would make (`folder_splits`, with its one-line errors for a missing folder, too few classes, no images)."""
    splits, classes, channels = folder_splits(root, val_fraction, seed)
    names = ("train", "val", "test")
    per_split = [torch.bincount(splits[s][1], minlength=len(classes)).tolist() for s in names]
    counts = [*zip(classes, *per_split), ("total", *map(sum, per_split))]  # (class, train, val, test)
    rows = [(c, f"{sum(n):,}", *(f"{k:,}" for k in n)) for c, *n in counts]
    per_class = format_table(["class", "images", *names], rows, "text")

    files = [path for s in names for path in splits[s][0]]
    step = -(-len(files) // MAX_HEADERS)
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    unreadable = []
    for path in files[::step]:
        try:
            with open_image(path, note=False) as img:  # the header only: nothing decoded
                sizes[img.size] += 1
                modes[img.mode] += 1
        except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
            unreadable.append(path)
    read = sum(sizes.values()) + len(unreadable)

    def wxh(size: tuple[int, int]) -> str:
        return f"{size[0]} x {size[1]}"

    by_area = sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh))
    common = ", ".join(f"{wxh(wh)} ({n:,})" for wh, n in sizes.most_common(3))
    seen = f"{wxh(by_area[0])} to {wxh(by_area[-1])}; most common: {common}" if len(sizes) > 1 else common or "-"
    found = {s: (root / s).is_dir() for s in names}
    facts = [
        ("classes", f"{len(classes):,}"),
        ("images", f"{len(files):,}" + (f" (the headers of an even sample of {read:,} read)" if step > 1 else "")),
        (
            "channels",
            f"{channels} ({'colour' if channels == 3 else 'grey'}); image modes: "
            + ", ".join(f"{m} {n:,}" for m, n in modes.most_common()),
        ),
        ("sizes (W x H)", seen),
        *([("unreadable", f"{len(unreadable):,}, e.g. {unreadable[0]}: training stops on it")] if unreadable else []),
        (
            "splits",
            f"test: {'its test/ folder' if found['test'] else f'a stratified {TEST_FRACTION:.0%} hold-out'}; val: "
            f"{'its val/ folder' if found['val'] else f'a stratified {val_fraction:g} of the rest (--val-fraction)'}; "
            f"--seed {seed}",
        ),
        ("default augmentation", FOLDER_AUGMENTATION),
    ]
    return f"{format_table([f'imagefolder:{root}', ''], facts, 'text')}\n\n{per_class}\n"


def run_datasets(args) -> None:
    """`googlenet datasets [DATASET]`: each dataset (or the one named), whether it is here, its split sizes and its
    default augmentation; with imagefolder:PATH, that folder (`describe_folder`)."""
    TrainConfig(val_fraction=args.val_fraction, seed=args.seed).validate(run_location=False)  # as train checks them
    if args.dataset is not None and args.dataset.startswith("imagefolder:"):
        root = Path(args.dataset.split(":", 1)[1]).expanduser()
        print(describe_folder(root, args.val_fraction, args.seed), end="")
        return
    names = list(DATASETS) if args.dataset is None else [dataset_info(args.dataset).name]
    rows, augmentation = [], []
    for name in names:
        info = DATASETS[name]
        try:
            ds = load_dataset(name, args.data_dir, False, args.val_fraction, args.seed)
            status = "built in" if name == "mnist" else "local"
            sizes = (f"{len(ds.train) + len(ds.val):,}", f"{len(ds.train):,}", f"{len(ds.val):,}", f"{len(ds.test):,}")
        except DataError:
            status, sizes = "missing (use --download or --data-dir)", ("-", "-", "-", "-")
        rows.append((name, status, f"{info.channels} x {info.native_size} x {info.native_size}", *sizes))
        augmentation.append((name, augment_flags(info.augment)))
    if args.dataset is None:
        rows.append(("imagefolder:PATH", "your folder", "any (resized)", "-", "-", "-", "-"))
        augmentation.append(("imagefolder:PATH", FOLDER_AUGMENTATION))
    headers = ["dataset", "available", "image", "train (all)", "train", f"val ({args.val_fraction:g})", "test"]
    print(format_table(headers, rows, "text"))
    print()
    headers = ["dataset", "default augmentation (googlenet train: each flag overrides its own, --no-augment: none)"]
    print(format_table(headers, augmentation, "text"))
