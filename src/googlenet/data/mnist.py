"""MNIST's IDX files: the format's reader (`read_idx`, every header field checked) and the copy vendored
in the package (datasets/mnist/, see its README for the source and licence), MD5-checked and read once
per process (`read_mnist`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


# Largest IDX payload we accept (a hostile header must not make us allocate more).
MAX_IDX_BYTES = 1 << 31


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
                raise DataError(
                    f"MNIST file {stem}.gz decompresses to more than {MAX_IDX_BYTES} bytes: restore the original file"
                )
        elif plain.is_file():
            data = plain.read_bytes()
        else:
            raise DataError(f"MNIST file {stem}(.gz) is missing from {directory}: {fix}")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"MNIST file {stem}.gz cannot be decompressed ({exc}): {fix}") from None
    if verify and hashlib.md5(data).hexdigest() != MNIST_FILES[stem]:
        raise DataError(f"MNIST file {stem} fails its MD5 check (corrupted): {fix}")
    return read_idx(data, stem)


def mnist_dir() -> resources.abc.Traversable:
    return resources.files("googlenet") / "datasets" / "mnist"


ImagesLabels = tuple[Tensor, Tensor]  # uint8 N x 1 x 28 x 28, int64 N


def read_mnist(directory: Path | None = None, verify: bool = True) -> tuple[ImagesLabels, ImagesLabels]:
    """MNIST's (train images, labels) and (test images, labels): the package's copy, or the IDX files in `directory`.

    The package's own copy (`directory` None, verified) is read, checked and decompressed once per process and
    the same tensors returned after that (tests and repeated `fit` calls load it often): callers index them
    (a copy) or clone them, and never change them in place.
    """
    if directory is None and verify:
        return _read_vendored()
    return _read_mnist(directory, verify)


@functools.cache
def _read_vendored() -> tuple[ImagesLabels, ImagesLabels]:
    return _read_mnist(None, True)


def _read_mnist(directory: Path | None, verify: bool) -> tuple[ImagesLabels, ImagesLabels]:
    built_in = directory is None
    # The hint fits where the files came from: the package's own copy, or the user's folder.
    if built_in:
        fix = "reinstall the package (pip install --force-reinstall googlenet)"
    else:
        fix = "restore the file from the original MNIST download"
    folder = mnist_dir() if built_in else Path(directory)
    arrays = {stem: _read_mnist_file(folder, stem, verify, fix) for stem in MNIST_FILES}
    splits = []
    for prefix in ("train", "t10k"):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"MNIST {prefix} images and labels do not match: restore the original files")
        splits.append((torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1]
