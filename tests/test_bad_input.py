"""Bad and hostile input: each ends in one line naming the problem and the fix, exit 2, no traceback, nothing written.

Most cases call `cli.main` in-process (an escaping exception would fail the
test just as a traceback would); a few run the real `python -m googlenet`
to check the exit status and stderr of the process itself. Every case
snapshots the working directory's files (path, size, mtime) before and after
and requires them unchanged. The predict-specific case (an unreadable image)
is tested in test_predict.py.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import checkpoint_state, one_line_error, run_cli

from googlenet.checkpoint import save_checkpoint
from googlenet.config import ConfigError, TrainConfig
from googlenet.data import MAX_IDX_BYTES, MNIST_FILES, DataError, load_dataset, mnist_dir, read_idx
from googlenet.data.datasets import _load_mnist
from googlenet.rundir import claim_run_dir


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def mnist_copy(tmp_path_factory) -> Path:
    """A pristine copy of the packaged MNIST files."""
    root = tmp_path_factory.mktemp("mnist")
    for stem in MNIST_FILES:
        shutil.copyfile(str(mnist_dir() / f"{stem}.gz"), root / f"{stem}.gz")
    return root


def mnist_with(base: Path, dest: Path, stem: str, data: bytes | None, gz: bool = True) -> Path:
    """A copy of MNIST in `dest` with `stem` replaced by `data` (None: removed)."""
    shutil.copytree(base, dest)
    (dest / f"{stem}.gz").unlink()
    if data is not None:
        (dest / (f"{stem}.gz" if gz else stem)).write_bytes(data)
    return dest


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, checkpoint_state())
    return path.read_bytes()


def idx_header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def write_png(path: Path, value: int = 128) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((28, 28), value, dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- datasets


def test_missing_torchvision_dataset(capsys, cwd: Path):
    (cwd / "empty").mkdir()
    line = one_line_error(capsys, ["train", "--dataset", "cifar10", "--data-dir", "empty"], cwd)
    assert "cifar10 is not in empty" in line and "--download" in line


def test_missing_mnist_file(capsys, cwd: Path, mnist_copy: Path):
    mnist_with(mnist_copy, cwd / "mnist", "t10k-labels-idx1-ubyte", None)
    line = one_line_error(capsys, ["train", "--data-dir", "mnist"], cwd)
    assert "t10k-labels-idx1-ubyte(.gz) is missing from mnist" in line and "restore the file" in line


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated-gz", "cannot be decompressed"),
        ("random-gz", "cannot be decompressed"),
        ("flipped-byte", "fails its MD5 check"),
    ],
)
def test_corrupted_mnist_file(capsys, cwd: Path, mnist_copy: Path, kind: str, message: str):
    stem = "train-labels-idx1-ubyte"
    good = (mnist_copy / f"{stem}.gz").read_bytes()
    raw = bytearray(gzip.decompress(good))
    raw[100] ^= 0xFF
    data = {
        "truncated-gz": good[: len(good) // 2],
        "random-gz": random.Random(0).randbytes(5000),
        "flipped-byte": gzip.compress(bytes(raw)),
    }[kind]
    mnist_with(mnist_copy, cwd / "mnist", stem, data)
    line = one_line_error(capsys, ["train", "--data-dir", "mnist"], cwd)
    assert stem in line and message in line and "restore the file" in line


def test_unknown_dataset_and_missing_image_folder(capsys, cwd: Path):
    line = one_line_error(capsys, ["train", "--dataset", "imagenet"], cwd)
    assert "unknown dataset 'imagenet'" in line and "mnist" in line and "imagefolder:PATH" in line
    line = one_line_error(capsys, ["train", "--dataset", "imagefolder:nope"], cwd)
    assert "image folder nope does not exist" in line and "one subfolder per class" in line


def test_image_folder_with_unreadable_or_too_few_images(capsys, cwd: Path):
    for cls in ("a", "b"):
        for i in range(4):
            write_png(cwd / "imgs" / cls / f"{i}.png", 60 * i)
    (cwd / "imgs" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    line = one_line_error(capsys, ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"], cwd)
    assert "cannot read image" in line and "broken.png" in line
    shutil.rmtree(cwd / "imgs" / "b")
    line = one_line_error(capsys, ["train", "--dataset", "imagefolder:imgs"], cwd)
    assert "needs at least two class subfolders" in line


def test_batch_larger_than_the_split(capsys, cwd: Path):
    # over the memory bound (config.MAX_BATCH_SIZE) it is refused before any data is read; a batch larger
    # than a small split is clipped to it (test_evaluate_data.test_a_folder_run_is_evaluated_on_its_own_splits...)
    line = one_line_error(capsys, ["train", "--batch-size", "100000"], cwd)
    assert "batch_size must be at most 4096, got 100000" in line


# ---------------------------------------------------------------- settings


def test_image_size_below_the_minimum(capsys, cwd: Path):
    for argv in (["train", "--image-size", "16"], ["summary", "--image-size", "16"]):
        line = one_line_error(capsys, argv, cwd)
        assert "image size 16 is below the network's minimum of 31: use --image-size 31 or more" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
        (["train", "--schedule", "linear"], "argument --schedule: invalid choice"),
        (["train", "--preset", "huge"], "argument --preset: invalid choice"),
        (["train", "--average", "swa"], "argument --average: invalid choice"),
        (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["evaluate", "x.pt", "--split", "holdout"], "argument --split: invalid choice"),
        (["train", "--device", "tpu"], "unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps"),
        (["train", "--epochs", "0"], "epochs must be positive, got 0"),
        (["train", "--batch-size", "-4"], "batch_size must be positive"),
        (["train", "--dropout", "1.0"], "dropout must be in [0, 1)"),
        (["train", "--val-fraction", "1.5"], "val_fraction must be between 0 and 1"),
        (["train", "--config", "nope.yaml"], "cannot read config file nope.yaml"),
    ],
)
def test_bad_option_values(capsys, cwd: Path, argv: list[str], message: str):
    assert message in one_line_error(capsys, argv, cwd)


def test_bad_config_files(capsys, cwd: Path):
    (cwd / "typo.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    assert "unknown setting(s) learning_rate" in one_line_error(capsys, ["train", "--config", "typo.yaml"], cwd)
    (cwd / "broken.yaml").write_text("epochs: [2\n")
    assert "is not valid YAML" in one_line_error(capsys, ["train", "--config", "broken.yaml"], cwd)
    (cwd / "list.yaml").write_text("- 1\n- 2\n")
    assert "must hold a mapping" in one_line_error(capsys, ["train", "--config", "list.yaml"], cwd)


def test_existing_run_directory(capsys, cwd: Path):
    (cwd / "P" / "taken").mkdir(parents=True)
    line = one_line_error(capsys, ["train", "--project", "P", "--name", "taken", "--batch-size", "16"], cwd)
    assert "run directory P/taken already exists" in line and "--exist-ok" in line
    # --exist-ok reuses it; the default name counts up instead of failing
    assert claim_run_dir(TrainConfig(project="P", name="taken", exist_ok=True)) == Path("P/taken")
    with pytest.raises(ConfigError):
        claim_run_dir(TrainConfig(project="P", name="taken"))
    (cwd / "P" / "exp").mkdir()
    assert claim_run_dir(TrainConfig(project="P")) == Path("P/exp2") and (cwd / "P" / "exp2").is_dir()


# ---------------------------------------------------------------- checkpoints


def edited_checkpoint(path: Path, **model_args) -> Path:
    state = checkpoint_state()
    save_checkpoint(path, {**state, "model_args": {**state["model_args"], **model_args}})
    return path


def test_checkpoint_of_another_class_count(capsys, cwd: Path):
    # a consistent 5-class checkpoint (a forged one: test_hostile.py)
    save_checkpoint(cwd / "five.pt", checkpoint_state(num_classes=5))
    line = one_line_error(capsys, ["evaluate", "five.pt"], cwd)
    assert "mnist has a class '5' that the checkpoint does not know (its classes: 0, 1, 2, 3, 4)" in line


def test_checkpoint_of_another_channel_count(capsys, cwd: Path):
    edited_checkpoint(cwd / "rgb.pt", in_channels=3)
    line = one_line_error(capsys, ["evaluate", "rgb.pt"], cwd)
    assert "does not match the model" in line and "conv1" in line and "(another class count or channel count?)" in line


def test_checkpoint_of_another_architecture(capsys, cwd: Path):
    tv = pytest.importorskip("torchvision")
    torch.save(tv.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict(), cwd / "tv.pt")
    line = one_line_error(capsys, ["evaluate", "tv.pt"], cwd)
    assert "tv.pt is not a googlenet checkpoint" in line and "pass weights/best.pt or weights/last.pt" in line


def test_pickled_payload_is_refused_by_evaluate(cwd: Path):
    marker = cwd / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    torch.save({**checkpoint_state(), "extra": Payload()}, cwd / "evil.pt")
    line = run_cli(cwd, "evaluate", "evil.pt")
    assert line.startswith("googlenet evaluate: error: checkpoint evil.pt was refused: it would import posix.system")
    assert not marker.exists()


# ---------------------------------------------------------------- hostile files


def hostile_files(good: bytes) -> dict[str, bytes]:
    rng = random.Random(1)
    return {
        "random": rng.randbytes(8192),
        "empty": b"",
        "truncated-pt": good[: len(good) // 3],
        "truncated-gz": gzip.compress(good[:50000])[:3000],
        "idx-huge-dims": idx_header((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)) + b"\0" * 64,
        "text": b"model: yes\n",
    }


HOSTILE = list(hostile_files(b"\0" * 100000))
TARGETS = ["evaluate", "export", "predict", "resume-dir", "resume-file"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_checkpoint(capsys, cwd: Path, good_checkpoint: bytes, kind: str, target: str):
    data = hostile_files(good_checkpoint)[kind]
    run = cwd / "runs" / "x"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(data)
    shutil.copyfile(run / "weights" / "last.pt", run / "weights" / "best.pt")
    image = write_png(cwd / "digit.png")
    argv = {
        "evaluate": ["evaluate", "runs/x/weights/best.pt"],
        "export": ["export", "runs/x/weights/best.pt", "--format", "safetensors"],
        "predict": ["predict", "runs/x/weights/best.pt", str(image.name)],
        "resume-dir": ["train", "--resume", "runs/x"],
        "resume-file": ["train", "--resume", "runs/x/weights/last.pt"],
    }[target]
    line = one_line_error(capsys, argv, cwd)
    assert "runs/x/weights/" in line
    assert any(
        word in line for word in ("corrupted", "truncated", "not a googlenet checkpoint", "not a PyTorch checkpoint")
    )


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_dataset_file(capsys, cwd: Path, mnist_copy: Path, kind: str):
    """Each hostile file in place of MNIST's training images, compressed (.gz) and plain."""
    stem = "train-images-idx3-ubyte"
    data = hostile_files(b"\0" * 100000)[kind]
    for gz in (True, False):
        root = mnist_with(mnist_copy, cwd / f"mnist-{gz}", stem, data, gz=gz)
        line = one_line_error(capsys, ["train", "--data-dir", root.name], cwd)
        assert stem in line and "restore the file" in line
        shutil.rmtree(root)


