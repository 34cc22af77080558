"""Image folders streamed from disk: DataLoader workers, torchvision's decoding and the paper's crops.

ImageNet does not fit in memory (1.28 million images, about 190 GB decoded at
224 px), so a big image folder stays on disk as `FileSplit`s (same files,
labels and seeded splits as the in-memory path) and DataLoader workers read it
while the model trains:

- training: each file decoded whole (`images.read_image`: torchvision.io.decode_image for JPEGs),
  then the paper's crops (`transforms.train_transform`, torchvision's transforms v2): a random crop
  of 8-100% of the area with an aspect ratio from 3/4 to 4/3, resized to the input side, and a
  horizontal flip (Szegedy et al. 2015, section 6; torchvision's RandomResizedCrop), plus optional
  brightness, contrast and saturation jitter (`--color-jitter`, in place of the photometric
  distortions of Howard 2013);
- evaluation: each file read exactly as `googlenet predict` reads it
  (`images.load_image`: the shorter side resized to Preprocess.resize, the centre
  square kept), then Preprocess's centre crop.

The batches leave the workers as uint8 and end in the same `transforms.batch_transform`
(Preprocess: scale, normalise, channels) as the in-memory path, on the device.

Reproducible and resumable: an epoch's batches are DistributedSampler's order
for (seed, epoch), the in-memory path's too (`distributed.epoch_order`); each
image's random crop comes from a generator seeded by (seed, epoch, index), so
neither the worker count nor a resume mid-epoch (which skips the done batches'
indices without reading them) changes a batch. Validation under torchrun reads
a disjoint share of the split on each process (`distributed.shard`), every
image once: no sampler padding.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from .. import distributed as dist_utils
from ..errors import DataError
from .datasets import FileSplit, Split
from .images import read_image
from .transforms import crop_seed, train_transform

__all__ = [
    "ImageFiles",
    "TrainLoader",
    "default_workers",
    "eval_batches",
    "make_jpeg_folder",
    "pipeline_images_per_second",
]


def default_workers() -> int:
    """--workers unset: the cores this process may use, shared among torchrun's processes on the machine, 1 to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


@dataclass(frozen=True)
class Unreadable:
    """A file a worker could not read: its one-line DataError message, raised again in the main process (a worker's
    exception would arrive wrapped in the worker's traceback)."""

    message: str


class ImageFiles(torch.utils.data.Dataset):
    """The images of a FileSplit, keyed by (index, epoch): cropped at random by `transform`, or (None) read as
    evaluation reads them."""

    def __init__(self, split: FileSplit, transform=None, seed: int = 0) -> None:
        self.split, self.transform, self.seed = split, transform, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int] | Unreadable:
        i, epoch = key
        try:
            if self.transform is None:
                image = self.split.image(i)
            else:
                image = read_image(self.split.files[i], self.split.channels)
                with torch.random.fork_rng(devices=[]):  # transforms v2 draw from torch's global CPU generator
                    # not torch.manual_seed, which would seed CUDA's generators too
                    torch.default_generator.manual_seed(crop_seed(self.seed, epoch, i))
                    image = self.transform(image)
        except DataError as exc:
            return Unreadable(str(exc))
        return image, int(self.split.labels[i])


def _collate(items: list) -> tuple[Tensor, Tensor] | Unreadable:
    bad = next((x for x in items if isinstance(x, Unreadable)), None)
    if bad is not None:
        return bad
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items], dtype=torch.int64)


