"""Bad and hostile input: each ends in one line naming the problem and the fix, exit status 2, no traceback, nothing
written; nothing escapes the run directory, nothing hangs or exhausts memory.

This is the one module for that contract, ordinary mistakes (a mistyped flag, a missing MNIST file, another model's
checkpoint) and crafted attacks (forged checkpoints, bombs, links, FIFOs) alike. `CASES` is the table: (what is set up
in a fresh working directory, the command line, the expected error text or several pieces of it), one row per case.
Each runs `cli.main` in-process (an escaping exception fails the test just as a traceback would) and must end with exit
status 2 and exactly one stderr line `googlenet CMD: error: ...` (after argparse's usage line, if any), no traceback,
and no file created, changed or removed under the working directory (conftest's `one_line_error` compares every file's
path, size and mtime). What a row cannot say is a test function: a damaged file in place of the checkpoint of every
command that reads one, the run-directory and IDX readers called directly. A FIFO that would block is a row too
(a SIGALRM deadline fails it instead of a hang). The few cases that need a real process (a pickled payload, a bounded
peak memory, the exit status and stderr of `python -m googlenet` itself) run it with a timeout; the signals (SIGTERM
in the final evaluation, in the benchmark) go to googlenet's own handlers, so they are sent to this process.
The parsers of IDX files, config files and checkpoint metadata are fuzzed with hypothesis (a bounded number of
examples). The predict-specific case (an unreadable image is skipped, the others predicted) is tested in
test_predict.py.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import yaml
from conftest import ENV, checkpoint_state, one_line_error, run_cli, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from googlenet import files
from googlenet.checkpoint import PREPROCESS_KEYS, CheckpointError, save_checkpoint, validate_metadata
from googlenet.cli import main
from googlenet.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    TrainConfig,
    load_yaml,
    resolve_config,
)
from googlenet.data import MAX_IDX_BYTES, MNIST_FILES, DataError, Preprocess, load_dataset, mnist_dir, read_idx
from googlenet.data.datasets import _load_mnist
from googlenet.files import YAMLSizeError, safe_load_bounded
from googlenet.rundir import claim_run_dir
from googlenet.tables import format_table

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------ the runner


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "d.png")  # an image for the predict cases
    return tmp_path


@pytest.fixture(scope="module")
def mnist_copy(tmp_path_factory) -> Path:
    """A pristine copy of the packaged MNIST files."""
    root = tmp_path_factory.mktemp("mnist")
    for stem in MNIST_FILES:
        shutil.copyfile(str(mnist_dir() / f"{stem}.gz"), root / f"{stem}.gz")
    return root


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, checkpoint_state())
    return path.read_bytes()


# ------------------------------------------------------------------ what a case sets up (in the working directory)

Setup = Callable[[Path, Any], None]  # (working directory, pytest's request for fixtures)


def nothing(cwd: Path, request) -> None:
    pass


def write_png(path: Path, value: int = 128, size: int = 28) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height (PIL checks the size when opening it, before decoding anything)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@functools.cache
def base_state() -> dict:
    return checkpoint_state()  # a real 10-class, 1-channel model with the metadata googlenet writes


def merged(state: dict, edits: dict) -> dict:
    """`state` with `edits`; a dict value is merged one level deep (e.g. preprocess={"image_size": 100000})."""
    out = copy.copy(state)
    for k, v in edits.items():
        out[k] = {**state[k], **v} if isinstance(v, dict) and isinstance(state.get(k), dict) else v
    return out


def ckpt(**edits) -> Setup:
    """c.pt: a checkpoint with `edits` (model_args, preprocess, classes, config, ... or model=callable(weights))."""

    def setup(cwd: Path, request) -> None:
        state = base_state()
        if callable(edits.get("model")):
            state = {**state, "model": edits["model"]({k: v.clone() for k, v in state["model"].items()})}
        save_checkpoint(
            cwd / "c.pt", merged(state, {k: v for k, v in edits.items() if k != "model" or not callable(v)})
        )

    return setup


def nan_weights(weights: dict) -> dict:
    weights["fc.weight"][0, 0] = float("nan")
    return weights


def exported(raw: dict[str, str] | None = None, **meta_edits) -> Setup:
    """e.safetensors: an inference export whose metadata has `meta_edits` (merged one level deep) and `raw` strings."""

    def setup(cwd: Path, request) -> None:
        from safetensors.torch import save_file

        from googlenet.model import GoogLeNet

        state = base_state()
        meta = {
            "classes": state["classes"],
            "preprocess": state["preprocess"],
            "model_args": {**state["model_args"], "aux_logits": False},
        }
        meta = merged(meta, meta_edits)
        weights = {k: v.contiguous() for k, v in GoogLeNet(10, 1, aux_logits=False).state_dict().items()}
        save_file(
            weights,
            str(cwd / "e.safetensors"),
            metadata={"format": "pt", **{k: json.dumps(v) for k, v in meta.items()}, **(raw or {})},
        )

    return setup


def config_file(content: str | bytes) -> Setup:
    def setup(cwd: Path, request) -> None:
        (cwd / "c.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def link(name: str, target: str) -> Setup:
    def setup(cwd: Path, request) -> None:
        (cwd / name).symlink_to(target)

    return setup


def image_folder(extra: Callable[[Path], None]) -> Setup:
    """imgs/: two classes of three images each, plus `extra(imgs)`."""

    def setup(cwd: Path, request) -> None:
        for cls in ("a", "b"):
            for i in range(3):
                write_png(cwd / "imgs" / cls / f"{i}.png", 60 * i)
        extra(cwd / "imgs")

    return setup


def bomb(imgs: Path) -> None:
    (imgs / "a" / "bomb.png").write_bytes(png_header(30000, 30000))


def non_utf8_class(imgs: Path) -> None:
    folder = os.fsencode(imgs) + b"/caf\xe9"  # Latin-1 bytes: not UTF-8
    os.mkdir(folder)
    write_png(Path(os.fsdecode(folder)) / "0.png")


def newline_class(imgs: Path) -> None:
    write_png(imgs / "two\nlines" / "0.png")


def class_link_outside(imgs: Path) -> None:
    write_png(imgs.parent / "elsewhere" / "0.png")
    (imgs / "c").symlink_to(imgs.parent / "elsewhere")


def split_link_to_root(imgs: Path) -> None:
    (imgs / "train").symlink_to("/")


def broken_png(imgs: Path) -> None:
    (imgs / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def one_class(imgs: Path) -> None:
    shutil.rmtree(imgs / "b")


def idx_header(dims: tuple[int, ...]) -> bytes:
    """The header of an IDX file of unsigned bytes with these dimensions."""
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def fashion_mnist(magic: bytes) -> Setup:
    """data/FashionMNIST/raw: torchvision's four files, tiny, the training images' header starting with `magic`."""

    def setup(cwd: Path, request) -> None:
        raw = cwd / "data" / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for prefix, n in (("train", 20), ("t10k", 10)):
            images = np.zeros((n, 28, 28), np.uint8)
            labels = (np.arange(n) % 10).astype(np.uint8)
            for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
                header = idx_header(arr.shape)
                if prefix == "train" and kind == "images-idx3":
                    header = magic + header[len(magic) :]
                (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + arr.tobytes())

    return setup


def mnist_with(base: Path, dest: Path, stem: str, data: bytes | None, gz: bool = True) -> Path:
    """A copy of MNIST in `dest` with `stem` replaced by `data` (None: removed)."""
    shutil.copytree(base, dest)
    (dest / f"{stem}.gz").unlink()
    if data is not None:
        (dest / (f"{stem}.gz" if gz else stem)).write_bytes(data)
    return dest


def mnist_file(stem: str, data: bytes | Callable[[bytes], bytes] | None, gz: bool = True) -> Setup:
    """mnist/: a copy of the packaged MNIST (the mnist_copy fixture) with `stem` replaced by `data` (None: removed; a
    callable: made from the good file's .gz bytes), as `stem`.gz or, with gz=False, as the plain `stem`."""

    def setup(cwd: Path, request) -> None:
        base = request.getfixturevalue("mnist_copy")
        made = data((base / f"{stem}.gz").read_bytes()) if callable(data) else data
        mnist_with(base, cwd / "mnist", stem, made, gz)

    return setup


def first_half(good: bytes) -> bytes:
    return good[: len(good) // 2]


def byte_flipped(good: bytes) -> bytes:
    """A valid gzip whose content has one byte flipped: only the MD5 check finds it."""
    raw = bytearray(gzip.decompress(good))
    raw[100] ^= 0xFF
    return gzip.compress(bytes(raw))


def hostile_files(good: bytes) -> dict[str, bytes]:
    """Damaged and foreign files, two of them cut from the bytes of a good file."""
    rng = random.Random(1)
    return {
        "random": rng.randbytes(8192),
        "empty": b"",
        "truncated-pt": good[: len(good) // 3],
        "truncated-gz": gzip.compress(good[:50000])[:3000],
        "idx-huge-dims": idx_header((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)) + b"\0" * 64,
        "text": b"model: yes\n",
    }


# for the MNIST rows, cut from random bytes (zeros would compress to less than the cut: no gzip stream cut short);
# test_hostile_checkpoint cuts them from a checkpoint
HOSTILE = hostile_files(random.Random(0).randbytes(100000))


def damaged(path: str, kind: str) -> Setup:
    """`path`: the damaged or foreign file `kind` of hostile_files, cut from a good checkpoint (the good_checkpoint
    fixture)."""

    def setup(cwd: Path, request) -> None:
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / path).write_bytes(hostile_files(request.getfixturevalue("good_checkpoint"))[kind])

    return setup


def other_model(num_classes: int) -> Setup:
    """c.pt: a consistent checkpoint of a model with another class count (conftest's checkpoint_state)."""

    def setup(cwd: Path, request) -> None:
        save_checkpoint(cwd / "c.pt", checkpoint_state(num_classes=num_classes))

    return setup


def torchvision_weights(cwd: Path, request) -> None:
    """tv.pt: torchvision's GoogLeNet as a bare state dict (skipped without torchvision)."""
    tv = pytest.importorskip("torchvision")
    torch.save(tv.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict(), cwd / "tv.pt")


@functools.cache
def trained_last(run: Path) -> dict:
    return torch.load(run / "weights" / "last.pt", weights_only=True)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, torch.Tensor):
        yield obj


def _containers_copied(obj: Any) -> Any:
    """A copy of a checkpoint's dicts and lists that shares its tensors (165 MB a deepcopy would copy each time)."""
    if isinstance(obj, dict):
        return type(obj)((k, _containers_copied(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_containers_copied(v) for v in obj]
    return obj


def forged_run(**edits) -> Setup:
    """R/: a copy of a trained run (conftest's trained_run) whose last.pt has `edits` (a callable edits the state in
    place: its dicts and lists are copies, its tensors the cached state's, so an edit replaces a tensor, never changes
    one in place). Without edits last.pt is hard-linked, as finished_run does."""

    def setup(cwd: Path, request) -> None:
        trained = request.getfixturevalue("trained_run")
        run = cwd / "R"
        if not edits:
            shutil.copytree(
                trained, run, ignore=shutil.ignore_patterns("best.pt", "*.png"), copy_function=_link_checkpoints
            )
        else:  # last.pt (165 MB) is written here: not copied first
            shutil.copytree(trained, run, ignore=shutil.ignore_patterns("best.pt", "last.pt", "*.png"))
            cached = trained_last(trained)
            versions = [(t, t._version) for t in _tensors(cached)]
            state = _containers_copied(cached)
            for k, v in edits.items():
                v(state) if k == "edit" else state.__setitem__(k, v)
            assert all(t._version == version for t, version in versions), "an edit changed a cached tensor in place"
            torch.save(state, run / "weights" / "last.pt")
        # a stale temporary: kept, as everything, when the resume is refused
        (run / "weights" / ".last.pt.abcd1234.tmp.pt").write_bytes(b"x")

    return setup


MID_EPOCH = {
    "epoch": 0,
    "results": [],
    "best_epoch": -1,
    "best_acc": -1.0,
    "epoch_state": {"step": 1, "loss_sum": 1.0, "correct": 0, "seen": 16},
}


def rng_of_size(n: int) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        state.update(
            MID_EPOCH, rng={"torch": torch.zeros(n, dtype=torch.uint8), "augment": torch.zeros(n, dtype=torch.uint8)}
        )

    return edit


def fifo(name: str) -> Setup:
    def setup(cwd: Path, request) -> None:
        os.mkfifo(cwd / name)

    return setup


def directory(name: str) -> Setup:
    def setup(cwd: Path, request) -> None:
        (cwd / name).mkdir(parents=True)

    return setup


def both(*setups: Setup) -> Setup:
    def setup(cwd: Path, request) -> None:
        for s in setups:
            s(cwd, request)

    return setup


def a_file(name: str) -> Setup:
    def setup(cwd: Path, request) -> None:
        (cwd / name).write_text("not a folder\n")

    return setup


def finished_run(name: str | None = None, make: Callable[[Path], Any] | None = None, edit=None) -> Setup:
    """R/: a copy of a finished run (conftest's trained_run, without its figures) whose file `name` is replaced by
    `make(path)`, or rewritten as `edit(its text)`."""

    def setup(cwd: Path, request) -> None:
        run = cwd / "R"
        trained = request.getfixturevalue("trained_run")
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png"), copy_function=_link_checkpoints)
        if edit is not None:
            (run / name).write_text(edit((run / name).read_text()))
        elif make is not None:
            (run / name).unlink()
            make(run / name)

    return setup


def _link_checkpoints(src: str, dst: str) -> None:
    """Copy a run file, but hard-link its checkpoints (250 MB a run, never changed here) where the disk allows."""
    if src.endswith(".pt"):
        with contextlib.suppress(OSError):
            os.link(src, dst)
            return
    shutil.copy2(src, dst)


def to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def sparse_gigabyte(path: Path) -> None:
    """1 GiB that takes no disk space: a reader that trusted it would allocate it all."""
    with open(path, "wb") as f:
        f.truncate(1 << 30)


def laughs(levels: int) -> str:
    """A billion-laughs YAML document: `levels` anchors of ten aliases each, 10 ** levels strings in a few hundred
    bytes."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def metrics_edit(edit: Callable[[dict], None]) -> Callable[[str], str]:
    def text(content: str) -> str:
        metrics = json.loads(content)
        edit(metrics)
        return json.dumps(metrics)

    return text


def weights_linked_out(cwd: Path, request) -> None:
    """R/weights is a link to elsewhere/ (a forged_run's files, its stale temporary file included)."""
    forged_run()(cwd, request)
    (cwd / "R" / "weights").rename(cwd / "elsewhere")
    (cwd / "R" / "weights").symlink_to(cwd / "elsewhere")


# ------------------------------------------------------------------ the table


class Case(NamedTuple):
    id: str  # the class of input and what is tried
    setup: Setup
    argv: list[str]
    expected: str | tuple[str, ...]  # what the error line holds (or each of several pieces of it)


UNUSABLE = "use a checkpoint written by googlenet"
CASES = [
    # 1. checkpoints and exports: every field is bounded before anything is allocated; another model's is named as such
    Case(
        "1-image-size",
        ckpt(preprocess={"image_size": 100000}),
        ["predict", "c.pt", "d.png"],
        "image size 100000 is above the limit of 1024",
    ),
    Case(
        "1-image-size-evaluate",
        ckpt(preprocess={"image_size": 100000}),
        ["evaluate", "c.pt"],
        "image size 100000 is above the limit",
    ),
    Case(
        "1-image-size-export",
        ckpt(preprocess={"image_size": 100000}),
        ["export", "c.pt"],
        "image size 100000 is above the limit",
    ),
    Case(
        "1-averaged-tensor",
        ckpt(averaged_model=torch.zeros(3)),
        ["export", "c.pt"],
        "averaged_model that is not a state dict",
    ),
    Case(
        "1-averaged-count",
        ckpt(averaged_count=torch.tensor(-10)),
        ["predict", "c.pt", "d.png"],
        "averaged_count that is not a count",
    ),
    Case(
        "1-native-size",
        ckpt(preprocess={"native_size": 100000}),
        ["predict", "c.pt", "d.png"],
        "native_size must be an integer from 1 to 1024",
    ),
    Case(
        "1-resize",
        ckpt(preprocess={"resize": 100000}),
        ["predict", "c.pt", "d.png"],
        "resize must be unset or an integer from image_size (32) to 1024",
    ),
    Case(
        "1-resize-below",
        ckpt(preprocess={"resize": 16}),
        ["predict", "c.pt", "d.png"],
        "resize must be unset or an integer",
    ),
    Case(
        "1-class-count",
        ckpt(model_args={"num_classes": 10**12}),
        ["predict", "c.pt", "d.png"],
        "num_classes must be an integer from 1 to 100000",
    ),
    Case(
        "1-class-count-evaluate",
        ckpt(model_args={"num_classes": 10**12}),
        ["evaluate", "c.pt"],
        "has unusable model arguments (num_classes",
    ),
    Case(
        "1-channels",
        ckpt(model_args={"in_channels": 10**6}),
        ["predict", "c.pt", "d.png"],
        "in_channels must be an integer from 1 to 64",
    ),
    Case(
        "1-model-arg-type", ckpt(model_args={"dropout": "x"}), ["predict", "c.pt", "d.png"], "dropout must be in [0, 1)"
    ),
    Case(
        "1-class-count-vs-weights",
        ckpt(model_args={"num_classes": 5}),
        ["evaluate", "c.pt"],
        "fc.weight has shape (10, 1024) but its model arguments say 5 classes",
    ),
    Case(
        "1-preprocess-channels",
        ckpt(preprocess={"in_channels": 3}),
        ["predict", "c.pt", "d.png"],
        "in_channels 3 is not the model's 1",
    ),
    Case(
        "1-data-channels",
        ckpt(preprocess={"data_channels": 1000}),
        ["predict", "c.pt", "d.png"],
        "data_channels must be an integer from 1 to 64",
    ),
    Case(
        "1-mean-nan",
        ckpt(preprocess={"mean": [float("nan")]}),
        ["predict", "c.pt", "d.png"],
        "mean must be a list of 1 to 64 finite numbers",
    ),
    Case(
        "1-mean-past-int64",  # found by test_checkpoint_metadata_fuzzed: torch.tensor overflowed in batch_transform
        ckpt(preprocess={"mean": [2**63]}),
        ["predict", "c.pt", "d.png"],
        "mean must be a list of 1 to 64 finite numbers of at most 1e+06 in size, got [9223372036854775808]",
    ),
    Case(
        "1-mean-length",
        ckpt(preprocess={"mean": [0.1] * 5, "std": [0.3] * 5}),
        ["predict", "c.pt", "d.png"],
        "cannot feed a 1-channel model",
    ),
    Case("1-std-zero", ckpt(preprocess={"std": [0.0]}), ["predict", "c.pt", "d.png"], "std must be positive"),
    Case(
        "1-std-text",
        ckpt(preprocess={"std": "wide"}),
        ["predict", "c.pt", "d.png"],
        "std must be a list of 1 to 64 finite numbers",
    ),
    Case(
        "1-channel-order",
        ckpt(preprocess={"channel_order": "GBR"}),
        ["predict", "c.pt", "d.png"],
        "channel_order must be RGB or BGR",
    ),
    Case(
        "1-preprocess-unknown", ckpt(preprocess={"gamma": 2.2}), ["predict", "c.pt", "d.png"], "unknown field 'gamma'"
    ),
    Case(
        "1-preprocess-not-dict",
        ckpt(preprocess=[1, 2]),
        ["predict", "c.pt", "d.png"],
        "unusable preprocessing settings (not a mapping)",
    ),
    Case(
        "1-classes-count", ckpt(classes=["a", "b", "c"]), ["predict", "c.pt", "d.png"], "10 class names expected, got 3"
    ),
    Case(
        "1-classes-newline",
        ckpt(classes=[f"c{i}" for i in range(9)] + ["a\nb"]),
        ["predict", "c.pt", "d.png"],
        "is not printable text",
    ),
    Case(
        "1-classes-surrogate",
        ckpt(classes=[f"c{i}" for i in range(9)] + ["\udcff"]),
        ["predict", "c.pt", "d.png"],
        "unusable class names",
    ),
    Case(
        "1-config-image-size",
        ckpt(config={"image_size": 100000}),
        ["evaluate", "c.pt"],
        "unusable training config (image size 100000 is above the limit",
    ),
    Case(
        "1-config-dataset-type",
        ckpt(config={"dataset": 5}),
        ["evaluate", "c.pt"],
        "unusable training config (dataset must be text",
    ),
    Case(
        "1-config-dataset-root",  # shown, then refused before the disk is walked
        ckpt(config={"dataset": "imagefolder:/"}),
        ["evaluate", "c.pt"],
        "image folder / is the root of the file system: pass the folder of class subfolders",
    ),
    Case(
        "1-config-not-dict",
        ckpt(config="fast"),
        ["evaluate", "c.pt"],
        "unusable training config (a configuration must be a mapping",
    ),
    Case(
        "1-safetensors-image-size",
        exported(preprocess={"image_size": 100000}),
        ["predict", "e.safetensors", "d.png"],
        "image size 100000 is above the limit",
    ),
    Case(
        "1-safetensors-native-size",
        exported(preprocess={"native_size": 100000}),
        ["predict", "e.safetensors", "d.png"],
        "native_size must be an integer",
    ),
    Case(
        "1-safetensors-classes",
        exported(model_args={"num_classes": 10**12}),
        ["predict", "e.safetensors", "d.png"],
        "num_classes must be an integer from 1 to 100000",
    ),
    Case(
        "1-safetensors-not-json",
        exported(raw={"preprocess": "{image_size: 1e9"}),
        ["predict", "e.safetensors", "d.png"],
        "has malformed googlenet metadata",
    ),
    Case(
        "1-classes-vs-data",  # a consistent 5-class checkpoint (a forged one: 1-class-count-vs-weights)
        other_model(num_classes=5),
        ["evaluate", "c.pt"],
        "mnist has a class '5' that the checkpoint does not know (its classes: 0, 1, 2, 3, 4)",
    ),
    Case(
        "1-channels-vs-weights",
        ckpt(model_args={"in_channels": 3}),
        ["evaluate", "c.pt"],
        ("does not match the model", "conv1", "(another class count or channel count?)"),
    ),
    Case(
        "1-random-bytes",
        damaged("random.pt", "random"),
        ["evaluate", "random.pt"],
        "random.pt is corrupted or not a PyTorch checkpoint",
    ),
    Case(
        "1-torchvision-state-dict",
        torchvision_weights,
        ["evaluate", "tv.pt"],
        ("tv.pt is not a googlenet checkpoint", "pass weights/best.pt or weights/last.pt"),
    ),
    # 2. non-finite weights are refused, not exported with "Max |difference| 0" or predicted as nan
    Case(
        "2-nan-export",
        ckpt(model=nan_weights),
        ["export", "c.pt"],
        "holds non-finite weights (NaN or infinity in fc.weight)",
    ),
    Case("2-nan-predict", ckpt(model=nan_weights), ["predict", "c.pt", "d.png"], "holds non-finite weights"),
    Case("2-nan-evaluate", ckpt(model=nan_weights), ["evaluate", "c.pt"], "holds non-finite weights"),
    # 3. a forged last.pt: every field checked before anything is written (the stale temporary file stays too)
    Case(
        "3-epoch-state-key",
        forged_run(edit=lambda s: s.update(MID_EPOCH, epoch_state={**MID_EPOCH["epoch_state"], "extra": 1})),
        ["train", "--resume", "R"],
        "epoch_state must hold exactly step, loss_sum, correct, seen",
    ),
    Case(
        "3-results-not-list",
        forged_run(results="epoch 1"),
        ["train", "--resume", "R"],
        "results must be a list of one row per finished epoch",
    ),
    Case(
        "3-results-field",
        forged_run(edit=lambda s: s["results"][0].update(colour=1)),
        ["train", "--resume", "R"],
        "results row 1 is not a row of results.csv",
    ),
    Case(
        "3-results-value",
        forged_run(edit=lambda s: s["results"][0].update(val_acc="high")),
        ["train", "--resume", "R"],
        "results row 1 has val_acc = 'high', not a number",
    ),
    Case(
        "3-rng-size",
        forged_run(edit=rng_of_size(7)),
        ["train", "--resume", "R"],
        "rng torch is not a CPU generator state",
    ),
    Case(
        "3-epoch-beyond", forged_run(epoch=9), ["train", "--resume", "R"], "epoch 9 does not fit its config's 1 epochs"
    ),
    Case(
        "3-best-epoch",
        forged_run(best_epoch=7),
        ["train", "--resume", "R"],
        "best_epoch 7 is not one of its 1 finished epochs",
    ),
    Case(
        "3-best-acc", forged_run(best_acc=float("nan")), ["train", "--resume", "R"], "best_acc nan is not an accuracy"
    ),
    Case(
        "3-config-type",
        forged_run(edit=lambda s: s["config"].update(epochs="two")),
        ["train", "--resume", "R"],
        "epochs must be an integer, got 'two'",
    ),
    Case(
        "3-epochs-vs-schedule",
        forged_run(edit=lambda s: s["config"].update(epochs=3)),
        ["train", "--resume", "R"],
        "its schedule (3 steps, at step 3) does not match its config (3 epochs of 3 steps)",
    ),
    Case(
        "3-schedule-step",
        forged_run(edit=lambda s: s["scheduler"].update(last_epoch=2)),
        ["train", "--resume", "R"],
        "does not match its config",
    ),
    Case(
        "3-scheduler-type",
        forged_run(scheduler=[1]),
        ["train", "--resume", "R"],
        "its optimizer and scheduler states are not mappings",
    ),
    Case(
        "3-optimizer",
        forged_run(optimizer={"state": {}, "param_groups": 5}),
        ["train", "--resume", "R"],
        "optimiser, schedule or averaged weights do not match this run",
    ),
    Case(
        "3-nan-weights",
        forged_run(edit=lambda s: s["model"].update({"fc.bias": torch.full_like(s["model"]["fc.bias"], torch.inf)})),
        ["train", "--resume", "R"],
        "holds non-finite weights (NaN or infinity in fc.bias)",
    ),
    Case(
        "3-truncated-last-pt",
        damaged("runs/t/weights/last.pt", "truncated-pt"),
        ["train", "--resume", "runs/t"],
        "truncated or corrupted",
    ),
    # 4. flags: every range checked in one place (config.TrainConfig.validate), every choice by argparse, before a run
    # directory exists
    Case("4-epochs-zero", nothing, ["train", "--epochs", "0"], "epochs must be positive, got 0"),
    Case("4-epochs-text", nothing, ["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    Case("4-batch-negative", nothing, ["train", "--batch-size", "-4"], "batch_size must be positive"),
    Case(
        # over the memory bound (config.MAX_BATCH_SIZE) it is refused before any data is read; a batch larger than a
        # small split is clipped to it (test_evaluate_data.test_a_folder_run_is_evaluated_on_its_own_splits...)
        "4-batch-huge",
        nothing,
        ["train", "--batch-size", "100000"],
        "batch_size must be at most 4096, got 100000",
    ),
    Case("4-dropout", nothing, ["train", "--dropout", "1.0"], "dropout must be in [0, 1)"),
    Case("4-val-fraction", nothing, ["train", "--val-fraction", "1.5"], "val_fraction must be between 0 and 1"),
    Case("4-device", nothing, ["train", "--device", "tpu"], "unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps"),
    Case(
        "4-image-size-small",
        nothing,
        ["train", "--image-size", "16"],
        "image size 16 is below the network's minimum of 31: use --image-size 31 or more",
    ),
    Case(
        "4-summary-image-size-small",
        nothing,
        ["summary", "--image-size", "16"],
        "image size 16 is below the network's minimum of 31: use --image-size 31 or more",
    ),
    Case(
        "4-optimizer-choice",
        nothing,
        ["train", "--optimizer", "lbfgs"],
        "argument --optimizer: invalid choice: 'lbfgs'",
    ),
    Case("4-schedule-choice", nothing, ["train", "--schedule", "linear"], "argument --schedule: invalid choice"),
    Case("4-preset-choice", nothing, ["train", "--preset", "huge"], "argument --preset: invalid choice"),
    Case("4-average-choice", nothing, ["train", "--average", "swa"], "argument --average: invalid choice"),
    Case(
        "4-evaluate-split-choice",
        nothing,
        ["evaluate", "x.pt", "--split", "holdout"],
        "argument --split: invalid choice",
    ),
    Case("4-seed-negative", nothing, ["train", "--seed", "-1"], "seed must not be negative, got -1"),
    Case("4-seed-huge", nothing, ["train", "--seed", str(2**70)], "seed must be at most 4294967295"),
    Case(
        "4-label-smoothing", nothing, ["train", "--label-smoothing", "5"], "label_smoothing must be in [0, 1), got 5.0"
    ),
    Case("4-crop-padding", nothing, ["train", "--crop-padding", "-5"], "crop_padding must not be negative, got -5"),
    Case("4-in-channels", nothing, ["train", "--in-channels", "-3"], "in_channels must be positive (or unset), got -3"),
    Case(
        "4-image-size",
        nothing,
        ["train", "--image-size", "100000"],
        "image size 100000 is above the limit of 1024 (memory): use --image-size 1024 or less",
    ),
    Case("4-eval-batch", nothing, ["train", "--eval-batch-size", "100000000"], "eval_batch_size must be at most 4096"),
    Case("4-time-huge", nothing, ["train", "--time-limit", "1e300"], "time_limit must be at most 1000000"),
    Case("4-elastic-sigma", nothing, ["train", "--elastic-sigma", "1e300"], "elastic_sigma must be at most 1000"),
    Case("4-scale", nothing, ["train", "--scale", "1.5"], "scale must be in [0, 1), got 1.5"),
    Case("4-momentum", nothing, ["train", "--momentum", "-0.5"], "momentum must be in [0, 1), got -0.5"),
    Case(
        "4-nesterov",
        nothing,
        ["train", "--optimizer", "sgd", "--nesterov", "--momentum", "0"],
        "nesterov needs a momentum",
    ),
    Case(
        "4-summary-image-size",
        nothing,
        ["summary", "--image-size", "100000"],
        "image size 100000 is above the limit of 1024",
    ),
    Case(
        "4-summary-classes",
        nothing,
        ["summary", "--num-classes", str(10**12)],
        "--num-classes must be an integer from 1 to 100000",
    ),
    Case(
        "4-summary-channels",
        nothing,
        ["summary", "--in-channels", "1000"],
        "--in-channels must be an integer from 1 to 64",
    ),
    Case(
        "4-benchmark-batch",
        nothing,
        ["benchmark", "--batch-size", "1000000"],
        "--batch-size must be an integer from 1 to 4096",
    ),
    # 5. --config files: types per setting, only bounded regular files are read
    Case("5-missing", nothing, ["train", "--config", "nope.yaml"], "cannot read config file nope.yaml"),
    Case(
        "5-unknown-setting",
        config_file("epochs: 2\nlearning_rate: 0.1\n"),
        ["train", "--config", "c.yaml"],
        "unknown setting(s) learning_rate",
    ),
    Case("5-unclosed-list", config_file("epochs: [2\n"), ["train", "--config", "c.yaml"], "is not valid YAML"),
    Case("5-list", config_file("- 1\n- 2\n"), ["train", "--config", "c.yaml"], "must hold a mapping"),
    Case("5-int-key", config_file("1: 2\n"), ["train", "--config", "c.yaml"], "c.yaml: 1 is not a setting name"),
    Case(
        "5-name-list",
        config_file("name: [a, b]\n"),
        ["train", "--config", "c.yaml"],
        "name must be text (quote it in YAML), got ['a', 'b']",
    ),
    Case("5-project-int", config_file("project: 5\n"), ["train", "--config", "c.yaml"], "project must be text"),
    Case("5-dataset-int", config_file("dataset: 5\n"), ["train", "--config", "c.yaml"], "dataset must be text"),
    Case(
        "5-bool-text",
        config_file("augment: maybe\n"),
        ["train", "--config", "c.yaml"],
        "augment must be true or false, got 'maybe'",
    ),
    Case(
        "5-non-utf8",
        config_file(b"epochs: 2\nname: caf\xe9\n"),
        ["train", "--config", "c.yaml"],
        "c.yaml is not UTF-8 text (byte 20): save it as UTF-8",
    ),
    Case(
        "5-dev-zero",
        link("c.yaml", "/dev/zero"),
        ["train", "--config", "c.yaml"],
        "config file c.yaml is not a regular file",
    ),
    Case(
        "5-fifo",  # nobody ever writes to it: reading it would block forever (the deadline fails the case instead)
        fifo("c.yaml"),
        ["train", "--config", "c.yaml"],
        "config file c.yaml is not a regular file",
    ),
    Case(
        "5-directory", directory("c.yaml"), ["train", "--config", "c.yaml"], "config file c.yaml is not a regular file"
    ),
    Case(
        "5-too-big",
        config_file("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)),
        ["train", "--config", "c.yaml"],
        "is 1,048,580 bytes, more than the 1,048,576 bytes a config file can be: pass a YAML file of settings",
    ),
    Case("5-bad-date", config_file("seed: 2024-13-45\n"), ["train", "--config", "c.yaml"], "c.yaml is not valid YAML"),
    Case(
        "5-deep-nesting",
        config_file("epochs: " + "[" * 20000 + "]" * 20000 + "\n"),
        ["train", "--config", "c.yaml"],
        "c.yaml is not valid YAML",
    ),
    Case(
        "5-billion-laughs",
        config_file(
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, "
            "*b, *b, *b, *b]\nname: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        ),
        ["train", "--config", "c.yaml"],
        "unknown setting(s) a, b, c",
    ),
    Case(
        "5-alias-bomb",
        config_file(laughs(6) + "name: *l5\n"),
        ["train", "--config", "c.yaml"],
        "config file c.yaml uses YAML aliases that expand to more than 10,000 values",
    ),
    Case(
        "19.7-epochs-text",
        config_file('epochs: "two"\n'),
        ["train", "--config", "c.yaml"],
        "epochs must be an integer, got 'two'",
    ),
    Case(
        "19.7-preset-unknown",
        config_file("preset: huge\n"),
        ["train", "--config", "c.yaml"],
        "preset 'huge' in the config file is not one of fast, original, paper",
    ),
    # 7. a run name is one folder name: nothing is written outside --project
    Case("7-name-up", nothing, ["train", "--name", "../../etc/x"], "run name '../../etc/x' is not one folder name"),
    Case("7-name-absolute", nothing, ["train", "--name", "/abs/path"], "run name '/abs/path' is not one folder name"),
    Case("7-project-and-up", nothing, ["train", "--project", "P", "--name", "../../../x"], "is not one folder name"),
    Case("7-name-dotdot", nothing, ["train", "--name", ".."], "run name '..' is not one folder name"),
    Case("7-name-empty", nothing, ["train", "--name", ""], "run name '' is not one folder name"),
    Case(
        "7-name-too-long",  # mkdir failed after making --project: an empty folder was left behind
        nothing,
        ["train", "--name", "n" * 300],
        "run name 'nnnnnnnnnnnnnnnnn...nnnnnnnnnnnnnnnnnn' is 300 bytes long, more than the 255 a folder name can be: "
        "choose a shorter --name",
    ),
    Case("7-name-too-long-utf8", nothing, ["train", "--name", "\u00e9" * 128], "is 256 bytes long, more than the 255"),
    Case(
        "7-project-too-long",
        nothing,
        ["train", "--project", "runs/" + "p" * 256],
        "has a folder name of 256 bytes, more than the 255 a folder name can be: choose a shorter --project",
    ),
    Case(
        "7-project-file",
        a_file("P"),
        ["train", "--project", "P", "--batch-size", "16"],
        "--project P is a file, not a folder",
    ),
    Case(
        "7-run-dir-exists",  # (--exist-ok reuses it, a default name counts up: test_claim_run_dir_reuses_or_counts_up)
        directory("P/taken"),
        ["train", "--project", "P", "--name", "taken", "--batch-size", "16"],
        ("run directory P/taken already exists", "--exist-ok"),
    ),
    # 8-11. datasets
    Case(
        "8-torchvision-missing",
        directory("empty"),
        ["train", "--dataset", "cifar10", "--data-dir", "empty"],
        ("cifar10 is not in empty", "--download"),
    ),
    Case(
        "8-dataset-unknown",
        nothing,
        ["train", "--dataset", "imagenet"],
        ("unknown dataset 'imagenet'", "mnist", "imagefolder:PATH"),
    ),
    Case(
        "8-image-folder-missing",
        nothing,
        ["train", "--dataset", "imagefolder:nope"],
        ("image folder nope does not exist", "one subfolder per class"),
    ),
    Case(
        "8-mnist-missing",
        mnist_file("t10k-labels-idx1-ubyte", None),
        ["train", "--data-dir", "mnist"],
        ("t10k-labels-idx1-ubyte(.gz) is missing from mnist", "restore the file"),
    ),
    Case(
        "8-mnist-truncated-gz",
        mnist_file("train-labels-idx1-ubyte", first_half),
        ["train", "--data-dir", "mnist"],
        ("train-labels-idx1-ubyte", "cannot be decompressed", "restore the file"),
    ),
    Case(
        "8-mnist-random-gz",
        mnist_file("train-labels-idx1-ubyte", random.Random(0).randbytes(5000)),
        ["train", "--data-dir", "mnist"],
        ("train-labels-idx1-ubyte", "cannot be decompressed", "restore the file"),
    ),
    Case(
        "8-mnist-flipped-byte",
        mnist_file("train-labels-idx1-ubyte", byte_flipped),
        ["train", "--data-dir", "mnist"],
        ("train-labels-idx1-ubyte", "fails its MD5 check", "restore the file"),
    ),
    Case(
        "8-mnist-test-images-truncated-gz",  # a gzip stream cut short (from a checkpoint's bytes: they do not compress)
        both(mnist_file("t10k-images-idx3-ubyte", None), damaged("mnist/t10k-images-idx3-ubyte.gz", "truncated-gz")),
        ["train", "--data-dir", "mnist"],
        "cannot be decompressed",
    ),
    *[  # each damaged or foreign file in place of MNIST's training images, compressed (.gz) and plain
        Case(
            f"8-mnist-images-{kind}-{'gz' if gz else 'plain'}",
            mnist_file("train-images-idx3-ubyte", data, gz=gz),
            ["train", "--data-dir", "mnist"],
            ("train-images-idx3-ubyte", "restore the file"),
        )
        for kind, data in HOSTILE.items()
        for gz in (True, False)
    ],
    Case(
        "8-fashion-magic",
        fashion_mnist(b"\x12\x34"),
        ["train", "--dataset", "fashion-mnist", "--data-dir", "data"],
        "fashion-mnist in data has a corrupted or foreign file",
    ),
    Case(
        "8-fashion-type",
        fashion_mnist(b"\0\0\x99"),
        ["train", "--dataset", "fashion-mnist", "--data-dir", "data"],
        "has a corrupted or foreign file",
    ),
    Case(
        "9-bomb",
        image_folder(bomb),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        "imgs/a/bomb.png has too many pixels to decode safely",
    ),
    Case(
        "9-unreadable-image",
        image_folder(broken_png),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        ("cannot read image", "broken.png"),
    ),
    Case(
        "10-non-utf8-class",
        image_folder(non_utf8_class),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        "class folder b'caf\\xe9' in imgs: its name is not valid UTF-8: rename it",
    ),
    Case(
        "10-newline-class",
        image_folder(newline_class),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        "has a control character",
    ),
    Case(
        "10-one-class",
        image_folder(one_class),
        ["train", "--dataset", "imagefolder:imgs"],
        "needs at least two class subfolders",
    ),
    Case(
        "11-class-link",
        image_folder(class_link_outside),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        "class folder imgs/c is a link to",
    ),
    Case(
        "11-split-link",
        image_folder(split_link_to_root),
        ["train", "--dataset", "imagefolder:imgs", "--batch-size", "2"],
        "split folder imgs/train is a link to /, outside the image folder imgs",
    ),
    # 20. a run's files are read through one bounded reader (rundir.read_run_file): never a FIFO, a device or a
    # huge file, never a YAML alias; whatever they hold, the report is a one-line error, not a traceback
    Case(
        "20-config-fifo", finished_run("config.yaml", os.mkfifo), ["report", "R"], "R/config.yaml is not a regular file"
    ),
    Case("20-env-fifo", finished_run("env.json", os.mkfifo), ["report", "R"], "R/env.json is not a regular file"),
    Case(
        "20-metrics-fifo",
        finished_run("metrics.json", os.mkfifo),
        ["report", "R"],
        "R/metrics.json is not a regular file (a directory, FIFO or device?): is it the right run directory?",
    ),
    Case("20-results-fifo", finished_run("results.csv", os.mkfifo), ["report", "R"], "R/results.csv is not a regular"),
    Case(
        "20-summary-fifo", finished_run("summary.md", os.mkfifo), ["report", "R"], "R/summary.md is not a regular file"
    ),
    Case(
        "20-metrics-dev-zero",
        finished_run("metrics.json", to_dev_zero),
        ["report", "R"],
        "R/metrics.json is not a regular file",
    ),
    Case(
        "20-metrics-gigabyte",
        finished_run("metrics.json", sparse_gigabyte),
        ["report", "R"],
        "R/metrics.json is 1,073,741,824 bytes, more than the 134,217,728 bytes a run's metrics.json can be",
    ),
    Case(
        "20-config-too-big",
        finished_run("config.yaml", edit=lambda text: text + "# padding\n" * 7000),
        ["report", "R"],
        "bytes, more than the 65,536 bytes a run's config.yaml can be: is it the right run directory?",
    ),
    Case(
        "20-config-alias-bomb",  # report wrote a 1 GB REPORT.md from these few hundred bytes
        finished_run("config.yaml", edit=lambda text: laughs(9) + text.replace("dataset: mnist", "dataset: *l8")),
        ["report", "R"],
        "R/config.yaml uses YAML aliases (*name), which googlenet never writes",
    ),
    Case(
        "20-metrics-deep",
        finished_run("metrics.json", edit=lambda text: "[" * 100_000 + "]" * 100_000),
        ["report", "R"],
        "R/metrics.json is not valid JSON",
    ),
    Case(
        "20-results-long-field",
        finished_run("results.csv", edit=lambda text: text + "1" * 200_000 + "\n"),
        ["report", "R"],
        "R/results.csv is not valid CSV of numbers (field larger than field limit",
    ),
    Case(
        "20-results-columns",
        finished_run("results.csv", edit=lambda text: "a,b\n1,2\n"),
        ["report", "R"],
        "R has unreadable run files (results.csv has no epoch column)",
    ),
    Case(
        "20-config-lr-text",
        finished_run("config.yaml", edit=lambda text: text.replace("\nlr: ", "\nlr: fast\nold_lr: ")),
        ["report", "R"],
        "config.yaml's lr is 'fast', not a number",
    ),
    Case(
        "20-metrics-confusion",
        finished_run("metrics.json", edit=metrics_edit(lambda m: m["splits"]["test"].update(confusion_matrix=[[1]]))),
        ["report", "R"],
        "its test confusion_matrix is not 10 x 10",
    ),
    Case(
        "20-metrics-class-name",
        finished_run("metrics.json", edit=metrics_edit(lambda m: m["classes"].__setitem__(0, {"$": 1}))),
        ["report", "R"],
        "its classes are not a list of names",
    ),
    # 21. a run folder googlenet writes into that links out of the run: refused before anything is removed or written
    Case(
        "21-resume-weights-link",
        weights_linked_out,
        ["train", "--resume", "R"],
        "run folder R/weights is a link to ",
    ),
    Case(
        "21-resume-weights-link-last-pt",
        weights_linked_out,
        ["train", "--resume", "R/weights/last.pt"],
        "outside the run directory R: links out of a run are not followed, replace the link with a folder",
    ),
    # 15. evaluate/export --output checked before the work
    Case(
        "15-evaluate-output-dir",
        both(ckpt(), directory("out")),
        ["evaluate", "c.pt", "--output", "out"],
        "--output out is a directory: pass a file name inside it",
    ),
    Case(
        "15-evaluate-output-under-file",
        both(ckpt(), a_file("f")),
        ["evaluate", "c.pt", "--output", "f/m.json"],
        "cannot write --output f/m.json: f is a file, not a folder",
    ),
    Case(
        "15-export-output-under-file",
        both(ckpt(), a_file("f")),
        ["export", "c.pt", "--output", "f/x.safetensors"],
        "f is a file, not a folder",
    ),
]


class Hung(Exception):
    """A call that blocked past its deadline (an open or read of a FIFO that nobody writes to)."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocked call with Hung (not an OSError, which cli.main reports)."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, capsys, cwd: Path, request):
    case.setup(cwd, request)
    with deadline(120):  # a FIFO case that blocks fails here
        line = one_line_error(capsys, case.argv, cwd)
    expected = (case.expected,) if isinstance(case.expected, str) else case.expected
    assert all(text in line for text in expected), line


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------ what one row cannot say

TARGETS = ["evaluate", "export", "predict", "resume-dir", "resume-file"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_checkpoint(capsys, cwd: Path, good_checkpoint: bytes, kind: str, target: str):
    """Each damaged or foreign file as a run's last.pt and best.pt, for each command that reads a checkpoint: the line
    names the file and calls it corrupted, truncated or foreign."""
    data = hostile_files(good_checkpoint)[kind]
    run = cwd / "runs" / "x"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(data)
    shutil.copyfile(run / "weights" / "last.pt", run / "weights" / "best.pt")
    argv = {
        "evaluate": ["evaluate", "runs/x/weights/best.pt"],
        "export": ["export", "runs/x/weights/best.pt", "--format", "safetensors"],
        "predict": ["predict", "runs/x/weights/best.pt", "d.png"],
        "resume-dir": ["train", "--resume", "runs/x"],
        "resume-file": ["train", "--resume", "runs/x/weights/last.pt"],
    }[target]
    line = one_line_error(capsys, argv, cwd)
    assert "runs/x/weights/" in line
    assert any(
        word in line for word in ("corrupted", "truncated", "not a googlenet checkpoint", "not a PyTorch checkpoint")
    )


def test_claim_run_dir_reuses_or_counts_up(cwd: Path):
    """A taken run directory is refused (7-run-dir-exists), reused with --exist-ok; the default name counts up instead
    of failing."""
    (cwd / "P" / "taken").mkdir(parents=True)
    assert claim_run_dir(TrainConfig(project="P", name="taken", exist_ok=True)) == Path("P/taken")
    with pytest.raises(ConfigError):
        claim_run_dir(TrainConfig(project="P", name="taken"))
    (cwd / "P" / "exp").mkdir()
    assert claim_run_dir(TrainConfig(project="P")) == Path("P/exp2") and (cwd / "P" / "exp2").is_dir()


# ------------------------------------------------------------------ what needs a real process


def test_pickled_payload_is_refused_by_evaluate(cwd: Path):
    """Through `python -m googlenet` itself (run_cli): exit 2, one stderr line, no traceback, nothing written, and the
    payload never ran. The one real process of the table's contract; the damaged files' rows (1-random-bytes,
    3-truncated-last-pt, 8-mnist-test-images-truncated-gz, ...) check the same line in-process."""
    marker = cwd / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    torch.save({**checkpoint_state(), "extra": Payload()}, cwd / "evil.pt")
    line = run_cli(cwd, "evaluate", "evil.pt")
    assert line.startswith("googlenet evaluate: error: checkpoint evil.pt was refused: it would import posix.system")
    assert not marker.exists()


def test_the_walk_of_an_image_folder_is_bounded(tmp_path: Path, monkeypatch):
    """A folder with more entries than any dataset (imagefolder:/home, say) is refused after a bounded look."""
    image_folder(lambda imgs: [(imgs / "b" / f"more{i}").mkdir() for i in range(5)])(tmp_path, None)
    from googlenet.data import folders

    assert len(folders._image_files(tmp_path / "imgs")["b"]) == 3
    monkeypatch.setattr(folders, "MAX_FOLDER_ENTRIES", 10)  # 6 images and 5 folders
    with pytest.raises(folders.DataError, match="holds more than 10 files and folders in its class folders: is it"):
        folders._image_files(tmp_path / "imgs")


def test_fifo_in_an_image_folder_is_skipped(tmp_path: Path):
    image_folder(lambda imgs: os.mkfifo(imgs / "a" / "x.png"))(tmp_path, None)
    from googlenet.data.folders import _image_files

    assert sorted(p.name for p in _image_files(tmp_path / "imgs")["a"]) == ["0.png", "1.png", "2.png"]


# (the run's files, whether its metrics.json is still read)
UNREAD_RUN_FILES = {
    "metrics-fifo": (finished_run("metrics.json", os.mkfifo), False),
    "metrics-dev-zero": (finished_run("metrics.json", to_dev_zero), False),
    "metrics-gigabyte": (finished_run("metrics.json", sparse_gigabyte), False),
    "config-fifo": (finished_run("config.yaml", os.mkfifo), False),  # not a run directory's config.yaml
    "env-fifo": (finished_run("env.json", os.mkfifo), True),  # not read
}


@pytest.mark.parametrize(("setup", "read"), UNREAD_RUN_FILES.values(), ids=UNREAD_RUN_FILES)
def test_predict_leaves_out_a_run_file_it_cannot_read(setup: Setup, read: bool, cwd: Path, capsys, request):
    """predict, evaluate and googlenet.load_model read a run's metrics.json only to describe the model: a FIFO, a link
    to /dev/zero or a huge file there (or a FIFO for config.yaml or env.json) is left out at once, not waited on."""
    import googlenet

    setup(cwd, request)
    capsys.readouterr()
    with deadline(60):
        assert main(["predict", "R", "d.png", "--topk", "1"]) == 0
        _, meta = googlenet.load_model("R")
    captured = capsys.readouterr()
    assert captured.out.startswith("d.png  ") and captured.err == ""
    assert (meta["metrics"] is not None) == read and meta["classes"] == [str(i) for i in range(10)]


MATH_CLASSES = ["$\\nosuch$", "$x^{$"]  # mathtext that does not parse: matplotlib raised ValueError


def test_class_names_that_look_like_mathtext_are_drawn_as_they_are(cwd: Path, capsys):
    """Class folders named `$x^{$` and `$\\nosuch$`: the figures (tick labels, the errors grid) raised after training,
    so no metrics.json was written and every --resume failed the same way. Now the run finishes, and so does report."""
    for name in MATH_CLASSES:
        for i in range(4):
            write_png(cwd / "imgs" / name / f"{i}.png", 60 * i)
    argv = ["train", "--dataset", "imagefolder:imgs", "--epochs", "1", "--limit-train-batches", "1", "--image-size"]
    argv += ["32", "--batch-size", "4", "--eval-batch-size", "8", "--amp", "off", "--device", "cpu", "--project", "P"]
    argv += ["--name", "m"]
    assert main(argv) == 0, capsys.readouterr().err
    run = cwd / "P" / "m"
    assert json.loads((run / "metrics.json").read_text())["classes"] == MATH_CLASSES
    figures = ["loss.png", "accuracy.png", "confusion_train.png", "confusion_val.png", "confusion_test.png"]
    assert all((run / name).stat().st_size > 0 for name in figures)
    (run / "REPORT.md").unlink()
    assert main(["report", str(run)]) == 0
    text = (run / "REPORT.md").read_text()
    assert all(f" {name} " in text for name in MATH_CLASSES)  # its per-class table


def test_tiny_onecycle_run_and_sigterm_during_the_final_evaluation(cwd: Path, capsys, monkeypatch):
    """Items 6, 12, 14 (and 19.5): 4 steps of one-cycle train; SIGTERM in the final evaluation leaves a resumable run;
    `report` says how to finish it; --resume removes a killed save's temporary file and only evaluates. The handler
    is googlenet's own (interrupts.StopFinalEvaluation), so a real SIGTERM to this process, from where the final
    evaluation starts, takes the path a cluster's preemption would (exit status 130 is the SystemExit main raises)."""
    import googlenet.train as train

    final = train.write_final_outputs

    def terminated(*args, **kwargs):  # SIGTERM (a cluster's preemption) as the final evaluation starts
        handler = signal.getsignal(signal.SIGTERM)
        assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), "no SIGTERM handler: it would end pytest"
        os.kill(os.getpid(), signal.SIGTERM)
        return final(*args, **kwargs)

    argv = ["train", "--epochs", "1", "--limit-train-batches", "4", "--limit-eval-batches", "1", "--batch-size", "16",
            "--eval-batch-size", "50", "--device", "cpu", "--project", "P", "--name", "t"]  # fmt: skip
    with monkeypatch.context() as mp:
        mp.setattr(sys, "argv", ["googlenet", *argv])  # env.json records the command as typed
        mp.setattr(train, "write_final_outputs", terminated)
        with pytest.raises(SystemExit) as stopped:
            main(argv)
    captured = capsys.readouterr()
    assert stopped.value.code == 130, captured.err
    assert "Traceback" not in captured.err and "ZeroDivisionError" not in captured.err
    assert "Interrupted during the final evaluation; training is finished and saved in weights/. " in captured.out
    assert captured.out.rstrip().endswith("Finish the run (metrics.json, REPORT.md) with: googlenet train --resume P/t")
    run = cwd / "P" / "t"
    assert (run / "weights" / "last.pt").is_file() and not (run / "metrics.json").exists()
    assert not [p for p in run.rglob(".*") if ".tmp" in p.name]  # the interrupted writes left nothing behind

    line = one_line_error(capsys, ["report", "P/t"], cwd)
    assert line.endswith(
        "P/t is unfinished (no metrics.json: training or its final evaluation was interrupted): finish it with "
        "googlenet train --resume P/t"
    )

    stale = run / "weights" / ".last.pt.k3y_0abc.tmp.pt"  # as a SIGKILL during a checkpoint save leaves it
    stale.write_bytes(b"\0" * 1000)
    assert main(["train", "--resume", "P/t"]) == 0
    out = capsys.readouterr().out
    assert (
        "Resuming P/t: its training ended after epoch 1 of 1; running the final evaluation and writing the report"
        in out
    )
    assert "Removed 1 temporary file(s) an interrupted save left: .last.pt.k3y_0abc.tmp.pt" in out
    assert "at epoch 2" not in out and not stale.exists()
    assert (run / "metrics.json").is_file() and (run / "REPORT.md").is_file()
    assert len((run / "results.csv").read_text().splitlines()) == 2  # no epoch was added


# ------------------------------------------------------------------ disks that fill up (13)


@pytest.fixture
def file_size_limit():
    """`ulimit -f 1024` (1 MiB) for this process, as a full disk: writes beyond it fail with EFBIG (Python ignores
    SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_on_export(capsys, cwd: Path):
    ckpt()(cwd, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = snapshot(cwd)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        code = main(["export", "c.pt", "--format", "safetensors"])  # safetensors' own "File too large" error
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert (
        code == 2
        and err.strip()
        == "googlenet export: error: file too large at c.safetensors: free space (or raise the file size limit) "
        "and run the command again"
    )
    assert snapshot(cwd) == before


def test_full_disk_on_a_checkpoint_save(tmp_path: Path, file_size_limit):
    last = tmp_path / "weights" / "last.pt"
    with pytest.raises(
        files.DiskFullError, match=r"file too large at .*last.pt: free space"
    ):  # torch.save's "unexpected pos"
        save_checkpoint(last, base_state())
    assert list((tmp_path / "weights").iterdir()) == []


def test_full_disk_during_training_says_how_to_resume(tmp_path: Path):
    from googlenet.train import _disk_full

    exc = files.DiskFullError(tmp_path / "weights" / "last.pt", "no space left on the device")
    assert str(_disk_full(exc, tmp_path)).endswith("and start the run again")  # no last.pt yet
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.pt").write_bytes(b"x")
    assert str(_disk_full(exc, tmp_path)).endswith(
        f"free space (or raise the file size limit) and resume with googlenet train --resume {tmp_path}"
    )


# ------------------------------------------------------------------ the rest of the items


def test_huge_image_gets_one_line_of_ours_not_pils_warning(capsys, cwd: Path):
    """9: a 10000 x 10000 PNG (100 Mpx, over PIL's warning limit) is predicted, with one note of ours on stderr."""
    from PIL import Image

    ckpt()(cwd, None)
    Image.new("1", (10000, 10000)).save(cwd / "big.png")  # 12 kB on disk, 100 Mpx decoded
    assert main(["predict", "c.pt", "big.png", "--topk", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("big.png")
    assert (
        captured.err.strip() == "note: image big.png is 10000x10000 pixels (100 Mpx): decoding it takes time and memory"
    )
    # over PIL's error limit (900 Mpx claimed): predict's warning for the file it skips, then its error line
    (cwd / "bomb.png").write_bytes(png_header(30000, 30000))
    assert main(["predict", "c.pt", "bomb.png"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Warning" not in err and "bomb.png has too many pixels to decode safely" in err


def test_pipe_in_a_class_name_keeps_markdown_tables(tmp_path: Path):
    """10: a class named 'cat|dog' stays one cell of REPORT.md's tables."""
    table = format_table(["Class", "F1"], [["cat|dog", "0.5"], ["b", "1"]])
    assert all(line.count(" | ") == 1 for line in table.splitlines()) and "cat\\|dog" in table


@pytest.mark.parametrize("steps", range(1, 13))
@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_onecycle_works_for_any_step_count(epochs: int, steps: int):
    """6: OneCycleLR divided by zero for a ramp of exactly one step (--epochs 1 --limit-train-batches 4)."""
    from googlenet.train import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    cfg = resolve_config(epochs=epochs)
    optimizer = torch.optim.Adam([param], lr=cfg.lr)
    scheduler = build_scheduler(cfg, optimizer, steps)
    for _ in range(epochs * steps):
        optimizer.step()
        scheduler.step()
        assert 0 < optimizer.param_groups[0]["lr"] <= cfg.lr


def test_preset_in_the_config_file_is_honoured(tmp_path: Path, monkeypatch):
    """19.7: `preset: original` in the file starts from the seed README's recipe (a preset named on the command
    line wins)."""
    import googlenet.train

    seen = []
    monkeypatch.setattr(googlenet.train, "fit", lambda cfg, resume=None: seen.append(cfg))
    (tmp_path / "c.yaml").write_text("preset: original\nepochs: 2\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 0
    assert (seen[0].preset, seen[0].image_size, seen[0].epochs, seen[0].lr) == ("original", 224, 2, 1e-4)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--preset", "paper"]) == 0
    assert (seen[1].preset, seen[1].optimizer, seen[1].epochs) == ("paper", "sgd", 2)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--preset", "fast"]) == 0  # an explicit fast wins too
    assert (seen[2].preset, seen[2].image_size) == ("fast", 32)


# ------------------------------------------------------------------ IDX parsing (below the MD5 check)


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


# ------------------------------------------------------------------ the parsers, fuzzed (hypothesis)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=64), st.tuples(st.lists(st.integers(0, 40), min_size=0, max_size=5), st.binary(max_size=64))
    )
)
def test_read_idx_fuzzed(data):
    """Any bytes: an array exactly as big as the file says and holds, or a DataError; never a huge allocation."""
    if isinstance(data, tuple):  # a plausible header with random dimensions and payload
        dims, payload = data
        data = idx_header(dims) + payload
    try:
        arr = read_idx(data, "f")
    except DataError as exc:
        assert "\n" not in str(exc)
    else:
        assert arr.dtype == np.uint8 and arr.size == len(data) - 4 - 4 * arr.ndim


SETTING_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
SETTING_NAMES = st.sampled_from(
    [f.name for f in __import__("dataclasses").fields(TrainConfig)] + ["bogus", "learning_rate"]
)


@FUZZ
@given(st.dictionaries(SETTING_NAMES, SETTING_VALUES, max_size=6))
def test_config_from_dict_fuzzed(values):
    """Any mapping of settings: a valid TrainConfig (which round-trips through YAML) or one ConfigError line."""
    try:
        cfg = resolve_config("fast", values)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))).validate() == cfg


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_load_yaml_fuzzed(tmp_path_factory, content):
    """Any file content: a dict of settings or a ConfigError; then the config is valid or a ConfigError."""
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_bytes(content)
    try:
        values = load_yaml(path)
        resolve_config("fast", values)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_yaml_aliases_count_as_what_they_repeat():
    """safe_load_bounded: an alias counts as every value it repeats (merge keys and cycles included), so an alias bomb
    stops at the bound while it is read; run files allow no alias at all (googlenet writes none)."""
    assert len(safe_load_bounded(laughs(3))["l2"]) == 10  # 1,237 values: read as usual
    with pytest.raises(YAMLSizeError, match="^uses YAML aliases that expand to more than 10,000 values$"):
        safe_load_bounded(laughs(4))
    with pytest.raises(YAMLSizeError, match="^holds more than 10,000 values$"):
        safe_load_bounded("[" + "1, " * 10_001 + "]")
    with pytest.raises(YAMLSizeError, match="expand to more than 100 values"):
        safe_load_bounded(
            "base: &b {" + ", ".join(f"k{i}: {i}" for i in range(30)) + "}\nx: {<<: *b}\ny: {<<: *b}\n", 100
        )
    loop = safe_load_bounded("&a [*a, 1]")
    assert loop[0] is loop and loop[1] == 1
    assert safe_load_bounded("a: &x 1\nb: 2\n", aliases=False) == {"a": 1, "b": 2}  # an anchor alone is harmless
    with pytest.raises(YAMLSizeError, match=r"^uses YAML aliases \(\*name\)$"):
        safe_load_bounded("a: &x 1\nb: *x\n", aliases=False)


def _metadata() -> dict:
    state = base_state()
    return {k: copy.deepcopy(state[k]) for k in ("model_args", "preprocess", "classes", "config")}


FIELDS = (
    [("model_args", k) for k in ("num_classes", "in_channels", "aux_logits", "dropout", "init", "extra")]
    + [("preprocess", k) for k in (*sorted(PREPROCESS_KEYS), "extra")]
    + [("config", k) for k in ("image_size", "batch_size", "dataset", "seed")]
    + [("classes", None), ("preprocess", None), ("model_args", None)]
)
METADATA_VALUES = st.one_of(
    SETTING_VALUES,
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.sampled_from(["RGB", "BGR", 0, 31, 32, 1024, 1025]),
    st.lists(st.text(max_size=4), min_size=10, max_size=10),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELDS), METADATA_VALUES), min_size=1, max_size=3))
def test_checkpoint_metadata_fuzzed(edits):
    """Valid metadata with up to three fields replaced: a CheckpointError, or metadata every tool can use within the
    bounds."""
    meta = _metadata()
    for (section, key), value in edits:
        if key is None:
            meta[section] = value
        elif isinstance(meta[section], dict):
            meta[section][key] = value
    try:
        validate_metadata(meta, "m.pt")
    except CheckpointError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("m.pt ")
    else:  # what predict, evaluate and export build from it works and stays small
        pre = Preprocess.from_dict(meta["preprocess"])
        assert (
            31 <= pre.image_size <= 1024
            and pre.native_size <= 1024
            and pre.in_channels == meta["model_args"].get("in_channels", 3)
        )
        assert meta["model_args"]["num_classes"] <= 100_000
        assert meta["classes"] is None or len(meta["classes"]) == meta["model_args"]["num_classes"]
        from googlenet.data import batch_transform

        x = batch_transform(torch.zeros(1, pre.data_channels, 8, 8, dtype=torch.uint8), pre)
        assert x.shape == (1, pre.in_channels, pre.image_size, pre.image_size) and bool(torch.isfinite(x).all())


# a real, still-running signal check: the handler is restored after the final evaluation
def test_final_evaluation_handler_restores_the_previous_ones(tmp_path: Path):
    from googlenet.interrupts import StopFinalEvaluation

    before = signal.getsignal(signal.SIGTERM)
    with StopFinalEvaluation(tmp_path):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(SystemExit) as info, StopFinalEvaluation(tmp_path):
        raise KeyboardInterrupt
    assert info.value.code == 130


# ----------------------------------------------------------------- crafted .caffemodel files, --images, SIGTERM

from test_caffe import HOSTILE_FILES, Hostile  # noqa: E402  (the table of crafted files lives beside the reader's tests)


@pytest.mark.parametrize("case", HOSTILE_FILES, ids=[c.id for c in HOSTILE_FILES])
def test_hostile_caffemodel_on_the_command_line(case: Hostile, capsys, cwd: Path):
    """`googlenet convert` on each crafted file: exit 2, one line naming the problem and the fix, nothing written."""
    (cwd / "m.caffemodel").write_bytes(case.make())
    line = one_line_error(capsys, ["convert", "m.caffemodel"], cwd)
    assert line.startswith("googlenet convert: error: m.caffemodel: ") and line.endswith(
        "download it again if this copy is damaged)"
    ), line


CONVERT_DRIVER = """
import contextlib, io, json, resource, sys, time
import googlenet.caffe, googlenet.checkpoint  # what convert imports, before the memory is measured
from googlenet.cli import main
rows = []
for path in sys.argv[1:]:
    err, before, start = io.StringIO(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(["convert", path])
    rows.append({"code": code, "err": err.getvalue(), "seconds": time.perf_counter() - start,
                 "grew": 1024 * (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)})
print(json.dumps(rows))
"""


def test_caffemodel_bombs_of_issue_29_in_a_fresh_process(tmp_path: Path):
    """Issue 29's files, scaled to 10-19 MB (it reported 4.9 GB for 20 MB, then std::bad_alloc): in a process whose
    peak memory is still low, converting them all raises its peak by less than 100 MB, a second at most each."""
    cases = {c.id: c for c in HOSTILE_FILES}
    paths = []
    for name in (
        "repeated-tiny-nested",
        "packed-dims",
        "unpacked-floats",
        "unpacked-doubles",
        "many-layers",
        "floats-between-fields",
    ):
        paths.append(tmp_path / f"{name}.caffemodel")
        paths[-1].write_bytes(cases[name].make())
    (tmp_path / "driver.py").write_text(CONVERT_DRIVER)
    proc = subprocess.run(
        [sys.executable, "driver.py", *map(str, paths)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, row in zip(paths, rows):
        assert (
            row["code"] == 2
            and row["err"].count("\n") == 1
            and row["err"].startswith(f"googlenet convert: error: {path}: ")
        ), row
        assert row["seconds"] < 5, (path.name, row)
        assert not path.with_suffix(".pt").exists()
    assert sum(row["grew"] for row in rows) < 100 << 20, rows


def test_benchmark_images_is_bounded(capsys, cwd: Path):
    """1,000,000 synthetic JPEGs would be about 56 GB in $TMPDIR: refused at once, before MNIST or a model is loaded."""
    from googlenet.benchmark import MAX_IMAGES

    line = one_line_error(capsys, ["benchmark", "--data-loading", "stream", "--images", "1000000"], cwd)
    assert (
        f"--images must be an integer from 1 to {MAX_IMAGES:,}" in line
        and "got 1000000" in line
        and "--images 20000 or less" in line
    )
    assert "from 1 to 20,000" in one_line_error(capsys, ["benchmark", "--data-loading", "stream", "--images", "0"], cwd)


def _stream_args(**kwargs):
    import argparse

    base = {"workers": 0, "images": 24, "data": None, "image_size": 32, "batch_size": 4, "steps": 1, "repeats": 1}
    return argparse.Namespace(**{**base, **kwargs})


def _jpeg_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("googlenet-jpegs-*"))


def test_streamed_benchmark_removes_its_jpegs_and_restores_sigterm(tmp_path: Path, monkeypatch, capsys):
    """The pipeline runs over a temporary folder that is gone afterwards, with or without an error or SIGTERM in it,
    and SIGTERM's handler is the previous one again."""
    import tempfile

    from googlenet import benchmark

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    previous = signal.getsignal(signal.SIGTERM)
    rate, workers, what = benchmark.streamed_pipeline(_stream_args())
    assert rate > 0 and workers == 0 and what == "24 synthetic 256-500 px JPEGs"
    assert _jpeg_folders(tmp_path) == [] and signal.getsignal(signal.SIGTERM) == previous

    def terminated(root: Path, count: int) -> Path:
        (root / "class000").mkdir()
        (root / "class000" / "00000.jpg").write_bytes(b"\xff\xd8")
        os.kill(os.getpid(), signal.SIGTERM)  # a cluster's preemption while the JPEGs are made
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(benchmark, "make_jpeg_folder", terminated)
    with pytest.raises(KeyboardInterrupt):
        benchmark.streamed_pipeline(_stream_args())
    assert _jpeg_folders(tmp_path) == [] and signal.getsignal(signal.SIGTERM) == previous

    monkeypatch.setattr(benchmark, "make_jpeg_folder", lambda root, count: root)  # an empty folder: a DataError
    with pytest.raises(DataError):
        benchmark.streamed_pipeline(_stream_args())
    assert _jpeg_folders(tmp_path) == [] and signal.getsignal(signal.SIGTERM) == previous


def test_sigterm_while_the_benchmark_makes_jpegs_leaves_no_folder(tmp_path: Path, monkeypatch, capsys):
    """SIGTERM from outside, once the googlenet-jpegs-* folder has JPEGs in it: the benchmark exits 130 and the folder
    is gone. The handler is googlenet's own (benchmark.TerminateAsInterrupt), so the signal goes to this process, from
    another thread as it would from another process, while `main` makes the JPEGs."""
    import tempfile
    import threading
    import time

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # (the real process had TMPDIR)
    argv = ["benchmark", "--data-loading", "stream", "--images", "3000", "--workers", "0", "--image-size", "32",
            "--batch-size", "2", "--steps", "1", "--repeats", "1", "--warmup", "0", "--device", "cpu"]  # fmt: skip
    done, sent = threading.Event(), []

    def terminate_once_a_jpeg_is_made() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            if any(tmpdir.glob("googlenet-jpegs-*/class*/*.jpg")):
                # googlenet's handler, never the default one (which would end pytest)
                if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                    sent.append(time.monotonic())
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_once_a_jpeg_is_made, daemon=True)
    killer.start()
    try:
        code = main(argv)
    finally:
        done.set()
        killer.join()
    captured = capsys.readouterr()
    assert sent, f"no JPEG was made in 60 s, or no handler of googlenet's was in place: {captured}"
    assert code == 130 and captured.err.strip() == "interrupted", (code, captured.err)
    assert "making 3,000 synthetic JPEGs" in captured.out
    assert _jpeg_folders(tmpdir) == [] and signal.getsignal(signal.SIGTERM) == previous
