"""Whether a batch fits: the network's activation memory, estimated from its shapes before the first batch.

A batch that cannot fit would otherwise end minutes in as an allocation traceback (8.6 GB for one convolution of
`--image-size 1024 --batch-size 256`), with a half-made run directory. The estimate runs the network once on
one small image, counts its layers' outputs, scales them to the image size and adds up what a batch keeps:

    training    every layer's output (saved for the backward pass) and as much again for their gradients
    evaluation  no_grad frees each output once used: a few of the largest outputs at once

It is a lower bound of what the step needs (weights, optimiser state and the allocator's slack come on top), so
it never refuses a batch that fits, and catches the batches that cannot.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from . import distributed as dist_utils
from .config import ConfigError
from .model import GoogLeNet

__all__ = ["activation_bytes", "available_memory", "check_batch_fits", "largest_batch"]

FLOAT_BYTES = 4  # activations are float32 (autocast's bf16 copies come on top of them)
TRAIN_FACTOR = 2  # saved outputs, and their gradients in the backward pass
EVAL_FACTOR = 4  # under no_grad: an Inception block's input, its branches and their concatenation at once


REFERENCE_SIZE = 64  # px: the shapes are measured at this size (milliseconds on a CPU) and scaled to larger ones


def activation_bytes(model_args: dict[str, Any], image_size: int, train: bool) -> int:
    """Bytes of activations one image takes in a training step (`train`) or in evaluation: the layers' outputs of
    one forward pass at min(image_size, REFERENCE_SIZE) px, scaled by the pixel count (every output's side is the
    input's over a fixed stride, up to the pooling's rounding)."""
    size = min(image_size, REFERENCE_SIZE)
    outputs = _output_sizes(tuple(sorted(model_args.items())), size, train)
    kept = TRAIN_FACTOR * sum(outputs) if train else EVAL_FACTOR * max(outputs)
    return round(kept * FLOAT_BYTES * (image_size / size) ** 2)


@functools.lru_cache(maxsize=8)
@torch.no_grad()
def _output_sizes(model_args: tuple[tuple[str, Any], ...], size: int, train: bool) -> tuple[int, ...]:
    """The element count of each layer's output for one `size` px image."""
    outputs: list[int] = []

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    args = {**dict(model_args), "init": "pytorch"}  # the shapes matter here, not the values: the quickest init
    with torch.random.fork_rng(devices=[]):  # its init and dropout leave the run's random stream where it was
        model = GoogLeNet(**args).train(train)
        hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
        try:
            model(torch.zeros(1, model.in_channels, size, size))
        finally:
            for hook in hooks:
                hook.remove()
    return tuple(outputs)


def available_memory(device: torch.device) -> int | None:
    """Bytes this process may still take on `device`: a GPU's free memory, or the machine's available memory
    shared among torchrun's processes on it (None where it is not known)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        free = kb * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return free // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def largest_batch(model_args: dict[str, Any], image_size: int, device: torch.device, train: bool) -> int | None:
    """The largest global batch whose activations fit in this device's memory (None: not known), each of torchrun's
    processes holding its share."""
    free = available_memory(device)
    return None if free is None else _fits(free, activation_bytes(model_args, image_size, train))


def _fits(free: int, per_image: int) -> int:
    return free // per_image * dist_utils.world_size()


def check_batch_fits(
    model_args: dict[str, Any], image_size: int, batch_size: int, device: torch.device, train: bool, flag: str
) -> None:
    """Refuse, in one line with the largest batch that fits, a global `batch_size` (`flag`) whose activations at
    `image_size` cannot fit in this device's memory."""
    free = available_memory(device)
    if free is None:
        return
    per_image = activation_bytes(model_args, image_size, train)
    fits = _fits(free, per_image)
    if batch_size <= fits:
        return
    need = per_image * -(-batch_size // dist_utils.world_size())
    what = "a training step" if train else "evaluation"
    advice = f"use {flag} {fits} or less, or a smaller --image-size" if fits else "use a smaller --image-size"
    raise ConfigError(
        f"{flag} {batch_size} at {image_size} px needs about {need / 1e9:.1f} GB for the activations of {what}, "
        f"more than the {free / 1e9:.1f} GB available on {device}: {advice}"
    )