def _checked(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """`loader`'s batches, an unreadable file's DataError raised here. Its workers start (fork) with Ctrl-C and
    SIGTERM blocked, so that one sent to the process group meanwhile cannot reach them (_leave_process_group)."""
    with _signals_held():
        batches = iter(loader)
    try:
        for batch in batches:
            if isinstance(batch, Unreadable):
                raise DataError(batch.message)
            yield batch
    finally:  # evaluation's workers stop now (TrainLoader.close stops training's), not when a traceback holding this
        del batches  # frame (an unreadable file's error, a Ctrl-C) is collected


def _loader(
    dataset: ImageFiles, batch_sampler, workers: int, device: torch.device, persistent: bool = False
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers else None,
        # its own generator: each iteration draws a base seed, which must not move torch's global stream (dropout)
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_leave_process_group,
    )


SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM blocked in this thread (and so in the processes it forks), then delivered as before."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _leave_process_group(worker: int) -> None:
    """A worker leaves Ctrl-C and SIGTERM to the main process, which stops at a step boundary, saves
    (interrupts.StopOnInterrupt) and shuts its workers down. A terminal's Ctrl-C and `kill -- -PGID` signal a whole
    process group, so each worker, started with both blocked (_checked), drops any that came, leaves its parent's
    group and only then takes signals again; a worker whose parent dies exits by itself (torch's worker watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # discards one sent to the group while the worker started
    if hasattr(os, "setpgid"):  # POSIX
        os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # now only its parent's shutdown sends it
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


class EpochBatches(torch.utils.data.Sampler):
    """This process's batches of one epoch as keys (index, epoch), from step `start` on: DistributedSampler's
    seeded order (`distributed.epoch_order`), cut into `steps` batches of `local_batch`."""

    def __init__(self, n: int, seed: int, local_batch: int, steps: int) -> None:
        self.n, self.seed, self.local_batch, self.steps = n, seed, local_batch, steps
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = dist_utils.epoch_order(self.n, self.seed, self.epoch)
        b = self.local_batch
        for step in range(self.start, self.steps):
            yield [(i, self.epoch) for i in order[step * b : (step + 1) * b].tolist()]


class TrainLoader:
    """The training split's DataLoader for a whole run (its workers outlive the epochs)."""

    def __init__(
        self,
        split: FileSplit,
        image_size: int,
        augment: bool,
        hflip: bool,
        color_jitter: float,
        seed: int,
        local_batch: int,
        steps: int,
        device: torch.device,
    ) -> None:
        # no augmentation: evaluation's view
        transform = train_transform(image_size, hflip, color_jitter) if augment else None
        self.sampler = EpochBatches(len(split), seed, local_batch, steps)
        self.loader = _loader(ImageFiles(split, transform, seed), self.sampler, split.workers, device, persistent=True)
        self.batches: Generator[tuple[Tensor, Tensor], None, None] | None = None

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(uint8 images, labels) of each step of `epoch` from step `start` (a mid-epoch resume: the earlier batches
        are not read)."""
        self.sampler.set_epoch(epoch, start)
        self.batches = _checked(self.loader)
        return self.batches

    def close(self) -> None:
        """Shut the workers down now. A run that stops (Ctrl-C, an error) would leave them to the garbage collector
        otherwise: the stop's traceback holds the epoch's frames, and so the loader."""
        if self.batches is not None:
            self.batches.close()
        self.loader = self.batches = None


def eval_batches(
    split: Split | FileSplit, idx: Tensor, batch_size: int, device: torch.device | str
) -> Iterator[tuple[Tensor, Tensor]]:
    """(indices, uint8 images on `device`) of `idx` in batches: slices of an in-memory split, or its files read by
    DataLoader workers."""
    batches = [idx[start : start + batch_size] for start in range(0, len(idx), batch_size)]
    if isinstance(split, Split):
        for batch in batches:
            yield batch, split.images[batch].to(device, non_blocking=True)
        return
    keys = [[(int(i), 0) for i in batch] for batch in batches]
    loader = _loader(ImageFiles(split), keys, min(split.workers, len(keys)), torch.device(device))
    for batch, (images, _) in zip(batches, _checked(loader)):
        yield batch, images.to(device, non_blocking=True)


# ----------------------------------------------------------- benchmark


def make_jpeg_folder(
    root: Path, count: int = 2000, classes: int = 10, sides: tuple[int, int] = (256, 500), seed: int = 0
) -> Path:
    """`count` synthetic JPEGs (quality 90) in `classes` class folders, each side drawn from `sides`: smooth colour
    blobs with some fine texture, so that files and decoding cost about what photographs of that size do."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC
        )
        fine = rng.normal(0, 12, (h, w, 3))
        Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float64) + fine, 0, 255).astype(np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90
        )
    return root


def pipeline_images_per_second(
    split: FileSplit, image_size: int, batch_size: int, batches: int = 20, warmup: int = 2
) -> float:
    """Images per second of the streamed training pipeline alone (read, decode, paper's crops, collate; no model),
    after `warmup` batches (the workers' start)."""
    steps = min(batches + warmup, len(split) // batch_size)
    if steps <= warmup:
        raise DataError(
            f"{len(split)} images make too few batches of {batch_size} to time: use a smaller --batch-size or a "
            "bigger folder"
        )
    loader = TrainLoader(split, image_size, True, True, 0.0, 0, batch_size, steps, torch.device("cpu"))
    it = loader.epoch(0)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    n = sum(len(labels) for _, labels in it)
    return n / (time.perf_counter() - start)
