"""Tests for googlenet.data: MNIST loading and checks, IDX parsing, splits, batch transforms, folders."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from googlenet import data
from googlenet.data import (
    Augment,
    DataError,
    Preprocess,
    batch_transform,
    datasets,
    load_dataset,
    mnist,
    read_idx,
    stratified_split,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format) of unsigned bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


# -------------------------------------------------------------------- MNIST


def test_builtin_mnist_sizes_and_types(mnist_raw):
    train, test = mnist_raw
    assert len(train) == 60_000 and len(test) == 10_000
    for split in (train, test):
        assert split.images.dtype == torch.uint8
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
        assert set(split.labels.unique().tolist()) == set(range(10))
    # Known facts of the official files: the first training label is 5, the first test label is 7.
    assert train.labels[0].item() == 5 and test.labels[0].item() == 7
    assert train.images.float().mean().div(255).item() == pytest.approx(0.1307, abs=1e-4)


def test_load_dataset_mnist_seed_split(mnist_seed_split):
    ds = mnist_seed_split
    assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)] and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (42_000, 18_000, 10_000)  # the seed's 70/30 split
    assert (ds.channels, ds.native_size) == (1, 28)
    # Normalisation statistics come from the training split only (about MNIST's 0.1307 / 0.3081).
    pixels = ds.train.images.float() / 255
    assert ds.mean == pytest.approx((pixels.mean().item(),), abs=1e-6)
    assert ds.std == pytest.approx((pixels.std().item(),), abs=1e-5)
    assert ds.mean[0] == pytest.approx(0.1307, abs=2e-3) and ds.std[0] == pytest.approx(0.3081, abs=2e-3)
    assert ds.split("val") is ds.val
    with pytest.raises(DataError, match="unknown split"):
        ds.split("validation")


@pytest.fixture
def mnist_copy(tmp_path) -> Path:
    """A copy of the package's MNIST files that a test may damage."""
    for name in os.listdir(data.mnist_dir()):
        if name.endswith(".gz"):
            shutil.copyfile(data.mnist_dir() / name, tmp_path / name)
    return tmp_path


def test_builtin_mnist_is_read_once_per_process_and_never_handed_out_to_change(mnist_copy):
    (train_images, _), (test_images, test_labels) = mnist.read_mnist()
    assert mnist.read_mnist()[1][0] is test_images  # cached: not decompressed and MD5-checked again
    assert mnist.read_mnist(mnist_copy)[1][0] is not test_images  # a folder is the user's files, read each time
    # What load_dataset hands out shares no memory with the cache: a caller may change it in place.
    ds = load_dataset("mnist")
    cached = {t.untyped_storage().data_ptr() for t in (train_images, test_images, test_labels)}
    handed_out = [ds.train.images, ds.train.labels, ds.val.images, ds.val.labels, ds.test.images, ds.test.labels]
    assert not cached & {t.untyped_storage().data_ptr() for t in handed_out}
    assert torch.equal(ds.test.images, test_images) and torch.equal(ds.test.labels, test_labels)


def test_mnist_loads_without_torchvision():
    """`import torchvision` takes about a second: only the torchvision datasets and streamed folders need it."""
    code = "import sys; from googlenet.data import load_dataset\n"
    code += "load_dataset('mnist'); print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_copy_of_mnist_loads(mnist_copy):
    train, test = datasets._load_mnist(mnist_copy)
    assert (len(train), len(test)) == (60_000, 10_000)


def test_corrupted_mnist_file_fails_its_md5(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a valid IDX file, one label changed
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte fails its MD5 check"):
        datasets._load_mnist(mnist_copy)
    # Without verification the same file loads (so it is the MD5 check that caught it).
    _, test = datasets._load_mnist(mnist_copy, verify=False)
    assert test.labels[-1].item() == raw[-1]


def test_uncompressed_mnist_file_is_accepted(mnist_copy):
    gz = mnist_copy / "train-labels-idx1-ubyte.gz"
    (mnist_copy / "train-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    train, _ = datasets._load_mnist(mnist_copy)
    assert len(train) == 60_000


def test_missing_mnist_file(mnist_copy):
    (mnist_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\(\.gz\) is missing"):
        datasets._load_mnist(mnist_copy)


def test_mnist_file_that_is_not_gzip(mnist_copy):
    (mnist_copy / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip stream at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz cannot be decompressed"):
        datasets._load_mnist(mnist_copy)


def test_mnist_images_and_labels_must_match(tmp_path):
    files = {
        "train-images-idx3-ubyte": np.zeros((3, 28, 28)),
        "train-labels-idx1-ubyte": np.zeros(2),
        "t10k-images-idx3-ubyte": np.zeros((2, 28, 28)),
        "t10k-labels-idx1-ubyte": np.zeros(2),
    }
    for stem, array in files.items():
        (tmp_path / stem).write_bytes(idx_bytes(array))
    with pytest.raises(DataError, match="train images and labels do not match"):
        datasets._load_mnist(tmp_path, verify=False)


# ---------------------------------------------------------------- read_idx


def test_read_idx_round_trip():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(idx_bytes(array)), array)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic number"),
        (b"\x00", "bad magic number"),
        (
            b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00",
            r"only unsigned-byte IDX files are supported \(type 0x0d\)",
        ),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x05" + b"\x00\x00\x00\x01" * 5 + b"\x00", "5 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "header is truncated"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(5), r"says \(10,\) \(10 bytes\) but the file holds 5"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes(5), "but the file holds 5"),  # trailing bytes
    ],
)
def test_read_idx_rejects_bad_files(blob, message):
    with pytest.raises(DataError, match=message):
        read_idx(blob, "somefile")


