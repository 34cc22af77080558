"""Training configuration: one frozen dataclass, three presets, YAML in and out.

The CLI only builds a `TrainConfig`; the resolved config is saved in the run
directory (config.yaml) and inside every checkpoint, so any tool can rebuild
the model and its preprocessing without flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .files import YAMLSizeError, read_bounded, safe_load_bounded

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_CONFIG_BYTES",
    "MAX_NAME_BYTES",
    "MAX_IMAGE_SIZE",
    "OLD_PRESET_NAMES",
    "OLD_SETTING_NAMES",
    "PRESETS",
    "ConfigError",
    "TrainConfig",
    "check_count",
    "check_image_size",
    "image_size_problem",
    "load_yaml",
    "resolve_config",
    "run_name_problem",
    "quote_value",
]

# Upper bounds of the settings (and of the checkpoint fields, checkpoint.validate_metadata) where memory
# or the arithmetic is at stake; docs/usage.md lists them under "Hostile input". Each is far above real use.
MAX_IMAGE_SIZE = 1024  # model input side (the paper: 224); a 1024 px batch of 64 already needs ~10 GB of activations
MAX_CLASSES = 100_000  # classifier outputs: the three classifiers hold 3 x 1024 x classes weights (1.2 GB at the bound)
MAX_CHANNELS = 64  # model and image input channels (1 grey, 3 colour)
MAX_BATCH_SIZE = 4096  # training and evaluation batch (the paper: 32; the defaults: 128 and 500)
MAX_EPOCHS = 100_000  # epochs, step_epochs, warmup_epochs, patience
MAX_BATCHES = 10**9  # limit_train_batches, limit_eval_batches
MAX_SEED = 2**32 - 1  # as numpy's legacy seeds and most tools'
MAX_MINUTES = 10**6  # --time-limit (about two years)
MAX_DISTORTION = 1000.0  # elastic and elastic_sigma, native pixels (Simard et al.: 34 and 4)
MAX_MEMORY_GB = 1e6  # memory_budget, GB (a petabyte)
MAX_WORKERS = 256  # DataLoader worker processes
MAX_CONFIG_BYTES = 1 << 20  # a --config file is a few hundred bytes; a link to /dev/zero must not be read to the end
MAX_NAME_BYTES = 255  # a folder name (--name): the limit of every common file system


# The built-in and torchvision datasets (data.DATASETS describes them); here so the CLI can list them without loading
# torch.
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100")
# Every setting that takes one of a list, defined once: the CLI's choices, validate() and docs/usage.md
# (tests/test_config.py checks the docs) read them here. `init` repeats model.INIT_SCHEMES (tested equal):
# model.py imports only torch, and the command line answers --help without importing torch.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "cosine", "onecycle", "step"),
    "average": ("none", "ema", "polyak"),
    "init": ("caffe", "pytorch", "kaiming"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "data_loading": ("auto", "memory", "stream"),
    "tta": ("none", "flip", "crops10", "crops144"),  # googlenet evaluate --tta (data.transforms.tta_views)
}


class ConfigError(UserError):
    """A configuration the user can fix; the message says how."""


# Names a setting or a preset had before, still read, so that old config.yaml files, checkpoints (their
# "config") and commands keep working: each maps to today's name. The command line takes the old flags too.
OLD_SETTING_NAMES = {"time": "time_limit"}  # "time" did not say that it is a limit, nor in what unit
OLD_PRESET_NAMES = {"seed": "original"}  # "seed" (the seed README's recipe) read as the random seed, --seed


def with_current_names(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (settings by name) with old setting and preset names replaced by today's; both names of one
    setting set at once is an error."""
    out = {}
    for key, value in values.items():
        new = OLD_SETTING_NAMES.get(key, key) if isinstance(key, str) else key
        if new != key and new in values:
            raise ConfigError(f"{key} is the old name of {new}, and both are set: keep only {new}")
        out[new] = OLD_PRESET_NAMES.get(value, value) if new == "preset" and isinstance(value, str) else value
    return out


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel, _short.maxlist, _short.maxdict = 40, 40, 2, 4, 4


