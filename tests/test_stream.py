"""stream.py: image folders read from disk by DataLoader workers, against the in-memory path on the same folders.

The folders are made here: three classes of small JPEGs and PNGs of assorted
sizes. Models run at 32 px so that every test fits a 2-core machine.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import ENV, one_line_error, one_thread_here
from PIL import Image

import googlenet.train as train
from googlenet import data
from googlenet.cli import main
from googlenet.data import (
    DataError,
    FileSplit,
    Preprocess,
    TrainLoader,
    crop_seed,
    eval_batches,
    eval_side,
    load_dataset,
    load_image,
    make_jpeg_folder,
)
from googlenet.evaluate import EvalOptions, evaluate_split
from googlenet.model import GoogLeNet

SIZE = 32


def make_folder(root: Path, jpegs: int = 54, pngs: int = 9) -> Path:
    """Three classes: JPEGs of 40-90 px (not square) and a few PNGs, one of them grey."""
    make_jpeg_folder(root, jpegs, 3, (40, 90))
    rng = np.random.default_rng(1)
    for i in range(pngs):
        shape = (50, 70, 3) if i else (60, 60)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"class{i % 3:03d}" / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("stream") / "imgs")


def streamed(folder: Path, workers: int = 0, **kwargs) -> data.Dataset:
    return load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="stream", workers=workers, **kwargs)


def test_both_paths_hold_the_same_images_in_the_same_order(folder: Path):
    disk = streamed(folder)
    memory = load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="memory", resize=disk.resize)
    assert disk.streamed and not memory.streamed and disk.resize == memory.resize == eval_side(SIZE) == 37
    for name in ("train", "val", "test"):
        a, b = disk.split(name), memory.split(name)
        assert len(a) > 0 and torch.equal(a.labels, b.labels)
        assert torch.equal(torch.stack([a.image(i) for i in range(len(a))]), b.images)
    assert disk.classes == memory.classes and disk.channels == memory.channels == 3
    # the split is the in-memory path's: the images and labels of today's loader, squeezed at SIZE
    today = load_dataset(f"imagefolder:{folder}", image_size=SIZE)
    assert [len(today.split(s)) for s in ("train", "val", "test")] == [
        len(disk.split(s)) for s in ("train", "val", "test")
    ]
    assert torch.equal(today.test.labels, disk.test.labels)
    assert torch.equal(today.test.images, torch.stack([load_image(p, 3, SIZE) for p in disk.test.files]))


def test_memory_and_streamed_evaluation_agree(folder: Path):
    disk = streamed(folder, workers=1)
    memory = load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="memory", resize=disk.resize)
    pre = Preprocess.for_dataset(disk, SIZE)
    assert pre.resize == disk.resize  # saved in the checkpoint: predict reads at it and crops the centre
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=3, in_channels=3)
    results = []
    for split in (memory.split("test"), disk.split("test")):
        errors: list[tuple[int, int]] = []
        m = evaluate_split(model, split, pre, 3, EvalOptions(batch_size=8), errors=errors)
        results.append((m.loss, m.accuracy, m.top5, m.confusion.tolist(), errors))
    assert results[0] == results[1]
    assert sum(map(sum, results[0][3])) == len(disk.test)


def test_train_loader_resumes_mid_epoch_whatever_the_worker_count(folder: Path):
    split = streamed(folder).train
    steps, batch = 4, 6

    def epoch(workers: int, e: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s = FileSplit(split.files, split.labels, split.channels, split.size, workers)
        return list(TrainLoader(s, SIZE, True, True, 0.2, 7, batch, steps, torch.device("cpu")).epoch(e, start))

    whole = epoch(0, 1)
    assert len(whole) == steps and whole[0][0].shape == (batch, 3, SIZE, SIZE) and whole[0][0].dtype == torch.uint8
    resumed = epoch(1, 1, start=2)  # another worker count, from step 3
    assert len(resumed) == 2
    for (a, la), (b, lb) in zip(whole[2:], resumed, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    # the order is the in-memory path's; the next epoch has other crops and another order
    order = train.dist_utils.epoch_order(len(split), 7, 1)
    assert torch.equal(whole[0][1], split.labels[order[:batch]])
    assert not torch.equal(epoch(0, 2)[0][0], whole[0][0])
    assert crop_seed(7, 1, 5) != crop_seed(7, 2, 5) != crop_seed(7, 1, 6)


def test_auto_streams_a_folder_over_the_memory_budget(folder: Path):
    memory = load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="auto")
    count = sum(len(memory.split(s)) for s in ("train", "val", "test"))
    need_gb = count * 3 * SIZE * SIZE / 1e9
    assert not load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="auto", memory_budget=need_gb).streamed
    assert load_dataset(f"imagefolder:{folder}", image_size=SIZE, loading="auto", memory_budget=need_gb * 0.99).streamed
    assert not memory.streamed and memory.resize is None  # under the budget: today's in-memory path, unchanged
    assert not load_dataset("mnist", loading="auto", memory_budget=1e-6).streamed  # only image folders stream


def test_memory_loading_over_the_budget_refuses(folder: Path, capsys, monkeypatch):
    monkeypatch.chdir(folder.parent)
    argv = [
        "train",
        "--dataset",
        "imagefolder:imgs",
        "--data-loading",
        "memory",
        "--memory-budget",
        "0.0001",
        "--image-size",
        "32",
    ]
    line = one_line_error(capsys, argv, folder.parent)
    assert "need about" in line and "more than the memory budget of 0.0 GB" in line and "--data-loading stream" in line
    line = one_line_error(capsys, ["train", "--data-loading", "stream"], folder.parent)  # MNIST is not a folder
    assert "--data-loading stream reads image folders (imagefolder:PATH), not mnist" in line
    # nor read by workers
    line = one_line_error(capsys, ["train", "--workers", "2", "--memory-budget", "1"], folder.parent)
    assert "--workers, --memory-budget set how an image folder is read; mnist is held in memory" in line


def error_of(batches) -> str:
    """The DataError's message from reading `batches`. Not pytest.raises: its traceback would keep the loader and its
    workers alive, to be shut down whenever the garbage collector runs (inside an import, the join waits 5 s)."""
    try:
        list(batches)
    except DataError as exc:
        return str(exc)
    pytest.fail("no DataError")


@pytest.mark.parametrize("kind", ["garbage-png", "truncated-jpeg", "garbage-jpeg"])
def test_unreadable_files_give_the_in_memory_paths_error_also_from_a_worker(tmp_path: Path, kind: str):
    root = make_folder(tmp_path / "imgs", jpegs=12, pngs=0)
    good = (root / "class000" / "00000.jpg").read_bytes()
    bad = {
        "garbage-png": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "png"),
        "truncated-jpeg": (good[: len(good) // 2], "jpg"),
        "garbage-jpeg": (b"\xff\xd8\xff" + b"garbage" * 10, "jpg"),
    }
    content, ext = bad[kind]
    path = root / "class001" / f"broken.{ext}"
    path.write_bytes(content)
    with pytest.raises(DataError) as memory:
        load_image(path, 3, SIZE)
    split = FileSplit([path, *sorted(root.glob("class000/*.jpg"))[:3]], torch.tensor([1, 0, 0, 0]), 3, 37, workers=1)
    crops = error_of(TrainLoader(split, SIZE, True, True, 0.0, 0, 2, 2, torch.device("cpu")).epoch(0))  # in a worker
    evaluation = error_of(eval_batches(split, torch.arange(4), 2, "cpu"))
    for message in (crops, evaluation):
        assert "\n" not in message and "Traceback" not in message
        assert message.startswith(f"cannot read image {path}: ") and message.endswith("; pass a valid PNG or JPEG file")
    assert str(memory.value).startswith(f"cannot read image {path}: ")


def test_streamed_training_refuses_the_in_memory_augmentation(folder: Path, capsys, monkeypatch):
    monkeypatch.chdir(folder.parent)
    base = ["train", "--dataset", "imagefolder:imgs", "--image-size", "32", "--batch-size", "8"]
    line = one_line_error(capsys, [*base, "--data-loading", "stream", "--rotate", "10"], folder.parent)
    assert "--rotate augment images held in memory" in line and "--data-loading memory" in line
    line = one_line_error(capsys, [*base, "--color-jitter", "0.4"], folder.parent)
    assert "--color-jitter applies to image folders streamed from disk" in line


# ------------------------------------------------------------------ end to end

ARGS = [
    "--dataset", "imagefolder:imgs", "--data-loading", "stream", "--workers", "1", "--image-size", "32",
    "--epochs", "2", "--limit-train-batches", "3", "--batch-size", "8", "--eval-batch-size", "16",
    "--deterministic", "--device", "cpu", "--project", "P", "--no-plots",
]  # fmt: skip


def rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch_time"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_streamed_run_trains_evaluates_and_resumes_exactly(folder: Path, monkeypatch):
    monkeypatch.chdir(folder.parent)
    assert main(["train", *ARGS, "--name", "reference"]) == 0
    reference = folder.parent / "P" / "reference"
    assert (reference / "config.yaml").read_text().count("data_loading: stream") == 1
    state = torch.load(reference / "weights" / "last.pt", weights_only=True)
    assert state["preprocess"]["resize"] == 37 and state["preprocess"]["native_size"] == 37
    metrics = json.loads((reference / "metrics.json").read_text())["splits"]
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == len(streamed(folder).test)
    assert "streamed from disk: random-resized crops" in (reference / "REPORT.md").read_text()

    calls, transform = [0], train.batch_transform

    def ctrl_c_in_step_5(*args, **kwargs):  # epoch 2, step 2: a real SIGINT, mid-step
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return transform(*args, **kwargs)

    monkeypatch.setattr(train, "batch_transform", ctrl_c_in_step_5)
    before = set(children(os.getpid()))
    with pytest.raises(SystemExit) as stopped:
        main(["train", *ARGS, "--name", "ctrl-c"])
    assert stopped.value.code == 130
    # its workers are shut down, not left to whenever the traceback is collected
    assert not set(children(os.getpid())) - before
    run = folder.parent / "P" / "ctrl-c"
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch_state"]["step"] == 2
    monkeypatch.setattr(train, "batch_transform", transform)
    # another machine's worker count: the same batches
    assert main(["train", "--resume", "P/ctrl-c", "--workers", "2"]) == 0
    got, want = (torch.load(r / "weights" / "last.pt", weights_only=True) for r in (run, reference))
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    assert rows(run) == rows(reference)
    assert json.loads((run / "metrics.json").read_text())["splits"] == metrics


def children(pid: int) -> list[int]:
    """The processes `pid` started (its DataLoader workers), from Linux's /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(), reason="Linux's /proc")
