"""Checkpoints as plain dicts, saved atomically and loaded without unpickling code.

A checkpoint carries everything needed to rebuild the model and its input
pipeline (model arguments, preprocessing, class names, the resolved config)
and, for `last`, everything needed to resume exactly (optimizer, scheduler,
averaged weights, epoch, best metric, RNG states, results so far).
Loading always uses `torch.load(..., weights_only=True)`: a file carrying a
pickled payload is refused before any of its code can run. `load_model` also
reads the .safetensors files that `googlenet export` writes.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import (
    CHOICES,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    ConfigError,
    TrainConfig,
    image_size_problem,
    quote_value,
)
from .data import Preprocess
from .data.folders import class_name_problem
from .errors import UserError
from .files import atomic_save
from .model import GoogLeNet
from .rundir import RunFileError, read_run_file

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "load_checkpoint",
    "load_model",
    "load_safetensors",
    "load_weights",
    "metadata",
    "model_from_checkpoint",
    "preprocess_from_checkpoint",
    "read_weights",
    "save_checkpoint",
    "validate_metadata",
]

FORMAT_VERSION = 1
# The metadata keys every export carries (googlenet export); each value is JSON.
METADATA_KEYS = ("classes", "preprocess", "model_args", "dataset", "config", "googlenet_version")


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` via a temporary file and a rename."""
    atomic_save(path, lambda tmp: torch.save({"format_version": FORMAT_VERSION, **state}, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only) or raise a one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():  # a run directory: take its best checkpoint, else its last
        for name in ("weights/best.pt", "weights/last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path} holds no weights/best.pt or weights/last.pt: pass a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of a .pt file or a run directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps both "this pickle imports code" and "these bytes are not a pickle" in one type.
        unsafe = re.search(r"GLOBAL ([\w.]+)|unrecognized function (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} was refused: it would import {unsafe.group(1) or unsafe.group(2)}, which a "
                "checkpoint of weights never needs "
                "(possibly a code payload); nothing in it was run: only load checkpoints written by googlenet"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not a PyTorch checkpoint: use another checkpoint, e.g. weights/best.pt"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({type(exc).__name__}): use another checkpoint, e.g. "
            "weights/best.pt"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "model_args" not in state:
        raise CheckpointError(
            f"{path} is not a googlenet checkpoint (no model weights and arguments; a bare state dict or another "
            "tool's file?): "
            "pass weights/best.pt or weights/last.pt of a googlenet train run"
        )
    if not isinstance(state["model"], dict) or not isinstance(state["model_args"], dict):
        raise CheckpointError(
            f"{path} is not a googlenet checkpoint (its model or model_args is not a mapping): pass one written by "
            "googlenet train"
        )
    version = state.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer googlenet: upgrade the package")
    validate_metadata(state, str(path))
    return state


# ------------------------------------------------------------------ what a file may say

MODEL_ARG_TYPES = {
    "num_classes": int,
    "in_channels": int,
    "aux_logits": bool,
    "dropout": float,
    "dropout_aux": float,
    "init": str,
}
PREPROCESS_KEYS = {
    "image_size",
    "in_channels",
    "data_channels",
    "native_size",
    "mean",
    "std",
    "channel_order",
    "resize",
}


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# Preprocess mean and std act on pixels scaled to 0-1 (Caffe's: 0.4-0.5 and 1/255); beyond this a value is no
# normalisation, and an integer past int64 would not even make a tensor.
MAX_NORMALISATION = 1e6


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _model_args_problem(args: Any) -> str | None:
    if not isinstance(args, dict):
        return "not a mapping"
    unknown = [k for k in args if k not in MODEL_ARG_TYPES]
    if unknown:
        return f"unknown argument {quote_value(unknown[0])}"
    if not _integer(args.get("num_classes"), 1, MAX_CLASSES):
        return f"num_classes must be an integer from 1 to {MAX_CLASSES}, got {quote_value(args.get('num_classes'))}"
    if not _integer(args.get("in_channels", 3), 1, MAX_CHANNELS):
        return f"in_channels must be an integer from 1 to {MAX_CHANNELS}, got {quote_value(args.get('in_channels'))}"
    if not isinstance(args.get("aux_logits", True), bool):
        return f"aux_logits must be true or false, got {quote_value(args.get('aux_logits'))}"
    for key in ("dropout", "dropout_aux"):
        if key in args and not (_number(args[key]) and 0 <= args[key] < 1):
            return f"{key} must be in [0, 1), got {quote_value(args[key])}"
    if args.get("init", "caffe") not in CHOICES["init"]:
        return f"init must be caffe, pytorch or kaiming, got {quote_value(args.get('init'))}"
    return None


def _preprocess_problem(pre: Any, in_channels: int) -> str | None:
    """What a checkpoint's `preprocess` (data.Preprocess as a dict) gets wrong, or None; `in_channels`: the model's."""
    if not isinstance(pre, dict):
        return "not a mapping"
    unknown = [k for k in pre if k not in PREPROCESS_KEYS]
    missing = sorted(PREPROCESS_KEYS - {"channel_order", "resize"} - set(pre))
    if unknown or missing:
        return f"unknown field {quote_value(unknown[0])}" if unknown else f"no {missing[0]}"
    size = pre["image_size"]
    if not isinstance(size, int) or isinstance(size, bool):
        return f"image_size must be an integer, got {quote_value(size)}"
    if image_size_problem(size):
        return image_size_problem(size)
    if pre["in_channels"] != in_channels or not _integer(pre["in_channels"], 1, MAX_CHANNELS):
        return f"in_channels {quote_value(pre['in_channels'])} is not the model's {in_channels}"
    data_channels = pre["data_channels"]
    if not _integer(data_channels, 1, MAX_CHANNELS):
        return f"data_channels must be an integer from 1 to {MAX_CHANNELS}, got {quote_value(data_channels)}"
    if not _integer(pre["native_size"], 1, MAX_IMAGE_SIZE):
        return f"native_size must be an integer from 1 to {MAX_IMAGE_SIZE}, got {quote_value(pre['native_size'])}"
    resize = pre.get("resize")
    if resize is not None and not _integer(resize, size, MAX_IMAGE_SIZE):
        return (
            f"resize must be unset or an integer from image_size ({size}) to {MAX_IMAGE_SIZE}, "
            f"got {quote_value(resize)}"
        )
    if pre.get("channel_order", "RGB") not in ("RGB", "BGR"):
        return f"channel_order must be RGB or BGR, got {quote_value(pre.get('channel_order'))}"
    mean, std = pre["mean"], pre["std"]
    for name, values in (("mean", mean), ("std", std)):
        if (
            not isinstance(values, (list, tuple))
            or not 1 <= len(values) <= MAX_CHANNELS
            or not all(_number(v) and abs(v) <= MAX_NORMALISATION for v in values)
        ):
            return (
                f"{name} must be a list of 1 to {MAX_CHANNELS} finite numbers of at most {MAX_NORMALISATION:g} in "
                f"size, got {quote_value(values)}"
            )
    if len(mean) != len(std) or not all(v > 0 for v in std):
        return (
            "mean and std must have one value per channel and std must be positive, "
            f"got {quote_value(mean)} and {quote_value(std)}"
        )
    # data.batch_transform: the stored channels, normalised (mean and std broadcast), then mapped to the model's
    channels = (
        data_channels
        if len(mean) in (1, data_channels)
        else len(mean)
        if data_channels == 1 and len(mean) == in_channels
        else None
    )
    if channels is None or (channels != in_channels and 1 not in (channels, in_channels)):
        return (
            f"{data_channels}-channel images with {len(mean)} mean value(s) cannot feed a {in_channels}-channel model"
        )
    return None


def _classes_problem(classes: Any, num_classes: int) -> str | None:
    if not isinstance(classes, (list, tuple)) or len(classes) != num_classes:
        got = quote_value(classes) if not isinstance(classes, (list, tuple)) else len(classes)
        return f"{num_classes} class names expected, got {got}"
    for name in classes:
        problem = class_name_problem(name)
        if problem:
            return f"class name {quote_value(name)} {problem}"
    return None


def validate_metadata(state: dict[str, Any], source: str) -> None:
    """Check every field the tools read from a checkpoint or an export against the bounds in config.py.

    Runs before anything is allocated from them: model arguments (class count, channels), that the
    weights have the shapes those arguments give, the preprocessing (image sizes, channels, finite
    mean, positive std, channel order, resize), the class names (one per class, printable UTF-8) and
    the training config. Raises a one-line CheckpointError naming the field.
    """
    args = state.get("model_args")
    problem = _model_args_problem(args)
    if problem:
        raise CheckpointError(
            f"{source} has unusable model arguments ({problem}): use a checkpoint written by googlenet"
        )
    num_classes, in_channels = args["num_classes"], args.get("in_channels", 3)
    averaged, count = state.get("averaged_model"), state.get("averaged_count")
    if averaged is not None and not isinstance(averaged, dict):
        raise CheckpointError(
            f"{source} has an averaged_model that is not a state dict: use a checkpoint written by googlenet"
        )
    if count is not None and not (
        isinstance(count, torch.Tensor) and count.numel() == 1 and not count.is_floating_point() and int(count) >= 0
    ):
        raise CheckpointError(
            f"{source} has an averaged_count that is not a count of updates: use a checkpoint written by googlenet"
        )
    weights = state.get("model")
    if isinstance(weights, dict):
        for key, dim, expected, what in (
            ("fc.weight", 0, num_classes, "classes"),
            ("conv1.0.weight", 1, in_channels, "input channels"),
        ):
            tensor = weights.get(key)
            if isinstance(tensor, torch.Tensor) and (tensor.dim() <= dim or tensor.shape[dim] != expected):
                raise CheckpointError(
                    f"{source} does not match the model: {key} has shape {tuple(tensor.shape)} but its model arguments "
                    f"say {expected} {what} "
                    "(another class count or channel count?): use a checkpoint written by googlenet"
                )
    if "preprocess" in state:
        problem = _preprocess_problem(state["preprocess"], in_channels)
        if problem:
            raise CheckpointError(
                f"{source} has unusable preprocessing settings ({problem}): use a checkpoint written by googlenet"
            )
    if state.get("classes") is not None:
        problem = _classes_problem(state["classes"], num_classes)
        if problem:
            raise CheckpointError(
                f"{source} has unusable class names ({problem}): use a checkpoint written by googlenet"
            )
    if state.get("config") is not None:
        try:  # the run's name and project are not read back (a resume writes where the checkpoint is)
            TrainConfig.from_dict(state["config"]).validate(run_location=False)  # where it ran does not matter here
        except ConfigError as exc:
            raise CheckpointError(
                f"{source} holds an unusable training config ({exc}): use a checkpoint written by googlenet"
            ) from None


def model_from_checkpoint(state: dict[str, Any], averaged: bool = True) -> GoogLeNet:
    """Rebuild the model a checkpoint describes and load its (averaged, if any) weights."""
    try:
        model = GoogLeNet(**state["model_args"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{state.get('source', 'checkpoint')} has unusable model arguments ({exc}): use a checkpoint written by "
            "googlenet"
        ) from None
    weights = evaluation_weights(state) if averaged else state["model"]
    load_weights(model, weights, state.get("source", "checkpoint"))
    return model


def load_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint", skip: tuple[str, ...] = ()
) -> None:
    """Load a state dict, turning shape and key mismatches into one clear line.

    The auxiliary heads may be absent (inference exports have none); keys
    starting with a prefix in `skip` are neither required nor loaded.
    """
    own = model.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source} does not hold a state dict of tensors: use a checkpoint written by googlenet")
    for (
        k,
        v,
    ) in weights.items():  # NaN weights would give NaN probabilities, exports that "match" and a dead fine-tuning
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{source} holds non-finite weights (NaN or infinity in {k}): use another checkpoint, e.g. an earlier "
                "one"
            )
    if skip:
        own = {k: v for k, v in own.items() if not k.startswith(skip)}
        weights = {k: v for k, v in weights.items() if not k.startswith(skip)}
    missing = [k for k in own if k not in weights and not k.startswith(("aux1.", "aux2."))]
    unexpected = [k for k in weights if k not in own and not k.startswith(("aux1.", "aux2.", "n_averaged"))]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not hold this architecture's weights (e.g. {(missing or unexpected)[0]!r}): "
            "use a checkpoint written by googlenet for GoogLeNet"
        )
    for k, v in weights.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{source} does not match the model: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)} "
                "(another class count or channel count?): build the model with the checkpoint's settings"
            )
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GoogLeNet, dict[str, Any]]:
    """Load a checkpoint (.pt, or a run directory) or an exported .safetensors file as an eval-mode GoogLeNet.

    Returns (model, metadata): class names, preprocessing, model arguments. Files are read without unpickling.
    """
    if str(path).endswith(".safetensors"):
        return load_safetensors(path, map_location)
    state = load_checkpoint(path, map_location)
    state["source"] = str(path)
    model = model_from_checkpoint(state).eval()
    return model, metadata(state, Path(path))


