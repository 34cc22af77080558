"""Training configuration: one frozen dataclass, three presets, YAML in and out.

The CLI only builds a `TrainConfig`; the resolved config is saved in the run
directory (config.yaml) and inside every checkpoint, so any tool can rebuild
the model and its preprocessing without flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = ["PRESETS", "ConfigError", "TrainConfig", "check_image_size", "load_yaml", "resolve_config"]


# The built-in and torchvision datasets (data.DATASETS describes them); here so the CLI can list them without loading torch.
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100")


class ConfigError(UserError):
    """A configuration the user can fix; the message says how."""


def check_image_size(size: int) -> None:
    """The one check of an image size setting against the network's minimum (`model.MIN_IMAGE_SIZE`)."""
    from .model import MIN_IMAGE_SIZE  # here, not at the top: parsing the command line does not load torch

    if size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image size {size} is below the network's minimum of {MIN_IMAGE_SIZE}: use --image-size {MIN_IMAGE_SIZE} or more")


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "mnist"  # mnist, fashion-mnist, kmnist, cifar10, cifar100 or imagefolder:PATH
    data_dir: str | None = None  # where torchvision datasets live (default ~/.cache/googlenet/data)
    download: bool = False  # allow torchvision to download the dataset
    val_fraction: float = 0.1  # validation carve-out of the training set (stratified, seeded)
    image_size: int = 32  # model input side; the paper uses 224
    in_channels: int | None = None  # model input channels; None = the weights' (--weights), else the dataset's
    # augmentation (None = the dataset's default, see data.DATASETS)
    augment: bool = True  # master switch for training augmentation
    rotate: float | None = None  # max rotation in degrees
    translate: float | None = None  # max shift, fraction of the side
    scale: float | None = None  # max relative zoom
    hflip: bool | None = None  # random horizontal flips
    crop_padding: int | None = None  # random crop after padding, native pixels
    elastic: float | None = None  # elastic distortion strength, native pixels (Simard et al. 2003: 34)
    elastic_sigma: float = 4.0  # smoothness of the elastic distortion, native pixels
    # starting point (fine-tuning)
    weights: str | None = None  # start from these weights: a googlenet checkpoint, `googlenet convert`'s file or a .safetensors export
    weights_preprocess: bool = True  # normalise as the weights were trained (channel order, mean, std), not with the dataset's statistics
    freeze: str | None = None  # keep the layers up to and including this one fixed (e.g. inception4e)
    # model
    dropout: float = 0.4  # paper: 0.4 before the main classifier
    dropout_aux: float = 0.7  # paper: 0.7 in the auxiliary heads
    aux_weight: float = 0.3  # paper: each auxiliary loss weighted 0.3
    init: str = "caffe"  # caffe (paper), pytorch or kaiming
    # optimisation
    epochs: int = 20  # the most epochs; see `time` (docs/experiments.md)
    # Minutes of training and validation at most (0: no limit). After every epoch the
    # run plans as many of `epochs` as fit at the mean epoch time so far and shortens
    # its schedule to match (Ultralytics' `time`); the plan is saved in config.yaml.
    time: float = 40.0
    batch_size: int = 128  # global batch size (split across processes under torchrun)
    optimizer: str = "adam"  # adam, adamw or sgd
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = False  # sgd with Nesterov momentum
    weight_decay: float = 0.0
    schedule: str = "onecycle"  # constant, cosine, onecycle or step (paper: -4% every 8 epochs)
    warmup_epochs: float = 0.0  # linear warm-up for cosine (onecycle has its own ramp)
    pct_start: float = 0.25  # onecycle: fraction of steps spent ramping up
    step_epochs: int = 8  # step schedule: epochs between decays
    step_gamma: float = 0.96  # step schedule: multiplier at each decay
    label_smoothing: float = 0.1
    average: str = "ema"  # none, ema or polyak (paper: Polyak averaging)
    ema_decay: float = 0.998  # ema: weight of the old average per step
    # run control
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower)
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    channels_last: bool = True  # memory format: faster convolutions on CPU and CUDA, same math
    amp: str = "auto"  # auto (bf16 on CUDA, off elsewhere), off, bf16, fp16
    compile: bool = False  # torch.compile the model (CUDA)
    limit_train_batches: int | None = None  # stop each epoch after N batches (quick runs)
    limit_eval_batches: int | None = None  # evaluate on at most N batches (quick runs)
    patience: int | None = None  # early stopping: epochs without a better validation accuracy
    eval_batch_size: int = 500
    project: str = "runs/train"  # run directories go under here
    name: str = "exp"  # run directory name (auto-incremented: exp, exp2, ...)
    exist_ok: bool = False  # reuse an existing run directory
    preset: str = "fast"  # the preset these values started from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: see googlenet train --help")
        d = dict(d)
        for f in fields(cls):
            # YAML 1.1 reads `lr: 1e-4` as the string '1e-4': turn numbers written as text into floats.
            if f.name in d and f.type in ("float", "float | None") and isinstance(d[f.name], str):
                try:
                    d[f.name] = float(d[f.name])
                except ValueError:
                    raise ConfigError(f"{f.name} must be a number, got {d[f.name]!r}") from None
        return cls(**d)

    def validate(self) -> TrainConfig:
        choices = {
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("constant", "cosine", "onecycle", "step"),
            "average": ("none", "ema", "polyak"),
            "init": ("caffe", "pytorch", "kaiming"),
            "amp": ("auto", "off", "bf16", "fp16"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        positive = ("epochs", "batch_size", "image_size", "eval_batch_size", "lr", "step_epochs", "step_gamma")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        check_image_size(self.image_size)
        for key in ("dropout", "dropout_aux"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        for key in ("limit_train_batches", "limit_eval_batches", "patience"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1 (or unset), got {getattr(self, key)}")
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(f"pct_start must be between 0 and 1, got {self.pct_start}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.elastic_sigma <= 0 or (self.elastic or 0) < 0:
            raise ConfigError("elastic must not be negative and elastic_sigma must be positive (Simard et al.: 34 and 4)")
        if self.warmup_epochs < 0 or self.momentum < 0 or self.time < 0:
            raise ConfigError("warmup_epochs, momentum and time must not be negative (time 0: no limit)")
        if self.aux_weight < 0 or self.label_smoothing < 0 or self.weight_decay < 0:
            raise ConfigError("aux_weight, label_smoothing and weight_decay must not be negative")
        return self


# Each preset lists only what differs from the dataclass defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # The fast CPU recipe (the default): see docs/experiments.md for how it was chosen.
    "fast": {},
    # The seed README's recipe exactly: a GPU job (about two days on a 2-core CPU).
    "seed": {
        "image_size": 224,
        "in_channels": 3,
        "optimizer": "adam",
        "lr": 1e-4,
        "batch_size": 128,
        "epochs": 20,
        "aux_weight": 0.3,
        "val_fraction": 0.3,
        "schedule": "constant",
        "augment": False,
        "average": "none",
        "label_smoothing": 0.0,
        "time": 0.0,  # all 20 epochs, however long they take
    },
    # The paper's optimiser: SGD momentum 0.9, lr -4% every 8 epochs, Polyak averaging.
    "paper": {
        "image_size": 224,
        "in_channels": 3,
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 0.01,
        "schedule": "step",
        "step_epochs": 8,
        "step_gamma": 0.96,
        "weight_decay": 2e-4,  # BVLC Caffe solver
        "average": "polyak",
        "label_smoothing": 0.0,
        "epochs": 60,  # BVLC Caffe release
        "batch_size": 32,  # BVLC Caffe release
        "time": 0.0,
    },
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting: value")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve_config(preset: str = "fast", file_values: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Dataclass defaults < preset < YAML file < command-line overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[preset], **(file_values or {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["preset"] = preset
    try:
        return TrainConfig.from_dict(values).validate()
    except TypeError as exc:
        raise ConfigError(f"bad configuration: {exc}") from None
