"""Image folders on disk, nothing decoded: one subfolder per class (train/, val/, test/ when present),
the seeded stratified splits (`stratified_split`, also the named datasets' validation carve-out), the
rules a class folder's name and a link must follow, and how much memory decoding a folder may take.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..config import MAX_CLASSES
from ..errors import DataError
from .images import IMAGE_EXTENSIONS, open_image

Files = tuple[list[Path], Tensor]  # image files and their labels
TEST_FRACTION = 0.2  # of each class, held out as the test split of a folder without test/


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


def _inside(path: Path, top: Path, what: str) -> None:
    """Refuse a folder that is a link leading out of the dataset folder `top` (to / , say: the whole disk would be
    scanned)."""
    if path.is_symlink() and not path.resolve().is_relative_to(top.resolve()):
        raise DataError(
            f"{what} {path} is a link to {path.resolve()}, outside the image folder {top}: links out of the dataset "
            "are not followed, copy or move the images into it"
        )


MAX_CLASS_NAME = 1000  # characters


def class_name_problem(name: object) -> str | None:
    """What is wrong with a class name, or None. Class names come from folder names and end up in CSV, JSON,
    Markdown and the checkpoint: text of 1 to MAX_CLASS_NAME printable characters, valid UTF-8."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME:
        return f"is not text of 1 to {MAX_CLASS_NAME} characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if not name.isprintable():
        return "is not printable text (it has a control character, e.g. a newline)"
    return None


def _check_class_name(name: str, root: Path) -> None:
    problem = class_name_problem(name)
    if problem:
        shown = os.fsencode(name) if "UTF-8" in problem else name
        raise DataError(f"class folder {shown!r} in {root}: its name {problem}: rename it")


MAX_FOLDER_ENTRIES = 10_000_000  # files and folders under a dataset's class folders (ImageNet's has 1.3 million)


def _image_files(root: Path, top: Path | None = None) -> dict[str, list[Path]]:
    """Each class folder under `root` (the dataset folder `top`) and its image files: regular files only
    (a FIFO or device named x.png would block or never end), in folders that stay inside `top`, never links
    followed. The walk stops at MAX_FOLDER_ENTRIES: a path such as imagefolder:/ (the whole disk) is refused
    after a bounded look, not walked to the end."""
    top = top or root
    if root.resolve() == Path(root.resolve().anchor):
        raise DataError(f"image folder {root} is the root of the file system: pass the folder of class subfolders")
    folders = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    for d in folders:
        _inside(d, top, "class folder")
        _check_class_name(d.name, root)
    seen = 0
    files: dict[str, list[Path]] = {}
    for d in folders:
        found = []
        for folder, subfolders, names in os.walk(d):
            seen += len(subfolders) + len(names)
            if seen > MAX_FOLDER_ENTRIES:
                raise DataError(
                    f"{root} holds more than {MAX_FOLDER_ENTRIES:,} files and folders in its class folders: is it the "
                    "dataset folder? Pass the folder whose subfolders are the classes"
                )
            found += [p for p in map(Path(folder).joinpath, names) if _is_image_file(p)]
        files[d.name] = sorted(found)
    return files


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _folder_channels(files: list[Path]) -> int:
    for path in files[:50]:
        try:
            with open_image(path) as img:
                if img.mode not in ("L", "1", "I", "I;16", "LA"):
                    return 3
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # load_image says what is wrong with it
    return 1


def _check_fits_memory(count: int, channels: int, size: int, root: Path) -> None:
    """Datasets live in memory as uint8: refuse a folder whose images at `size` px cannot fit (twice, while
    stacking)."""
    need = 2 * count * channels * size * size
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return  # not POSIX: no check
    if need > have:
        raise DataError(
            f"{count:,} images of {root} at {size} px need about {need / 1e9:.1f} GB of memory to load, more than this "
            f"machine's {have / 1e9:.1f} GB: use a smaller --image-size or fewer images"
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
        raise DataError(
            f"{train_root} has {len(classes):,} class folders, more than the {MAX_CLASSES:,} a model can have here"
        )
    channels = _folder_channels([f for c in classes for f in files[c]])
    train = _labelled(files, classes, train_root)
    if "test" in split_dirs:
        test = _labelled(_image_files(split_dirs["test"], root), classes, split_dirs["test"])
    else:  # no test/ folder: hold out 20% of the images, stratified and seeded
        rest, held = stratified_split(train[1], TEST_FRACTION, seed + 1)
        train, test = _pick(train, rest), _pick(train, held)
    if "val" in split_dirs:
        val = _labelled(_image_files(split_dirs["val"], root), classes, split_dirs["val"])
    else:
        keep, held = stratified_split(train[1], val_fraction, seed)
        train, val = _pick(train, keep), _pick(train, held)
    return {"train": train, "val": val, "test": test}, classes, channels
