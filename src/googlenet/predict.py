"""`googlenet predict`: class probabilities for image files, preprocessed exactly as in training.

Each file is read at the stored images' channels and side (`data.load_image`
with the checkpoint's `Preprocess`: grey or colour, any size, PNG or JPEG),
optionally inverted, then passed through the same `data.batch_transform` as
evaluation (resize to the model's input side, normalise, expand channels) and
the eval-mode model. Works with a .pt checkpoint, a run directory or an
exported .safetensors or .onnx file (the latter through onnxruntime). An
image that cannot be read is reported and skipped; the command then exits
with status 2 after predicting the others.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_model, preprocess_from_checkpoint, validate_metadata
from .config import ConfigError
from .data import IMAGE_EXTENSIONS, DataError, Preprocess, batch_transform, load_image
from .kernels import accelerate
from .model import GoogLeNetOutput
from .runtime import select_device
from .tables import format_table

__all__ = [
    "OnnxModel",
    "Prediction",
    "class_probabilities",
    "classify",
    "expand_images",
    "predict_files",
    "run_predict",
]

BATCH_SIZE = 64  # images per forward pass: bounded memory for large directories
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, most probable first."""

    image: str
    classes: list[str]
    probabilities: list[float]


def _is_image(path: Path) -> bool:
    # Hidden files are skipped: e.g. macOS "._x.png" resource forks are not images.
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if _is_image(p))


def expand_images(items: Sequence[str]) -> list[Path]:
    """Image files from files, directories (searched recursively) and globs, in order, without repeats.

    A file named explicitly is taken whatever its extension; directories and
    globs contribute only files with an image extension (data.IMAGE_EXTENSIONS).
    """
    found: dict[Path, None] = {}  # an ordered set
    exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = _images_under(path)
            if not files:
                raise DataError(f"no image files ({exts}) in directory {path}: pass a folder of images")
        elif any(c in item for c in GLOB_CHARS):
            files = []
            for match in sorted(glob.glob(os.path.expanduser(item), recursive=True)):
                m = Path(match)
                files += _images_under(m) if m.is_dir() else [m] if _is_image(m) else []
            if not files:
                raise DataError(f"no image files ({exts}) match {item!r}: check the pattern")
        else:
            raise DataError(f"image {item} does not exist: pass image files, directories or globs")
        found.update(dict.fromkeys(files))
    return list(found)


@torch.inference_mode()
def class_probabilities(model: nn.Module, images: Tensor, pre: Preprocess, invert: bool = False) -> Tensor:
    """uint8 N x C x h x w images -> N x num_classes softmax probabilities, preprocessed as in evaluation."""
    if invert:  # e.g. dark-on-light scans for a model trained on MNIST's white-on-black digits
        images = 255 - images
    x = batch_transform(images, pre)  # no augmentation: evaluation's resize (or crop) and normalisation
    return model(x).logits.float().softmax(1)