def test_sigterm_to_the_whole_process_group_saves_and_resumes(folder: Path, tmp_path: Path):
    """`kill -TERM -- -PGID` (a scheduler, or a terminal's job control) reaches the DataLoader workers too: they must
    leave the stop to the main process, which saves last.pt and removes the workers' sockets (pymp-* folders); the
    run then resumes and finishes."""
    argv = [sys.executable, "-m", "googlenet", "train", *ARGS, "--workers", "2", "--name", "term"]
    proc = subprocess.Popen(
        argv, cwd=folder.parent, env={**ENV, "TMPDIR": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as `setsid googlenet train ... &`
    )  # fmt: skip
    try:
        started = ""
        for line in proc.stdout:  # training starts (the workers of the statistics' pass have gone)
            started += line
            if line.startswith("Training GoogLeNet on"):
                break
        deadline = time.monotonic() + 120
        while len(children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # as soon as the training workers are forked
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
        out = started + out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in err and "killed by signal" not in err, err[-2000:]
    assert "googlenet train --resume P/term" in out
    assert not list(tmp_path.glob("pymp-*"))
    run = folder.parent / "P" / "term"
    assert (run / "weights" / "last.pt").is_file()
    assert main(["train", "--resume", str(run), "--workers", "2"]) == 0
    assert (run / "metrics.json").is_file()


DRIVER = """
import sys, torch
from pathlib import Path
from types import SimpleNamespace
from googlenet import distributed as dist_utils
from googlenet.data import Preprocess, load_dataset
from googlenet.model import GoogLeNet
from googlenet.train import validate

def validation(folder):  # [validation images, images counted, loss, accuracy] as text, alike in every process
    dist_utils.init(torch.device("cpu"))  # a process group under torchrun with 2 processes; alone, nothing
    data = load_dataset("imagefolder:" + folder, val_fraction=0.15, image_size=32, loading="stream", workers=1)
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=3, in_channels=3).eval()
    cfg = SimpleNamespace(limit_eval_batches=None, eval_batch_size=4, channels_last=False)
    pre = Preprocess.for_dataset(data, 32)
    t = SimpleNamespace(cfg=cfg, data=data, pre=pre, model=model, averaged=None, device=torch.device("cpu"))
    m = validate(t)
    return [str(len(data.val)), str(int(m.confusion.sum())), repr(m.loss), repr(m.accuracy)]

if __name__ == "__main__":
    result = validation(sys.argv[1])
    if dist_utils.is_main():
        print("RESULT", *result)
    dist_utils.cleanup()
"""


@pytest.mark.slow
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_torchrun_validation_counts_every_image_once(folder: Path, tmp_path: Path):
    """Validation sharded over 2 torchrun processes against one process. One process needs no launcher (torchrun
    with one sets WORLD_SIZE=1, where distributed.init does nothing), so it runs the driver's function here, with
    one thread as the workers have: no torch to import again."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*launcher, str(driver), str(folder)],
        env={**ENV, "MKL_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = {2: next(x for x in done.stdout.splitlines() if x.startswith("RESULT")).split()[1:]}
    with one_thread_here(tmp_path):
        out[1] = runpy.run_path(str(driver))["validation"](str(folder))
    n_val, counted = int(out[2][0]), int(out[2][1])
    assert n_val % 2 == 1 and counted == n_val  # an odd count: a padding sampler would count one image twice
    assert float(out[2][2]) == pytest.approx(float(out[1][2]), abs=1e-5) and out[2][3] == out[1][3]


def test_a_long_strip_is_read_by_its_centre_square(tmp_path: Path):
    """A 1 x 60000 px file is within the pixel limit; resized whole to a shorter side of 256 it would be 256 x 15 M."""

    strip = np.random.default_rng(0).integers(0, 256, (1, 60000), dtype=np.uint8)
    Image.fromarray(strip).save(tmp_path / "strip.png")
    got = load_image(tmp_path / "strip.png", 1, 256, crop=True)
    want = Image.fromarray(strip).resize((256, 256), Image.Resampling.BILINEAR, box=(29999.5, 0, 30000.5, 1))
    assert got.shape == (1, 256, 256) and torch.equal(got[0], torch.from_numpy(np.asarray(want)))
