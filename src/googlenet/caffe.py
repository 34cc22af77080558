"""`googlenet convert`: BVLC's `bvlc_googlenet.caffemodel` as a googlenet checkpoint, without Caffe.

A .caffemodel is one protobuf `NetParameter` message (schema: Caffe's
`src/caffe/proto/caffe.proto`, BVLC/caffe commit 9b89154; the field numbers
below were checked against it). Only a few of its fields carry weights:

    NetParameter      layer = 100 (LayerParameter, current format)
                      layers = 2 (V1LayerParameter, the format of 2014 files)
    LayerParameter    name = 1 (string), type = 2 (string), blobs = 7 (BlobProto)
    V1LayerParameter  name = 4 (string), type = 5 (enum), blobs = 6 (BlobProto)
    BlobProto         shape = 7 (BlobShape), data = 5 (float), double_data = 8 (double),
                      legacy num = 1, channels = 2, height = 3, width = 4 (int32)
    BlobShape         dim = 1 (int64)

They are read here with a small reader of the protobuf wire format
(https://protobuf.dev/programming-guides/encoding/: varints, length-delimited
fields, fixed32/fixed64, packed or unpacked repeated numbers) rather than with
the `protobuf` package and a generated `caffe_pb2`: that would add a runtime
dependency (and a generated schema module to vendor and keep in step with
protobuf versions) for five messages and a dozen fields. The reader is about
a hundred lines and bounded against hostile files: the file size is capped
before reading, every length is checked against the bytes that remain, the
nesting depth is fixed by the schema (NetParameter > layer > blob > shape,
with no generic recursion), nothing is allocated from a declared size (only
from bytes actually present), and every problem is a one-line `CaffeError`.

Caffe layer names map one to one onto this package's `GoogLeNet` keys (see
`CAFFE_LAYERS`); every weighted layer of BVLC's train_val.prototxt must be
present with Caffe's shapes, so another network's file is refused by name.
Shapes follow Caffe's own rule (`Blob::ShapeEquals` in blob.cpp): a legacy
4-D num/channels/height/width shape matches when it is the expected shape
padded with leading 1s (biases as 1x1x1xN, fully connected weights as
1x1xOUTxIN in V1 files).

The weights expect Caffe's input: BGR channel order, pixel values 0-255 minus
the per-channel mean (B, G, R) = (104, 117, 123), no scaling, a 256 px resize
and a 224 x 224 centre crop (BVLC's models/bvlc_googlenet/readme.md,
train_val.prototxt's transform_param). The checkpoint's `preprocess`
(`data.Preprocess`) says exactly that, so predict, evaluate and export feed
the network what Caffe fed it; the weights are kept as Caffe's (conv1 reads BGR).
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import UserError

__all__ = [
    "BVLC_GOOGLENET_SHA1",
    "CAFFE_LAYERS",
    "CAFFE_PREPROCESS",
    "CaffeError",
    "CaffeLayer",
    "MAX_FILE_BYTES",
    "caffe_state_dict",
    "convert_caffemodel",
    "main_convert",
    "parse_net",
    "run_convert",
]

# sha1 of the released weights (BVLC models/bvlc_googlenet/readme.md).
BVLC_GOOGLENET_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"

# The released file is 53.5 MB; refuse anything this large before reading it.
MAX_FILE_BYTES = 1 << 30

# Caffe's kMaxBlobAxes (blob.hpp): a blob has at most 32 axes.
MAX_BLOB_AXES = 32

# What the weights were trained on, as `data.Preprocess` writes it: see the module docstring. Pixels are
# scaled to 0-1 before the mean and std apply, so Caffe's x - mean on 0-255 values is (x/255 - mean/255) / (1/255).
CAFFE_PREPROCESS: dict[str, Any] = {
    "image_size": 224,
    "in_channels": 3,
    "data_channels": 3,
    "native_size": 256,
    "mean": [104 / 255, 117 / 255, 123 / 255],  # in the model's channel order, B, G, R
    "std": [1 / 255] * 3,  # no scaling of the 0-255 values
    "channel_order": "BGR",
    "resize": 256,  # the shorter side to 256, then the 224 x 224 centre crop (the test phase of train_val.prototxt)
}

MODEL_ARGS: dict[str, Any] = {"num_classes": 1000, "in_channels": 3, "aux_logits": True, "dropout": 0.4, "dropout_aux": 0.7, "init": "caffe"}

# V1LayerParameter.LayerType values of the layers that carry weights (caffe.proto).
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}


def _caffe_layers() -> dict[str, str]:
    """Caffe layer name -> module path in `GoogLeNet`, in the order of train_val.prototxt."""
    layers = {"conv1/7x7_s2": "conv1.0", "conv2/3x3_reduce": "conv2.0", "conv2/3x3": "conv3.0"}
    branches = {"1x1": "branch1.0", "3x3_reduce": "branch2.0.0", "3x3": "branch2.1.0", "5x5_reduce": "branch3.0.0", "5x5": "branch3.1.0", "pool_proj": "branch4.1.0"}
    aux = {"conv": "conv.0", "fc": "fc1.0", "classifier": "fc2"}
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        layers.update({f"inception_{block}/{caffe}": f"inception{block}.{ours}" for caffe, ours in branches.items()})
        if block in ("4a", "4d"):  # the auxiliary heads read inception 4a and 4d
            head = 1 if block == "4a" else 2
            layers.update({f"loss{head}/{caffe}": f"aux{head}.{ours}" for caffe, ours in aux.items()})
    layers["loss3/classifier"] = "fc"
    return layers


CAFFE_LAYERS: dict[str, str] = _caffe_layers()


class CaffeError(UserError):
    """A .caffemodel that cannot be converted; the message names the layer or the problem."""


@dataclass
class CaffeLayer:
    """A layer of a .caffemodel that carries weights: its name, type and blobs (as stored)."""

    name: str
    type: str
    blobs: list[Tensor]


# ------------------------------------------------------------ protobuf wire format


def _varint(buf: memoryview, pos: int, where: str) -> tuple[int, int]:
    """The unsigned varint at `pos` and the position after it."""
    value = 0
    for i in range(10):  # a 64-bit varint has at most 10 bytes
        if pos + i >= len(buf):
            raise CaffeError(f"the file is truncated or not a .caffemodel: it ends inside a number ({where})")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise CaffeError(f"the file is corrupted or not a .caffemodel: a number longer than 10 bytes ({where})")


def _fields(buf: memoryview, where: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message; a value is an int (varint) or the bytes of the field."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CaffeError(f"the file is corrupted or not a .caffemodel: a field numbered 0 ({where})")
        if wire == 0:
            value, pos = _varint(buf, pos, where)
            yield field, wire, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, where)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:  # 3 and 4 are protobuf's deprecated groups, never used by Caffe; 6 and 7 do not exist
            raise CaffeError(f"the file is corrupted or not a .caffemodel: {where} field {field} has wire type {wire}, which Caffe never writes")
        if size > len(buf) - pos:
            raise CaffeError(f"the file is truncated or corrupted: {where} field {field} declares {size} bytes but only {len(buf) - pos} remain")
        yield field, wire, buf[pos : pos + size]
        pos += size


def _ints(wire: int, value: int | memoryview, where: str) -> list[int]:
    """A repeated integer field's values, packed (wire type 2) or not (0)."""
    if wire == 0:
        return [value]
    if wire != 2:
        raise CaffeError(f"{where}: an integer stored with wire type {wire}: the file is corrupted")
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos, where)
        out.append(number)
    return out