def test_read_idx_error_names_the_file():
    with pytest.raises(DataError, match="^somefile"):
        read_idx(b"\x01\x02\x03\x04", "somefile")


def test_read_idx_rejects_huge_dimensions_without_allocating():
    # A hostile header: 4 x 2^32-1 cubed bytes, with a 16-byte body.
    blob = bytes([0, 0, 8, 4]) + struct.pack(">4I", *(0xFFFFFFFF,) * 4) + bytes(16)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated or corrupted"):
            read_idx(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_read_idx_size_limit(monkeypatch):
    # Even a consistent file is refused above the limit (a 2 GiB file cannot be built in a test: lower the limit).
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", 100)
    assert read_idx(idx_bytes(np.zeros((10, 10)))).shape == (10, 10)
    with pytest.raises(DataError, match="header says"):
        read_idx(idx_bytes(np.zeros((10, 11))))


# ------------------------------------------------------------------- splits


def test_stratified_split_sizes_and_proportions(mnist_raw):
    labels = mnist_raw[0].labels
    keep, held = stratified_split(labels, 0.3, seed=0)
    counts = torch.bincount(labels, minlength=10)
    held_counts = torch.bincount(labels[held], minlength=10)
    for c in range(10):
        assert abs(held_counts[c].item() - 0.3 * counts[c].item()) <= 0.5 + 1e-9, c
    assert len(keep) + len(held) == len(labels)
    assert abs(len(held) - 0.3 * len(labels)) <= 10  # at most half an image per class of rounding


def test_stratified_split_is_a_disjoint_cover():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert keep.dtype == held.dtype == torch.int64
    assert torch.equal(torch.sort(torch.cat([keep, held])).values, torch.arange(100))
    assert torch.equal(keep, keep.sort().values) and torch.equal(held, held.sort().values)
    assert torch.bincount(labels[held]).tolist() == [10, 6, 4]


def test_stratified_split_is_seeded():
    labels = torch.arange(1000) % 7
    a = stratified_split(labels, 0.25, seed=5)
    b = stratified_split(labels, 0.25, seed=5)
    c = stratified_split(labels, 0.25, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # Not simply the first images of each class.
    assert not torch.equal(
        a[1], torch.sort(torch.cat([torch.nonzero(labels == k).flatten()[:36] for k in range(7)])).values
    )


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(DataError, match="must be in"):
        stratified_split(torch.zeros(10, dtype=torch.long), fraction, 0)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_load_dataset_rejects_bad_val_fraction(fraction):
    with pytest.raises(DataError, match="--val-fraction"):
        load_dataset("mnist", val_fraction=fraction)


# --------------------------------------------------------- batch transforms


def _pre(image_size=32, in_channels=3, data_channels=1, native=28, mean=(0.1307,), std=(0.3081,)) -> Preprocess:
    return Preprocess(image_size, in_channels, data_channels, native, mean, std)


@pytest.fixture(scope="module")
def digits(mnist_raw) -> torch.Tensor:
    return mnist_raw[0].images[:8]


def test_batch_transform_grey_to_three_channels(digits):
    x = batch_transform(digits, _pre(image_size=28))
    assert x.shape == (8, 3, 28, 28) and x.dtype == torch.float32
    expected = (digits.float() / 255 - 0.1307) / 0.3081  # no resize at the native size: exact
    for ch in range(3):
        torch.testing.assert_close(x[:, ch : ch + 1], expected)
    assert x.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-6)
    assert x.max().item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-6)


@pytest.mark.parametrize("size", [32, 64, 224, 20])
def test_batch_transform_resizes(digits, size):
    x = batch_transform(digits[:2], _pre(image_size=size, in_channels=1))
    assert x.shape == (2, 1, size, size) and x.dtype == torch.float32
    lo, hi = -0.1307 / 0.3081, (1 - 0.1307) / 0.3081
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5  # bilinear resize stays in the pixel range
    assert x.is_contiguous()


