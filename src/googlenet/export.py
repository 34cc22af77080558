"""Export the inference network to ONNX, PT2 (torch.export) or safetensors, and load it back.

The exported network is GoogLeNet without its auxiliary heads (they only
serve training, paper section 5) in eval mode, taking a normalised
N x C x S x S batch with any N and returning the N x num_classes logits.
Every file carries the class names, the preprocessing (`data.Preprocess`)
and the model arguments, so another tool can rebuild the input pipeline:

- onnx: `metadata_props`, one JSON string per key;
- pt2: `torch.export.save(..., extra_files={"googlenet.json": ...})`;
- safetensors: the header's str -> str metadata, one JSON string per key.

Each export is reloaded on the spot with its own runtime (onnxruntime,
`torch.export.load`, safetensors) and compared with the PyTorch model of the
checkpoint; the largest absolute logit difference is printed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from . import __version__
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_safetensors,
    load_weights,
    model_from_checkpoint,
    preprocess_from_checkpoint,
)
from .data import Preprocess
from .errors import UserError
from .files import atomic_path, check_output_file
from .model import GoogLeNet

__all__ = ["ExportError", "FORMATS", "export_metadata", "inference_model", "run_export"]

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
PT2_METADATA_FILE = "googlenet.json"
# Exported logits may differ from PyTorch's by reordered float sums; a wrong
# weight or op differs by O(1). Relative to the largest logit (at least 1).
TOLERANCE = 1e-3
CHECK_BATCHES = (1, 3)  # differ from the tracing batch of 2: proves the batch axis is dynamic
ONNX_HINT = "install the onnx extra: pip install 'googlenet[onnx]'"


class ExportError(UserError):
    """An export that cannot be written or does not reproduce the model."""


class LogitsOnly(nn.Module):
    """Return only the logits tensor, so exported graphs have one plain output."""

    def __init__(self, model: GoogLeNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images).logits


def inference_model(state: dict[str, Any]) -> GoogLeNet:
    """The checkpoint's eval-mode network without auxiliary heads: the plain network of model.py, a graph any runtime
    knows.

    Takes the averaged weights when the checkpoint has them, like evaluation.
    """
    full = model_from_checkpoint(state)
    model = GoogLeNet(**{**state["model_args"], "aux_logits": False})
    load_weights(model, full.state_dict(), state.get("source", "checkpoint"))
    return model.eval()


def export_metadata(state: dict[str, Any]) -> dict[str, Any]:
    """What a reader of an exported file needs besides the weights."""
    if "classes" not in state:
        raise CheckpointError(
            f"{state.get('source', 'the checkpoint')} lacks its class names: export a checkpoint written by googlenet"
        )
    return {
        "classes": list(state["classes"]),
        "preprocess": preprocess_from_checkpoint(state).to_dict(),
        "model_args": {**state["model_args"], "aux_logits": False},
        "dataset": state.get("dataset"),
        "config": state.get("config"),
        "googlenet_version": __version__,
    }


def _as_strings(meta: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in meta.items()}


def _check_inputs(pre: Preprocess) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, pre.in_channels, pre.image_size, pre.image_size, generator=gen) for n in CHECK_BATCHES]


@torch.inference_mode()
def _max_difference(run: Callable[[Tensor], Tensor], reference: nn.Module, pre: Preprocess, what: str) -> float:
    """Largest |exported - PyTorch| logit over the check batches; raise if beyond tolerance."""
    worst, scale = 0.0, 1.0
    for x in _check_inputs(pre):
        expected = reference(x).logits
        got = torch.as_tensor(run(x))
        if got.shape != expected.shape:
            raise ExportError(
                f"the {what} export returns shape {tuple(got.shape)} for a batch of {len(x)}, expected "
                f"{tuple(expected.shape)}"
            )
        difference = (got.float() - expected).abs().max().item()
        if not difference <= worst:  # keeps a NaN (max() would drop it)
            worst = difference
        scale = max(scale, expected.abs().max().item())
    if not worst <= TOLERANCE * scale:  # also catches NaN
        raise ExportError(
            f"the {what} export differs from the PyTorch model by up to {worst:.3g} (tolerance "
            f"{TOLERANCE * scale:.3g}); file not written"
        )
    return worst


def _traceable(state: dict[str, Any], pre: Preprocess) -> tuple[nn.Module, tuple[Tensor], dict[str, Any]]:
    """The logits-only network, an example batch and its dynamic batch axis, for torch.export."""
    net = LogitsOnly(inference_model(state)).eval()
    example = torch.zeros(2, pre.in_channels, pre.image_size, pre.image_size)
    return net, (example,), {"images": {0: torch.export.Dim("batch", min=1)}}


def _export_onnx(state: dict[str, Any], meta: dict[str, Any], tmp: Path, reference: nn.Module) -> float:
    try:  # the exporter needs onnx and onnxscript; the check needs onnxruntime
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs {exc.name or 'onnx'}: {ONNX_HINT}") from None
    pre = Preprocess.from_dict(meta["preprocess"])
    net, example, dynamic = _traceable(state, pre)
    with torch.no_grad():
        program = torch.onnx.export(
            net,
            example,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props.update(_as_strings(meta))
    program.model.doc_string = f"GoogLeNet inference network ({len(meta['classes'])} classes); metadata: JSON per key"
    program.save(tmp, external_data=False)  # one self-contained file

    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    stored = session.get_modelmeta().custom_metadata_map
    if json.loads(stored.get("classes", "null")) != meta["classes"]:
        raise ExportError("the ONNX file lost its metadata on reload; file not written")
    return _max_difference(lambda x: session.run(None, {"images": x.numpy()})[0], reference, pre, "ONNX")


def _export_pt2(state: dict[str, Any], meta: dict[str, Any], tmp: Path, reference: nn.Module) -> float:
    pre = Preprocess.from_dict(meta["preprocess"])
    text = json.dumps(meta)
    net, example, dynamic = _traceable(state, pre)
    with torch.no_grad():
        program = torch.export.export(net, example, dynamic_shapes=dynamic)
    torch.export.save(program, tmp, extra_files={PT2_METADATA_FILE: text})

    extra = {PT2_METADATA_FILE: ""}
    loaded = torch.export.load(tmp, extra_files=extra).module()
    if extra[PT2_METADATA_FILE] != text:
        raise ExportError("the PT2 file lost its metadata on reload; file not written")
    return _max_difference(loaded, reference, pre, "PT2")


def _export_safetensors(state: dict[str, Any], meta: dict[str, Any], tmp: Path, reference: nn.Module) -> float:
    # safetensors wants contiguous tensors (channels_last training leaves strided conv weights).
    weights = {k: v.contiguous() for k, v in inference_model(state).state_dict().items()}
    # "format": "pt" is the convention the safetensors/Hugging Face tools read.
    save_file(weights, str(tmp), metadata={"format": "pt", **_as_strings(meta)})

    loaded, stored = load_safetensors(tmp)
    if stored["classes"] != meta["classes"] or stored["preprocess"] != meta["preprocess"]:
        raise ExportError("the safetensors file lost its metadata on reload; file not written")
    return _max_difference(
        lambda x: loaded(x).logits, reference, Preprocess.from_dict(meta["preprocess"]), "safetensors"
    )


EXPORTERS: dict[str, Callable[[dict[str, Any], dict[str, Any], Path, nn.Module], float]] = {
    "onnx": _export_onnx,
    "pt2": _export_pt2,
    "safetensors": _export_safetensors,
}


def checkpoint_file(path: str | Path) -> Path:
    """The .pt file a checkpoint argument names (a run directory means its best, else last)."""
    path = Path(path)
    if path.is_dir():
        for name in ("weights/best.pt", "weights/last.pt"):
            if (path / name).is_file():
                return path / name
    return path


def run_export(args: argparse.Namespace) -> None:
    """`googlenet export CHECKPOINT --format onnx|pt2|safetensors [--output FILE]`."""
    if args.format not in EXPORTERS:
        raise ExportError(f"unknown export format {args.format!r}: use {', '.join(EXPORTERS)}")
    source = checkpoint_file(args.checkpoint)
    out = Path(args.output) if args.output else source.with_suffix(FORMATS[args.format])
    if out.is_dir():  # --output DIR: the checkpoint's name with the format's suffix, in DIR
        out = out / source.with_suffix(FORMATS[args.format]).name
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ExportError(f"--output {out} is the checkpoint itself: choose another file name")
    check_output_file(out)  # before the work: a folder that cannot be written fails now, not after the export
    state = load_checkpoint(source)
    state["source"] = str(source)
    meta = export_metadata(state)
    reference = model_from_checkpoint(state).eval()
    # ONNX's tracing and each check take seconds to half a minute on a CPU: not a silent wait in a log
    print(f"Exporting {source} as {args.format}, then checking its logits against PyTorch's", flush=True)
    try:
        with atomic_path(out) as tmp:  # written and checked under a temporary name, renamed only if it passes
            diff = EXPORTERS[args.format](state, meta, tmp, reference)
    except (PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # The output's folder cannot be made or written (e.g. a file stands where a folder must).
        raise ExportError(f"cannot write {out} ({exc.strerror}: {exc.filename}): choose another --output") from None
    pre = meta["preprocess"]
    print(
        f"Exported {out} ({args.format}, {out.stat().st_size / 1e6:.1f} MB): inference network without auxiliary "
        "heads, "
        f"input N x {pre['in_channels']} x {pre['image_size']} x {pre['image_size']} (any N), {len(meta['classes'])} "
        "classes"
    )
    print(
        f"Max |difference| from the PyTorch model's logits (batches of {' and '.join(map(str, CHECK_BATCHES))}): "
        f"{diff:.2e}"
    )