def quote_value(value: Any) -> str:
    """A value for an error message, cut short (a hostile file's value may be huge or deeply nested)."""
    return _short.repr(value)


def image_size_problem(size: int) -> str | None:
    """What is wrong with an image side for the network (`model.MIN_IMAGE_SIZE` to MAX_IMAGE_SIZE), or None."""
    from .model import MIN_IMAGE_SIZE  # here, not at the top: parsing the command line does not load torch

    if size < MIN_IMAGE_SIZE:
        return f"image size {size} is below the network's minimum of {MIN_IMAGE_SIZE}"
    if size > MAX_IMAGE_SIZE:
        return f"image size {size} is above the limit of {MAX_IMAGE_SIZE} (memory)"
    return None


def check_image_size(size: int) -> None:
    """The one check of an image size setting against the network's minimum and the memory bound."""
    from .model import MIN_IMAGE_SIZE

    problem = image_size_problem(size)
    if problem:
        fix = (
            f"use --image-size {MAX_IMAGE_SIZE} or less"
            if size > MAX_IMAGE_SIZE
            else f"use --image-size {MIN_IMAGE_SIZE} or more"
        )
        raise ConfigError(f"{problem}: {fix}")


def check_count(name: str, value: int, high: int, low: int = 1) -> None:
    """An integer option within [low, high], e.g. `googlenet summary --num-classes`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, got {quote_value(value)}")


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run directory (it must be one path component, inside --project), or None."""
    seps = [c for c in ("/", os.sep, os.altsep) if c]
    if not name or name in (".", "..") or any(c in name for c in seps) or "\0" in name:
        return f"run name {quote_value(name)} is not one folder name (no '/', no '..', not empty): use e.g. --name exp"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:  # checked before anything is made: mkdir would fail after making --project
        return (
            f"run name {quote_value(name)} is {size:,} bytes long, more than the {MAX_NAME_BYTES} a folder name can "
            "be: choose a shorter --name"
        )
    return None


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "mnist"  # mnist, fashion-mnist, kmnist, cifar10, cifar100 or imagefolder:PATH
    data_dir: str | None = None  # where torchvision datasets live (default ~/.cache/googlenet/data)
    download: bool = False  # allow torchvision to download the dataset
    val_fraction: float = 0.1  # validation carve-out of the training set (stratified, seeded)
    image_size: int = 32  # model input side; the paper uses 224
    in_channels: int | None = None  # model input channels; None = the weights' (--weights), else the dataset's
    # memory (decode everything first), stream (image folders: read from disk by DataLoader workers, with the paper's
    # crops; stream.py) or auto (stream an image folder whose decoded images would exceed memory_budget)
    data_loading: str = "auto"
    # GB of decoded images the in-memory path may hold; None = half of this machine's memory, shared among torchrun's
    # processes on it
    memory_budget: float | None = None
    # DataLoader processes of the streamed path; None = the cores (up to 8), shared among torchrun's processes
    workers: int | None = None
    # augmentation (None = the dataset's default, see data.DATASETS)
    augment: bool = True  # master switch for training augmentation
    rotate: float | None = None  # max rotation in degrees
    translate: float | None = None  # max shift, fraction of the side
    scale: float | None = None  # max relative zoom
    hflip: bool | None = None  # random horizontal flips
    crop_padding: int | None = None  # random crop after padding, native pixels
    elastic: float | None = None  # elastic distortion strength, native pixels (Simard et al. 2003: 34)
    elastic_sigma: float = 4.0  # smoothness of the elastic distortion, native pixels
    # streamed path: brightness, contrast and saturation jitter of this strength (0 = off; stands in for Howard 2013's
    # photometric distortions)
    color_jitter: float = 0.0
    # starting point (fine-tuning)
    # start from these weights: a googlenet checkpoint, `googlenet convert`'s file or a .safetensors export
    weights: str | None = None
    # normalise as the weights were trained (channel order, mean, std), not with the dataset's statistics
    weights_preprocess: bool = True
    freeze: str | None = None  # keep the layers up to and including this one fixed (e.g. inception4e)
    # model
    dropout: float = 0.4  # paper: 0.4 before the main classifier
    dropout_aux: float = 0.7  # paper: 0.7 in the auxiliary heads
    aux_weight: float = 0.3  # paper: each auxiliary loss weighted 0.3
    init: str = "caffe"  # caffe (paper), pytorch or kaiming
    # optimisation
    epochs: int = 6  # the run's length on every machine (fewer only with --time-limit, --patience; docs/experiments.md)
    # Minutes of training and validation at most (0: no limit, the default: the same epochs and schedule on every
    # machine). With a limit the run plans, after every epoch, as many of `epochs` as fit at the mean epoch time
    # so far and shortens its schedule to match (Ultralytics' `time`, in hours there); the plan is saved in
    # config.yaml. Called `time` before (OLD_SETTING_NAMES).
    time_limit: float = 0.0
    batch_size: int = 256  # global batch size (split across processes under torchrun; the paper: 32)
    optimizer: str = "adam"  # adam, adamw or sgd
    lr: float = 2e-3  # peak learning rate
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = False  # sgd with Nesterov momentum
    weight_decay: float = 0.0
    schedule: str = "onecycle"  # constant, cosine, onecycle or step (paper: -4% every 8 epochs)
    warmup_epochs: float = 0.0  # linear warm-up of the constant, cosine and step schedules (onecycle has its own ramp)
    pct_start: float = 0.25  # onecycle: fraction of steps spent ramping up
    step_epochs: int = 8  # step schedule: epochs between decays
    step_gamma: float = 0.96  # step schedule: multiplier at each decay
    label_smoothing: float = 0.1
    average: str = "ema"  # none, ema or polyak (paper: Polyak averaging)
    ema_decay: float = 0.995  # ema: weight of the old average per step
    # run control
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower)
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
    channels_last: bool = True  # memory format: faster convolutions on CPU and CUDA, same math
    # auto (bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else off: runtime.resolve_amp), off, bf16, fp16
    amp: str = "auto"
    compile: bool = False  # torch.compile the model (CUDA)
    limit_train_batches: int | None = None  # stop each epoch after N batches (quick runs)
    limit_eval_batches: int | None = None  # evaluate on at most N batches (quick runs)
    patience: int | None = None  # early stopping: epochs without a better validation accuracy
    eval_batch_size: int = 500
    # also write the per-epoch scalars to RUN/tensorboard (pip install 'googlenet[tensorboard]')
    tensorboard: bool = False
    # draw the curves, confusion matrices and test-errors grid (PNG, as Ultralytics' `plots`); off: REPORT.md,
    # the CSV and JSON files only (quick runs, the test suite)
    plots: bool = True
    project: str = "runs/train"  # run directories go under here
    name: str = "exp"  # run directory name (auto-incremented: exp, exp2, ...)
    exist_ok: bool = False  # reuse an existing run directory
    preset: str = "fast"  # the preset these values started from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a mapping (a YAML file, a checkpoint's copy), each value checked against its setting's type."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a mapping of setting: value, got {quote_value(d)}")
        d = with_current_names(d)  # a config.yaml or checkpoint written before a rename
        known = {f.name: f.type for f in fields(cls)}
        unknown = [quote_value(k) if not isinstance(k, str) else k for k in d if k not in known]
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}: see googlenet train --help")
        return cls(**{k: _typed(k, known[k], v) for k, v in d.items()})

    def validate(self, run_location: bool = True) -> TrainConfig:
        """Check every setting's value and range (one place for all of them); raise a one-line ConfigError.

        `run_location` False leaves out `name` and `project`, where a run directory already exists (a resume,
        a checkpoint's config): the run is where its files are.
        """
        choices = {**{k: v for k, v in CHOICES.items() if k != "tta"}, "preset": tuple(PRESETS)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} {quote_value(getattr(self, key))} is not one of {', '.join(allowed)}")
        for f in fields(self):  # the types first (a TrainConfig built or replaced in Python skips from_dict)
            _typed(f.name, f.type, getattr(self, f.name), convert=False)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
            if isinstance(value, str) and "\0" in value:
                raise ConfigError(f"{f.name} must not contain a NUL character")
        if self.image_size <= 0:
            raise ConfigError(f"image_size must be positive, got {self.image_size}")
        check_image_size(self.image_size)
        for key, bounds in RANGES.items():
            value = getattr(self, key)
            if value is not None and not _within(value, *bounds):
                raise ConfigError(_out_of_range(key, value, *bounds))
        for key in ("dataset", "project") if run_location else ("dataset",):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key} must not be empty")
        problem = run_name_problem(self.name) if run_location else None
        if problem:
            raise ConfigError(problem)
        longest = max((len(p.encode("utf-8", "surrogatepass")) for p in Path(self.project).parts), default=0)
        if run_location and longest > MAX_NAME_BYTES:
            raise ConfigError(
                f"--project {quote_value(self.project)} has a folder name of {longest:,} bytes, more than the "
                f"{MAX_NAME_BYTES} a folder name can be: choose a shorter --project"
            )
        if self.data_loading == "stream" and not self.dataset.startswith("imagefolder:"):
            raise ConfigError(
                f"--data-loading stream reads image folders (imagefolder:PATH), not {self.dataset}: use --data-loading "
                "auto or memory"
            )
        folder_only = [k for k in ("workers", "memory_budget") if getattr(self, k) is not None] + [
            "color_jitter"
        ] * bool(self.color_jitter)
        if folder_only and not self.dataset.startswith("imagefolder:"):  # never ignored silently
            names = ", ".join(f"--{k.replace('_', '-')}" for k in folder_only)
            raise ConfigError(
                f"{names} set how an image folder is read; {self.dataset} is held in memory: leave {names} out"
            )
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs a momentum: set --momentum (e.g. 0.9) or --no-nesterov")
        if self.freeze and not self.weights:  # frozen random layers would never learn
            raise ConfigError(
                f"--freeze {self.freeze} keeps layers at their starting weights, and without --weights those are "
                "random: pass --weights FILE (e.g. a converted bvlc_googlenet.pt) or drop --freeze"
            )
        return self