def test_batch_transform_colour(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    pre = Preprocess(32, 3, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = batch_transform(images, pre)
    for ch, (m, s) in enumerate(zip(pre.mean, pre.std)):
        torch.testing.assert_close(x[:, ch], (images[:, ch].float() / 255 - m) / s)
    grey = batch_transform(images, Preprocess(32, 1, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))
    torch.testing.assert_close(grey, x.mean(1, keepdim=True))
    with pytest.raises(DataError, match="--in-channels 3"):
        batch_transform(images, Preprocess(32, 2, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))


def test_augmentation_changes_images_but_keeps_shape(digits):
    pre = _pre(image_size=32)
    plain = batch_transform(digits, pre)
    gen = torch.Generator().manual_seed(0)
    augmented = batch_transform(digits, pre, data.DIGITS, gen)
    assert augmented.shape == plain.shape == (8, 3, 32, 32)
    assert augmented.dtype == torch.float32
    assert torch.isfinite(augmented).all()
    per_image_change = (augmented - plain).abs().flatten(1).mean(1)
    assert (per_image_change > 0.01).all()  # each image got its own transform
    # The same generator seed gives the same augmentation; another gives another.
    again = batch_transform(digits, pre, data.DIGITS, torch.Generator().manual_seed(0))
    other = batch_transform(digits, pre, data.DIGITS, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, augmented)
    assert not torch.allclose(other, augmented)


def test_inactive_augmentation_is_the_plain_transform(digits):
    assert not Augment().active
    pre = _pre(image_size=32)
    torch.testing.assert_close(batch_transform(digits, pre, Augment()), batch_transform(digits, pre))


def test_digits_are_never_flipped():
    assert data.DIGITS.hflip is False
    for name in ("mnist", "kmnist"):
        assert data.dataset_info(name).augment.hflip is False
    # Photos do flip (so the flag is meaningful).
    assert data.dataset_info("cifar10").augment.hflip is True


def test_hflip_flips_about_half_of_the_images(digits):
    # Flip alone at the native size: each output is the image or its mirror, exactly.
    pre = _pre(image_size=28, in_channels=1)
    plain = batch_transform(digits, pre)
    out = batch_transform(digits, pre, Augment(hflip=True), torch.Generator().manual_seed(0))
    flipped = 0
    for a, p in zip(out, plain):
        if torch.allclose(a, p, atol=1e-5):
            continue
        torch.testing.assert_close(a, p.flip(-1), atol=1e-5, rtol=0)
        flipped += 1
    assert 0 < flipped < len(digits)


def test_crop_padding_shifts_by_whole_pixels():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (6, 1, 16, 16), dtype=torch.uint8)
    pre = Preprocess(16, 1, 1, 16, (0.0,), (1.0,))
    out = batch_transform(images, pre, Augment(crop_padding=2), torch.Generator().manual_seed(0))
    shifted = 0
    for img, o in zip(images.float() / 255, out):
        padded = F.pad(img, (2, 2, 2, 2))
        crops = [padded[:, 2 + dy : 18 + dy, 2 + dx : 18 + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
        errors = [(o - c).abs().max().item() for c in crops]
        assert min(errors) < 1e-5  # exactly a crop of the zero-padded image
        shifted += errors.index(min(errors)) != 12  # index 12 is no shift
    assert shifted > 0


def test_elastic_field_is_simards_gaussian_smoothed_noise():
    # Same noise, torchvision's 2-D Gaussian blur: the same field (the matrix form is only faster).
    import torchvision.transforms.v2.functional as TF

    field = data.elastic_field(3, 32, 28, alpha=34.0, sigma=4.0, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(3, 2, 32, 32, generator=torch.Generator().manual_seed(0)).mul_(2).sub_(1)
    s = 4.0 * 32 / 28
    radius = 14  # ceil(3 s)
    blurred = TF.gaussian_blur(noise, [2 * radius + 1] * 2, [s, s])
    torch.testing.assert_close(field, blurred.mul(2 * 34.0 / 28).permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    # A tiny image: the blur's reach is cut to fit the reflect padding.
    assert data.elastic_field(2, 6, 28, 34.0, 4.0).shape == (2, 6, 6, 2)


def test_elastic_distortion_moves_pixels_by_a_few_pixels(digits):
    pre = _pre(image_size=28, in_channels=1)
    plain = batch_transform(digits, pre)
    out = batch_transform(digits, pre, Augment(elastic=34.0), torch.Generator().manual_seed(0))
    assert out.shape == plain.shape and not torch.allclose(out, plain)
    # Small distortions: still much closer to its own digit than to another one.
    own = (out - plain).flatten(1).norm(dim=1)
    other = (out - plain.roll(1, 0)).flatten(1).norm(dim=1)
    assert (own < other).all()
    weak = batch_transform(digits, pre, Augment(elastic=3.4), torch.Generator().manual_seed(0))
    assert (weak - plain).norm() < (out - plain).norm()


# ------------------------------------------------------------ image folders


def _write_images(folder: Path, n: int, mode: str, size: int = 20, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{i}.png")


def test_imagefolder_colour_without_split_folders(tmp_path):
    for k, cls in enumerate(["dog", "cat"]):
        _write_images(tmp_path / cls, 10, "RGB", seed=k)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{tmp_path}", image_size=32, val_fraction=0.25, seed=0)
    assert ds.classes == ["cat", "dog"] and ds.channels == 3
    # 20% of each class held out for test (2), then 25% of the rest for validation (2 of 8).
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 4, 4)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.shape[1:] == (3, 32, 32) and split.images.dtype == torch.uint8
        assert torch.bincount(split.labels, minlength=2).tolist() == [len(split) // 2] * 2
    assert len(ds.mean) == len(ds.std) == 3
    assert ds.default_augment == data.PHOTOS


def test_imagefolder_grey_with_split_folders(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for k, cls in enumerate(["a", "b", "c"]):
            _write_images(tmp_path / split / cls, n, "L", size=12, seed=k)
    ds = load_dataset(f"imagefolder:{tmp_path}", image_size=40, val_fraction=0.5, seed=0)
    assert ds.classes == ["a", "b", "c"] and ds.channels == 1
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 9)  # val/ and test/ used as given
    assert ds.train.images.shape[1:] == (1, 40, 40)
    assert torch.bincount(ds.test.labels).tolist() == [3, 3, 3]


def test_imagefolder_reproducible_for_a_seed(tmp_path):
    for k, cls in enumerate(["x", "y"]):
        _write_images(tmp_path / cls, 10, "L", seed=k)
    a = load_dataset(f"imagefolder:{tmp_path}", image_size=32, val_fraction=0.25, seed=1)
    b = load_dataset(f"imagefolder:{tmp_path}", image_size=32, val_fraction=0.25, seed=1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.images, b.test.images)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", image_size=32)
    _write_images(tmp_path / "only", 3, "L")
    with pytest.raises(DataError, match="at least two class subfolders"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=32)
    _write_images(tmp_path / "other", 3, "L")
    (tmp_path / "other" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=32)


# ------------------------------------------------------- other datasets


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*mnist.*imagefolder:PATH"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["cifar10", "fashion-mnist"])
def test_missing_torchvision_dataset_asks_for_download(tmp_path, name):
    with pytest.raises(DataError, match="--download") as info:
        load_dataset(name, data_dir=tmp_path, download=False)
    assert str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> None:
    """torchvision's CIFAR-10 layout with a few images per batch file, red for even labels, blue for odd."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        images = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 0 if label % 2 == 0 else 2] = 200 + label  # CIFAR stores planes R, G, B
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(per_batch, -1), "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_fake_cifar10_is_refused_by_torchvision_md5(tmp_path):
    """torchvision checks the MD5 of every CIFAR-10 file, so a fake is reported as missing or corrupted."""
    _write_fake_cifar10(tmp_path)
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_fake_cifar10_loads_when_md5_is_bypassed(tmp_path, monkeypatch):
    """Our conversion of torchvision's arrays: N x H x W x C -> N x C x H x W, labels, class names."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    _write_fake_cifar10(tmp_path, per_batch=4)
    ds = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.25, seed=0)
    assert ds.classes == [f"class{i}" for i in range(10)] and ds.channels == 3 and ds.native_size == 32
    assert len(ds.train) + len(ds.val) == 20 and len(ds.test) == 4
    for split in (ds.train, ds.val, ds.test):
        assert split.images.shape[1:] == (3, 32, 32) and split.images.dtype == torch.uint8
        for img, label in zip(split.images, split.labels.tolist()):
            channel = 0 if label % 2 == 0 else 2
            assert torch.all(img[channel] == 200 + label)
            assert img.sum() == (200 + label) * 32 * 32  # the other planes are empty


def test_resize_keeps_the_aspect_ratio_and_takes_the_centre_crop():
    """Preprocess.resize: the shorter side to `resize`, then the centre image_size crop (ImageNet's 256 -> 224), for
    tensors too."""
    pre = Preprocess(8, 1, 1, 8, (0.0,), (1 / 255,), resize=10)
    wide = torch.arange(20, dtype=torch.float32).repeat(10, 1)[None, None]  # 10 x 20: already 10 on its shorter side
    torch.testing.assert_close(batch_transform(wide, pre)[0, 0], wide[0, 0, 1:9, 6:14])
    assert Preprocess.from_dict(pre.to_dict()) == pre
    # defaults left out: older versions read the file
    assert "resize" not in Preprocess(8, 1, 1, 8, (0.0,), (1.0,)).to_dict()
