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
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import Preprocess
from .errors import UserError
from .files import atomic_save
from .model import GoogLeNet

__all__ = ["CheckpointError", "FORMAT_VERSION", "load_checkpoint", "load_model", "load_safetensors", "model_from_checkpoint", "save_checkpoint"]

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
                f"checkpoint {path} was refused: it would import {unsafe.group(1) or unsafe.group(2)}, which a checkpoint of weights never needs "
                "(possibly a code payload); nothing in it was run: only load checkpoints written by googlenet"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupted or not a PyTorch checkpoint: use another checkpoint, e.g. weights/best.pt") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({type(exc).__name__}): use another checkpoint, e.g. weights/best.pt"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "model_args" not in state:
        raise CheckpointError(
            f"{path} is not a googlenet checkpoint (no model weights and arguments; a bare state dict or another tool's file?): "
            "pass weights/best.pt or weights/last.pt of a googlenet train run"
        )
    if not isinstance(state["model"], dict) or not isinstance(state["model_args"], dict):
        raise CheckpointError(f"{path} is not a googlenet checkpoint (its model or model_args is not a mapping): pass one written by googlenet train")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer googlenet: upgrade the package")
    return state


def model_from_checkpoint(state: dict[str, Any], averaged: bool = True) -> GoogLeNet:
    """Rebuild the model a checkpoint describes and load its (averaged, if any) weights."""
    try:
        model = GoogLeNet(**state["model_args"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{state.get('source', 'checkpoint')} has unusable model arguments ({exc}): use a checkpoint written by googlenet") from None
    weights = state.get("averaged_model") if averaged and state.get("averaged_model") else state["model"]
    load_weights(model, weights, state.get("source", "checkpoint"))
    return model


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint", skip: tuple[str, ...] = ()) -> None:
    """Load a state dict, turning shape and key mismatches into one clear line.

    The auxiliary heads may be absent (inference exports have none); keys
    starting with a prefix in `skip` are neither required nor loaded.
    """
    own = model.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source} does not hold a state dict of tensors: use a checkpoint written by googlenet")
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
    return model, state


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a googlenet checkpoint, a converted .caffemodel or an exported .safetensors file.

    A checkpoint gives its averaged weights when it has them, as evaluation does.
    """
    if str(path).endswith(".safetensors"):
        model, meta = load_safetensors(path)
        return model.state_dict(), meta
    state = load_checkpoint(path)
    weights = state.get("averaged_model") or state["model"]
    return {k: v for k, v in weights.items() if k != "n_averaged"}, state


def preprocess_of(state: dict[str, Any]) -> Preprocess:
    try:
        return Preprocess.from_dict(state["preprocess"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint lacks its preprocessing settings ({exc}): re-export it from googlenet") from None


def load_safetensors(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GoogLeNet, dict[str, Any]]:
    """Rebuild the eval-mode network and its metadata from an exported .safetensors file (no pickle)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: pass a .safetensors file written by googlenet export")
    device = torch.device(map_location)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:120]})") from None
    missing = [k for k in ("classes", "preprocess", "model_args") if k not in raw]
    if missing:
        raise CheckpointError(f"{path} has no googlenet metadata ({', '.join(missing)} missing): export it with googlenet export")
    try:
        meta: dict[str, Any] = {k: json.loads(v) for k, v in raw.items() if k in METADATA_KEYS}
        model = GoogLeNet(**{**meta["model_args"], "aux_logits": False})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has malformed googlenet metadata ({exc}): export it again") from None
    load_weights(model, weights, str(path))
    meta["source"] = str(path)
    return model.to(device).eval(), meta