def _typed(key: str, kind: str, value: Any, convert: bool = True) -> Any:
    """`value` as setting `key` of type `kind` ("int", "float | None", ...), or a ConfigError naming the setting.

    `convert`: numbers written as text and integers become floats for a float setting (else they are only checked).
    """
    optional = kind.endswith("| None")
    base = kind.split("|")[0].strip()
    if value is None and optional:
        return None
    if base == "float" and isinstance(value, str) and convert:
        # YAML 1.1 reads `lr: 1e-4` as the string '1e-4': turn numbers written as text into floats.
        try:
            return float(value)
        except ValueError:
            pass
    elif base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if convert else value
    elif base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif base == "bool" and isinstance(value, bool) or base == "str" and isinstance(value, str):
        return value
    what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text (quote it in YAML)"}[base]
    raise ConfigError(f"{key} must be {what}{' or unset (null)' if optional else ''}, got {quote_value(value)}")


# Ranges of the numeric settings: (low, high, low excluded, high excluded). An unset (None) setting passes.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "epochs": (1, MAX_EPOCHS, False, False),
    "batch_size": (1, MAX_BATCH_SIZE, False, False),
    "eval_batch_size": (1, MAX_BATCH_SIZE, False, False),
    "in_channels": (1, MAX_CHANNELS, False, False),
    "val_fraction": (0, 1, True, True),
    "rotate": (0, 180, False, False),
    "translate": (0, 1, False, False),
    "scale": (0, 1, False, True),
    "crop_padding": (0, MAX_IMAGE_SIZE, False, False),
    "elastic": (0, MAX_DISTORTION, False, False),
    "elastic_sigma": (0, MAX_DISTORTION, True, False),
    "color_jitter": (0, 1, False, False),
    "memory_budget": (0, MAX_MEMORY_GB, True, False),
    "workers": (0, MAX_WORKERS, False, False),
    "dropout": (0, 1, False, True),
    "dropout_aux": (0, 1, False, True),
    "aux_weight": (0, math.inf, False, False),
    "time_limit": (0, MAX_MINUTES, False, False),
    "lr": (0, math.inf, True, False),
    "momentum": (0, 1, False, True),
    "weight_decay": (0, math.inf, False, False),
    "warmup_epochs": (0, MAX_EPOCHS, False, False),
    "pct_start": (0, 1, True, True),
    "step_epochs": (1, MAX_EPOCHS, False, False),
    "step_gamma": (0, math.inf, True, False),
    "label_smoothing": (0, 1, False, True),
    "ema_decay": (0, 1, False, True),
    "seed": (0, MAX_SEED, False, False),
    "limit_train_batches": (1, MAX_BATCHES, False, False),
    "limit_eval_batches": (1, MAX_BATCHES, False, False),
    "patience": (1, MAX_EPOCHS, False, False),
}