# What a checkpoint says about its model, as `load_model` returns it (the training state stays behind).
METADATA = (
    "classes",
    "preprocess",
    "model_args",
    "config",
    "dataset",
    "best_epoch",
    "best_acc",
    "source",
    "source_sha1",
    "sha1_matches_release",
)


def metadata(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint's description: class names, preprocessing, model arguments, training config, and the run's
    final metrics (metrics.json: loss, accuracy, top-5, per-class figures per split) when it sits in a run directory."""
    meta = {k: state[k] for k in METADATA if k in state}
    run_dir = path if path.is_dir() else path.parent.parent
    try:  # read within its bound (a FIFO or a link to /dev/zero is refused, not read); optional: None if unusable
        in_run = (run_dir / "config.yaml").is_file() and (run_dir / "metrics.json").exists()
        meta["metrics"] = read_run_file(run_dir, "metrics.json")["splits"] if in_run else None
    except (RunFileError, KeyError, TypeError):
        meta["metrics"] = None
    return meta


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a googlenet checkpoint, a converted .caffemodel or an exported .safetensors file.

    A checkpoint gives its averaged weights when it has them, as evaluation does.
    """
    if str(path).endswith(".safetensors"):
        model, meta = load_safetensors(path)
        return model.state_dict(), meta
    state = load_checkpoint(path)
    return {k: v for k, v in evaluation_weights(state).items() if k != "n_averaged"}, state


def evaluation_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint is evaluated with: its averaged weights (EMA, Polyak) when it has them, else the
    model's."""
    averaged = state.get("averaged_model")
    return averaged if isinstance(averaged, dict) and averaged else state["model"]


def preprocess_from_checkpoint(state: dict[str, Any]) -> Preprocess:
    try:
        return Preprocess.from_dict(state["preprocess"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint lacks its preprocessing settings ({exc}): re-export it from googlenet"
        ) from None


def load_safetensors(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GoogLeNet, dict[str, Any]]:
    """Rebuild the eval-mode network and its metadata from an exported .safetensors file (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: pass a .safetensors file written by googlenet export")
    device = torch.device(map_location)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    missing = [k for k in ("classes", "preprocess", "model_args") if k not in raw]
    if missing:
        raise CheckpointError(
            f"{path} has no googlenet metadata ({', '.join(missing)} missing): export it with googlenet export"
        )
    try:
        meta: dict[str, Any] = {k: json.loads(v) for k, v in raw.items() if k in METADATA_KEYS}
    except (ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} has malformed googlenet metadata ({type(exc).__name__}): export it again"
        ) from None
    validate_metadata({**meta, "model": weights}, str(path))  # bounds first: the model is built from these numbers
    model = GoogLeNet(**{**meta["model_args"], "aux_logits": False})
    load_weights(model, weights, str(path))
    meta["source"] = str(path)
    return model.to(device).eval(), meta