def _signed(number: int, bits: int) -> int:
    """Two's complement: protobuf writes negative int32/int64 values as 64-bit varints."""
    return number - (1 << 64) if number >= 1 << (bits - 1) else number


# ------------------------------------------------------------ Caffe messages


def _blob(buf: memoryview, where: str) -> Tensor:
    """A BlobProto as a float32 tensor of its shape (`shape`, else the legacy num/channels/height/width)."""
    shape: list[int] | None = None
    legacy = [0, 0, 0, 0]
    floats: list[memoryview] = []
    doubles: list[memoryview] = []
    for field, wire, value in _fields(buf, where):
        if field == 7 and wire == 2:
            shape = []  # an empty BlobShape is a scalar
            for sub, sub_wire, dims in _fields(value, where):
                if sub == 1:
                    shape += [_signed(d, 64) for d in _ints(sub_wire, dims, where)]
            if len(shape) > MAX_BLOB_AXES:
                raise CaffeError(f"{where}: a blob with {len(shape)} axes (Caffe allows {MAX_BLOB_AXES}): the file is corrupted")
        elif 1 <= field <= 4 and wire == 0:
            legacy[field - 1] = _signed(value, 32)
        elif field == 5 and wire in (2, 5):  # packed, or one fixed32 per value
            floats.append(value)
        elif field == 8 and wire in (2, 1):
            doubles.append(value)
    if shape is None:
        shape = legacy
    if any(d < 0 for d in shape):
        raise CaffeError(f"{where}: a blob of shape {tuple(shape)}: the file is corrupted")
    if floats and doubles:
        raise CaffeError(f"{where}: a blob with both float and double values: the file is corrupted")
    raw, itemsize, dtype = (b"".join(floats), 4, "<f4") if floats else (b"".join(doubles), 8, "<f8")
    if len(raw) % itemsize:
        raise CaffeError(f"{where}: {len(raw)} bytes of {'float' if itemsize == 4 else 'double'} values, not a multiple of {itemsize}: the file is corrupted")
    count, needed = len(raw) // itemsize, int(np.prod(shape, dtype=object))
    if count != needed:
        raise CaffeError(f"{where}: {count} values for a blob of shape {tuple(shape)} ({needed} values): the file is truncated or corrupted")
    # astype: a native-endian float32 copy that owns its memory (not a view of the file's bytes).
    return torch.from_numpy(np.frombuffer(raw, dtype).astype(np.float32).reshape(shape))