def _within(value: float, low: float, high: float, low_open: bool, high_open: bool) -> bool:
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def _out_of_range(key: str, value: float, low: float, high: float, low_open: bool, high_open: bool) -> str:
    """`epochs must be positive, got 0`, `dropout must be in [0, 1), got 1.0`, `seed must be at most 4294967295, got
    ...`."""
    unset = (
        " (or unset)"
        if key
        in ("in_channels", "crop_padding", "limit_train_batches", "limit_eval_batches", "patience", "memory_budget")
        else ""
    )
    below = value < low or (low_open and value == low)
    if (low, high, low_open, high_open) == (0, 1, True, True):
        return f"{key} must be between 0 and 1, got {value}"
    if isinstance(value, float) and high != math.inf and high <= 1:
        return f"{key} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, got {value}"
    if below and low == 0 and not low_open:
        return f"{key} must not be negative{' (0: no limit)' if key == 'time_limit' else ''}, got {value}"
    if below:
        return (
            f"{key} must be positive{unset}, got {value}"
            if low in (0, 1)
            else f"{key} must be at least {low}, got {value}"
        )
    bound = f"{high:g}" if isinstance(high, float) else high
    return f"{key} must be {'below' if high_open else 'at most'} {bound}{unset}, got {value}"


# Each preset lists only what differs from the dataclass defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # The fast CPU recipe (the default): see docs/experiments.md for how it was chosen.
    "fast": {},
    # The seed README's recipe exactly: a GPU job (11-20 hours on a 2-core CPU by docs/benchmarks.md's 224 px speeds).
    # Named "seed" before (OLD_PRESET_NAMES).
    "original": {
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
    },
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The settings of a --config file: a regular file of at most MAX_CONFIG_BYTES of UTF-8 YAML holding a mapping
    of at most files.MAX_YAML_VALUES values (files.read_bounded refuses a FIFO, a device or a huge file at once)."""
    raw = read_bounded(
        path, MAX_CONFIG_BYTES, "a config file", "pass a YAML file of settings", f"config file {path}", ConfigError
    )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8") from None
    try:
        data = safe_load_bounded(text)
    except YAMLSizeError as exc:
        raise ConfigError(f"config file {path} {exc}: write the settings out, one setting: value a line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except (
        ValueError,
        RecursionError,
        OverflowError,
    ) as exc:  # e.g. `2024-13-45` read as a date, or nesting thousands deep
        raise ConfigError(f"config file {path} is not valid YAML ({type(exc).__name__}): check its values") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting: value")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(
            f"config file {path}: {quote_value(bad[0])} is not a setting name: use names such as epochs or lr"
        )
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve_config(
    preset: str | None = None, file_values: dict[str, Any] | None = None, **overrides: Any
) -> TrainConfig:
    """Dataclass defaults < preset < YAML file < command-line overrides.

    A `preset:` in the file is honoured unless `preset` names one (the command line's --preset wins); else fast.
    """
    file_values = with_current_names(dict(file_values or {}))
    overrides = with_current_names(overrides)
    if "preset" in file_values:
        named = file_values.pop("preset")
        if not isinstance(named, str) or named not in PRESETS:
            raise ConfigError(f"preset {quote_value(named)} in the config file is not one of {', '.join(PRESETS)}")
        preset = preset or named
    preset = OLD_PRESET_NAMES.get(preset, preset) or "fast"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[preset], **file_values}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["preset"] = preset
    return TrainConfig.from_dict(values).validate()
