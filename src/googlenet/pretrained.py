"""Starting from other weights: --weights loads a checkpoint, a converted .caffemodel or an export into the
network (classifiers for another class count start afresh), --freeze keeps the layers up to one fixed."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .checkpoint import load_weights
from .config import ConfigError
from .model import GoogLeNet
from .runtime import log

__all__ = ["freeze_through", "load_pretrained", "say_image_size"]


def load_pretrained(model: GoogLeNet, weights: dict[str, Tensor], source: str) -> None:
    """--weights: load every layer of `weights` into `model`; classifiers trained for another class count start
    afresh."""
    classifiers = ("fc.", "aux1.fc2.", "aux2.fc2.")
    theirs = weights["fc.weight"].shape[0] if "fc.weight" in weights else model.num_classes
    skip = classifiers if theirs != model.num_classes else ()
    load_weights(model, weights, source, skip=skip)
    notes = (
        [
            f"the classifiers (fc, aux1.fc2, aux2.fc2) re-initialised for {model.num_classes} classes (the weights "
            f"have {theirs})"
        ]
        if skip
        else []
    )
    if model.aux1 is not None and not any(k.startswith("aux1.") for k in weights):
        notes.append("the auxiliary heads are not in the file: they start from their initialisation")
    log(f"Starting from the weights of {source}" + "".join(f"; {n}" for n in notes))


def freeze_through(model: GoogLeNet, layer: str) -> None:
    """--freeze LAYER: no training for the layers up to and including LAYER (the auxiliary heads and the classifier
    train)."""
    children = [name for name, _ in model.named_children() if name not in ("aux1", "aux2")]
    trunk = children[: children.index("inception5b") + 1]  # conv1 ... inception5b: the classifier always trains
    if layer not in trunk:
        raise ConfigError(f"--freeze {layer}: GoogLeNet has no such layer: use one of {', '.join(trunk)}")
    for name in trunk[: trunk.index(layer) + 1]:
        getattr(model, name).requires_grad_(False)


def say_image_size(meta: dict[str, Any], source: str, image_size: int) -> None:
    """Say when --weights were trained at another image size than the run's (BVLC's at 224 px, the fast preset's
    32 px): they work, but at the size they were trained for they start from what they learnt."""
    size = meta["preprocess"].get("image_size") if isinstance(meta.get("preprocess"), dict) else None
    if isinstance(size, int) and size != image_size:
        log(
            f"the weights of {source} were trained on {size} px images and this run trains on {image_size} px: "
            f"pass --image-size {size} to give them the input they were trained for"
        )