def _layer(buf: memoryview, v1: bool, index: int) -> CaffeLayer | None:
    """A LayerParameter (or V1LayerParameter) with its blobs, or None when it has no weights."""
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, blobs = f"#{index}", "", []
    for field, wire, value in _fields(buf, f"layer #{index}"):
        if field == name_field and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif field == type_field and v1 and wire == 0:  # V1: an enum
            kind = _V1_TYPES.get(value, f"V1 type {value}")
        elif field == type_field and not v1 and wire == 2:  # current: a string
            kind = bytes(value).decode("utf-8", "replace")
        elif field == blobs_field and wire == 2:
            blobs.append(value)
        elif v1 and field == 1 and wire == 2:
            raise CaffeError(f"layer {name!r} is in Caffe's V0 format (before 2014): upgrade the file with Caffe's upgrade_net_proto_binary")
    if not blobs:
        return None
    return CaffeLayer(name, kind, [_blob(b, f"layer {name!r} blob {i}") for i, b in enumerate(blobs)])


def parse_net(data: bytes | memoryview) -> tuple[str, list[CaffeLayer]]:
    """The file's format ("layer" or "V1 layers") and its layers that carry weights, in file order."""
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    layers: list[CaffeLayer] = []
    formats: set[int] = set()
    count = 0
    for field, wire, value in _fields(buf, "top-level"):
        if field in (100, 2) and wire == 2:  # `layer` (current) or `layers` (V1)
            formats.add(field)
            count += 1
            layer = _layer(value, v1=field == 2, index=count)
            if layer is not None:
                layers.append(layer)
    if formats == {100, 2}:
        raise CaffeError("the file mixes current (layer) and V1 (layers) layers, which Caffe refuses: the file is corrupted")
    if not layers:
        raise CaffeError("the file holds no layers with weights: it is not a .caffemodel (a prototxt, an empty or a corrupted file?)")
    return ("V1 layers" if formats == {2} else "layer"), layers


# ------------------------------------------------------------ GoogLeNet


def _expected_shapes() -> dict[str, torch.Size]:
    """The state dict shapes of the GoogLeNet BVLC trained (built on the meta device: no memory, no init cost)."""
    from .model import GoogLeNet

    with torch.device("meta"):
        model = GoogLeNet(**{k: v for k, v in MODEL_ARGS.items() if k != "init"}, init="pytorch")
    return {k: v.shape for k, v in model.state_dict().items()}


