"""googlenet: GoogLeNet (Inception-v1) faithful to the paper, and the toolkit around it.

    import googlenet
    run = googlenet.fit(epochs=1, limit_train_batches=3, limit_eval_batches=1)  # TrainConfig's fields, as the CLI's
    model, meta = googlenet.load_model(run)                     # eval-mode model; classes, preprocess, config, metrics
    googlenet.classify(model, meta, ["digit.png"], topk=3)      # files, or a uint8 N x C x H x W tensor `images`
    x = googlenet.Preprocess.from_dict(meta["preprocess"])(images)  # the input transform, as a callable
    net = googlenet.GoogLeNet(num_classes=10, in_channels=1)    # the paper's network (model.py)
    googlenet.accelerate(net)                                   # the same network with exact CPU speed-ups (kernels.py)

Names are imported on first use, so `googlenet --help` does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "MIN_IMAGE_SIZE": "model",
    "GoogLeNet": "model",
    "GoogLeNetOutput": "model",
    "count_parameters": "model",
    "accelerate": "kernels",
    "load_model": "checkpoint",
    "Preprocess": "data",
    "TrainConfig": "config",
    "resolve_config": "config",
    "fit": "train",
    "classify": "predict",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