class OnnxModel:
    """A `googlenet export --format onnx` file run by onnxruntime, called like the PyTorch model (logits only)."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError(
                f"{path} is an ONNX file: predicting with it needs onnxruntime: pip install 'googlenet[onnx]'"
            ) from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            stored = self.session.get_modelmeta().custom_metadata_map
            self.meta = {k: json.loads(stored[k]) for k in ("classes", "preprocess", "model_args")}
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{path} has no googlenet metadata ({exc}): export it with googlenet export --format onnx"
            ) from None
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise CheckpointError(
                f"{path} is not a readable ONNX file ({type(exc).__name__}): export it again with googlenet export"
            ) from None
        validate_metadata(self.meta, str(path))  # the bounds of any checkpoint: its preprocessing says what to allocate
        self.num_classes = len(self.meta["classes"])

    def __call__(self, x: Tensor) -> GoogLeNetOutput:
        (logits,) = self.session.run(["logits"], {"images": x.float().contiguous().numpy()})
        return GoogLeNetOutput(torch.from_numpy(logits))


def predict_files(
    model,
    pre: Preprocess,
    classes: Sequence[str],
    paths: Sequence[Path],
    topk: int = 5,
    invert: bool = False,
    device: torch.device | str = "cpu",
    failed: list[Path] | None = None,
) -> Iterator[Prediction]:
    """Yield each image's `topk` classes (clipped to the number of classes), a batch at a time.

    With `failed`, an unreadable image is reported on stderr, added to it and skipped; without, it raises.
    """
    k = min(topk, len(classes))
    for start in range(0, len(paths), BATCH_SIZE):
        images, read = [], []
        for path in paths[start : start + BATCH_SIZE]:
            try:
                images.append(
                    load_image(
                        path, pre.data_channels, pre.resize or pre.native_size, crop=bool(pre.resize), note_colour=True
                    )
                )
            except DataError as exc:
                if failed is None:
                    raise
                failed.append(path)
                print(f"warning: {exc}; skipped", file=sys.stderr)
                continue
            read.append(path)
        if not images:
            continue
        probs, idx = class_probabilities(model, torch.stack(images).to(device), pre, invert).topk(k, dim=1)
        for path, p, i in zip(read, probs.cpu().tolist(), idx.cpu().tolist()):
            yield Prediction(str(path), [classes[j] for j in i], p)


def classify(model, meta: dict, inputs: Tensor | Sequence[str | Path], topk: int = 5) -> list[Prediction]:
    """The top `topk` classes of image files (paths, directories, globs) or of a batch of images.

    A batch is a uint8 (or 0-255 float) N x C x h x w tensor of stored images, preprocessed by the
    checkpoint's `Preprocess` as evaluation does. `model, meta = googlenet.load_model(...)` gives both.
    """
    pre, classes = preprocess_from_checkpoint(meta), [str(c) for c in meta["classes"]]
    device = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
    if isinstance(inputs, Tensor):
        probs, idx = class_probabilities(model, inputs.to(device), pre).topk(min(topk, len(classes)), dim=1)
        return [
            Prediction(f"image {n}", [classes[j] for j in i], p)
            for n, (p, i) in enumerate(zip(probs.cpu().tolist(), idx.cpu().tolist()))
        ]
    return list(predict_files(model, pre, classes, expand_images([str(p) for p in inputs]), topk, device=device))


def _write_table(predictions: Iterator[Prediction], out) -> None:
    for n, pred in enumerate(predictions):
        if len(pred.classes) == 1:  # --topk 1: one line per image
            out.write(f"{pred.image}  {pred.classes[0]}  {pred.probabilities[0]:.4f}\n")
            continue
        rows = [(rank, c, f"{p:.4f}") for rank, (c, p) in enumerate(zip(pred.classes, pred.probabilities), 1)]
        out.write(
            ("\n" if n else "")
            + pred.image
            + "\n"
            + format_table(["rank", "class", "probability"], rows, "text")
            + "\n"
        )


def _write_csv(predictions: Iterator[Prediction], out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "rank", "class", "probability"])
    for pred in predictions:
        for rank, (c, p) in enumerate(zip(pred.classes, pred.probabilities), 1):
            writer.writerow([pred.image, rank, c, f"{p:.6f}"])


def _write_json(predictions: Iterator[Prediction], out) -> None:
    records = [
        {
            "image": pred.image,
            "predictions": [{"class": c, "probability": p} for c, p in zip(pred.classes, pred.probabilities)],
        }
        for pred in predictions
    ]
    out.write(json.dumps(records, indent=2) + "\n")


WRITERS = {"table": _write_table, "csv": _write_csv, "json": _write_json}


def run_predict(args: argparse.Namespace) -> None:
    """`googlenet predict CHECKPOINT IMAGE... [--topk K] [--format table|json|csv] [--invert]`."""
    if args.topk < 1:
        raise ConfigError(f"--topk {args.topk} must be at least 1")
    if args.format not in WRITERS:
        raise ConfigError(f"unknown output format {args.format!r}: use {', '.join(WRITERS)}")
    paths = expand_images(args.images)  # before loading the model: bad paths fail fast
    if str(args.checkpoint).endswith(".onnx"):
        device = torch.device("cpu")
        model = OnnxModel(Path(args.checkpoint))
        meta = model.meta
    else:
        device = select_device(args.device)
        model, meta = load_model(args.checkpoint, map_location=device)
        accelerate(model).to(device)
    pre = preprocess_from_checkpoint(meta)
    classes = [str(c) for c in meta.get("classes") or []]
    if len(classes) != model.num_classes:
        raise CheckpointError(
            f"{args.checkpoint} names {len(classes)} classes for a {model.num_classes}-class model: use a checkpoint "
            "written by googlenet"
        )
    failed: list[Path] = []
    WRITERS[args.format](predict_files(model, pre, classes, paths, args.topk, args.invert, device, failed), sys.stdout)
    if failed:
        raise DataError(
            f"{len(failed)} of {len(paths)} images could not be read (the first: {failed[0]}); the others were "
            "predicted"
        )