def test_hostile_files_in_real_processes(cwd: Path, good_checkpoint: bytes, mnist_copy: Path):
    """The same through `python -m googlenet`: exit 2, one stderr line, no traceback, nothing written."""
    files = hostile_files(good_checkpoint)
    (cwd / "random.pt").write_bytes(files["random"])
    assert "random.pt is corrupted or not a PyTorch checkpoint" in run_cli(cwd, "evaluate", "random.pt")
    (cwd / "runs" / "t" / "weights").mkdir(parents=True)
    (cwd / "runs" / "t" / "weights" / "last.pt").write_bytes(files["truncated-pt"])
    assert "truncated or corrupted" in run_cli(cwd, "train", "--resume", "runs/t")
    mnist_with(mnist_copy, cwd / "mnist", "t10k-images-idx3-ubyte", files["truncated-gz"])
    assert "cannot be decompressed" in run_cli(cwd, "train", "--data-dir", "mnist")


# ---------------------------------------------------------------- IDX parsing (below the MD5 check)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_header((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)), "is truncated or corrupted"),  # 2^96 bytes claimed
        (idx_header((60000, 28, 28)) + b"\0" * 100, "is truncated or corrupted"),
        (idx_header((2,)) + b"\0" * 3, "is truncated or corrupted"),
        (b"", "not an IDX file"),
        (b"\x1f\x8b\x08\x00", "not an IDX file"),
        (bytes([0, 0, 0x0D, 1]) + b"\0\0\0\1" + b"\0" * 4, "only unsigned-byte IDX files"),
        (bytes([0, 0, 8, 0]), "has 0 dimensions"),
        (bytes([0, 0, 8, 200]) + b"\0" * 16, "has 200 dimensions"),
    ],
    ids=["huge-dims", "short-payload", "short-by-one", "empty", "gzip-magic", "float-type", "zero-dims", "many-dims"],
)
def test_read_idx_checks_the_header_before_allocating(data: bytes, message: str):
    with pytest.raises(DataError, match=message):
        read_idx(data, "f")


def test_huge_idx_dims_below_the_limit_are_refused_too():
    side = int((MAX_IDX_BYTES + 1) ** 0.5) + 1  # just over the cap, a plausible-looking header
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_idx(idx_header((side, side)), "f")


def test_unverified_mnist_directory_with_a_hostile_header(tmp_path: Path, mnist_copy: Path):
    """Without the MD5 check the IDX header check still refuses it, via load_dataset's own reader."""
    root = mnist_with(
        mnist_copy, tmp_path / "mnist", "train-images-idx3-ubyte", idx_header((0xFFFFFFFF, 28, 28)), gz=False
    )
    with pytest.raises(DataError, match="train-images-idx3-ubyte: IDX header says"):
        _load_mnist(root, verify=False)
    with pytest.raises(DataError, match="train-images-idx3-ubyte fails its MD5 check"):
        load_dataset("mnist", data_dir=root)