def _shape_matches(stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-axis shape may pad the expected one with leading 1s."""
    if stored == expected:
        return True
    return len(stored) == 4 and len(expected) < 4 and stored == (1,) * (4 - len(expected)) + expected


def caffe_state_dict(layers: list[CaffeLayer]) -> dict[str, Tensor]:
    """GoogLeNet's state dict from the weighted layers of bvlc_googlenet; a one-line CaffeError names the first layer that differs."""
    shapes = _expected_shapes()
    state: dict[str, Tensor] = {}
    seen: set[str] = set()
    for layer in layers:
        name = layer.name
        if name not in CAFFE_LAYERS:
            raise CaffeError(f"layer {name!r} ({layer.type or 'no type'}, with weights) is not a layer of GoogLeNet: this is not bvlc_googlenet")
        if name in seen:
            raise CaffeError(f"layer {name!r} appears twice with weights: this is not bvlc_googlenet")
        seen.add(name)
        module = CAFFE_LAYERS[name]
        wanted = "InnerProduct" if module == "fc" or module.endswith(("fc1.0", "fc2")) else "Convolution"
        if layer.type and layer.type != wanted:
            raise CaffeError(f"layer {name!r} is a {layer.type} layer but GoogLeNet's is a {wanted}: this is not bvlc_googlenet")
        if len(layer.blobs) != 2:
            raise CaffeError(f"layer {name!r} has {len(layer.blobs)} blob(s) but GoogLeNet's has 2 (weights and biases): this is not bvlc_googlenet")
        for what, blob in zip(("weight", "bias"), layer.blobs):
            expected = tuple(shapes[f"{module}.{what}"])
            if not _shape_matches(tuple(blob.shape), expected):
                raise CaffeError(
                    f"layer {name!r} has {what} shape {tuple(blob.shape)} but GoogLeNet needs {expected}: this is not bvlc_googlenet"
                )
            state[f"{module}.{what}"] = blob.reshape(expected)
    missing = [name for name in CAFFE_LAYERS if name not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CaffeError(f"layer {missing[0]!r} of GoogLeNet is missing{more}: no layer of that name with weights: this is not bvlc_googlenet")
    return {k: state[k] for k in shapes}  # in the model's own order


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CaffeError(f"{path} does not exist or is not a file: pass the path of bvlc_googlenet.caffemodel")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CaffeError(f"{path} is {size / 1e9:.1f} GB, far more than bvlc_googlenet.caffemodel (53.5 MB): refused without reading it")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    if len(data) > MAX_FILE_BYTES:
        raise CaffeError(f"{path} is over {MAX_FILE_BYTES / 1e9:.1f} GB: refused")
    return data


def convert_caffemodel(path: str | Path) -> dict[str, Any]:
    """A googlenet checkpoint dict (see `checkpoint.save_checkpoint`) from a bvlc_googlenet .caffemodel."""
    from torchvision.models import GoogLeNet_Weights  # the 1000 ILSVRC 2012 names in Caffe's order (sorted synsets); no download

    path = Path(path)
    data = _read(path)
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    try:
        caffe_format, layers = parse_net(data)
        weights = caffe_state_dict(layers)
    except CaffeError as exc:
        raise CaffeError(f"{path}: {exc}") from None
    return {
        "model": weights,
        "model_args": dict(MODEL_ARGS),
        "classes": list(GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]),
        "preprocess": dict(CAFFE_PREPROCESS),
        "dataset": "imagenet",
        "source": str(path),
        "source_sha1": sha1,
        "sha1_matches_release": sha1 == BVLC_GOOGLENET_SHA1,
        "caffe_format": caffe_format,
    }


def main_convert(path: str | Path, output: str | Path | None = None) -> Path:
    """Convert `path` and save the checkpoint atomically to `output` (default: beside it, as .pt); print what was done."""
    from .checkpoint import save_checkpoint

    path = Path(path)
    out = Path(output) if output is not None else path.with_suffix(".pt")
    if out.is_dir():
        out = out / path.with_suffix(".pt").name
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise CaffeError(f"--output {out} is the .caffemodel itself: choose another file name")
    state = convert_caffemodel(path)
    save_checkpoint(out, state)
    params = sum(t.numel() for t in state["model"].values())
    print(f"Converted {path} ({state['caffe_format']} format, {len(CAFFE_LAYERS)} weighted layers, {params:,} parameters) to {out}")
    if state["sha1_matches_release"]:
        print(f"sha1 {state['source_sha1']} matches the released bvlc_googlenet.caffemodel")
    else:
        print(
            f"sha1 {state['source_sha1']} does not match the released bvlc_googlenet.caffemodel ({BVLC_GOOGLENET_SHA1}): "
            "its layers and shapes are GoogLeNet's, but these are other weights (fine-tuned, re-saved or corrupted?)"
        )
    print("Input as in Caffe: BGR, pixel values 0-255 minus the mean (B, G, R) = (104, 117, 123), 256 px resize, 224 x 224 centre crop")
    return out


def run_convert(args: argparse.Namespace) -> None:
    """`googlenet convert CAFFEMODEL [--output FILE]`."""
    main_convert(args.caffemodel, args.output)
