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
protobuf versions) for five messages and a dozen fields. The reader is a
couple of hundred lines and bounded against hostile files, in memory (a small
multiple of the file's size) and in time (linear in it, and in practice well
under a second): the file size is capped before reading (MAX_FILE_BYTES, the
largest file Caffe writes for this network), every length is checked against
the bytes that remain, the nesting depth is fixed by the schema (NetParameter >
layer > blob > shape, with no generic recursion), nothing is allocated from a
declared size (only from bytes actually present), fields are read and skipped
by offset without copying them, and what the file holds is counted while it is
read and refused at the first excess over what GoogLeNet has: layers, layers
with weights, blobs per layer, axes and values per blob, and fields in all
(see the constants below). Every problem is a one-line `CaffeError` naming it
and the fix.

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
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import save_checkpoint
from .errors import UserError
from .model import GoogLeNet

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

# What a bvlc_googlenet.caffemodel can hold, which bounds what is read: counted while parsing, refused at the
# first excess (a hostile file of millions of tiny nested fields must not become millions of objects).
GOOGLENET_PARAMETERS = 13_378_280  # of the 1000-class network with both auxiliary heads (tested against model.py)
WEIGHTED_LAYERS = 64  # convolutions and fully connected layers (len(CAFFE_LAYERS), tested)
BLOBS_PER_LAYER = 2  # weights and biases
MAX_BLOB_AXES = 4  # GoogLeNet's blobs have at most 4 axes (Caffe itself allows 32)
MAX_BLOB_VALUES = 1024 * 2048  # its largest blobs: loss1/fc's and loss2/fc's weights
TRAIN_VAL_LAYERS = 166  # layers of BVLC's train_val.prototxt (a saved net adds Caffe's split layers, about a dozen)
MAX_LAYERS = 1000  # layers of any kind: six times train_val's
MAX_FIELDS = 100_000  # protobuf fields read (top level, layers, blobs, shapes): the released file has a few thousand
_SHORT_RUN = 16  # runs of fewer unpacked values are read without numpy (see _Reader._run)
MAX_NAME_BYTES = 256  # GoogLeNet's layer names have at most 30 bytes; longer ones are cut (they only reach messages)
# The largest file Caffe writes for this network: every parameter as a double (Net<double>) with its double
# gradient (snapshot_diff), 16 bytes each, plus 16 MiB for the layer definitions: 230.8 MB. The released file,
# floats without gradients, is 53.5 MB. A larger file is refused before it is read.
MAX_FILE_BYTES = 16 * GOOGLENET_PARAMETERS + (16 << 20)

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

MODEL_ARGS: dict[str, Any] = {
    "num_classes": 1000,
    "in_channels": 3,
    "aux_logits": True,
    "dropout": 0.4,
    "dropout_aux": 0.7,
    "init": "caffe",
}

# V1LayerParameter.LayerType values of the layers that carry weights (caffe.proto).
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}


def _caffe_layers() -> dict[str, str]:
    """Caffe layer name -> module path in `GoogLeNet`, in the order of train_val.prototxt."""
    layers = {"conv1/7x7_s2": "conv1.0", "conv2/3x3_reduce": "conv2.0", "conv2/3x3": "conv3.0"}
    branches = {
        "1x1": "branch1.0",
        "3x3_reduce": "branch2.0.0",
        "3x3": "branch2.1.0",
        "5x5_reduce": "branch3.0.0",
        "5x5": "branch3.1.0",
        "pool_proj": "branch4.1.0",
    }
    aux = {"conv": "conv.0", "fc": "fc1.0", "classifier": "fc2"}
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        layers.update({f"inception_{block}/{caffe}": f"inception{block}.{ours}" for caffe, ours in branches.items()})
        if block in ("4a", "4d"):  # the auxiliary heads read inception 4a and 4d
            head = 1 if block == "4a" else 2
            layers.update({f"loss{head}/{caffe}": f"aux{head}.{ours}" for caffe, ours in aux.items()})
    layers["loss3/classifier"] = "fc"
    return layers


CAFFE_LAYERS: dict[str, str] = _caffe_layers()


FIX = "convert BVLC's bvlc_googlenet.caffemodel (53.5 MB; download it again if this copy is damaged)"


class CaffeError(UserError):
    """A .caffemodel that cannot be converted; the message names the layer or the problem, `fix` what to do
    (`convert_caffemodel` adds it to the message)."""

    def __init__(self, message: str, fix: str = FIX) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class CaffeLayer:
    """A layer of a .caffemodel that carries weights: its name, type and blobs (as stored)."""

    name: str
    type: str
    blobs: list[Tensor]


# ------------------------------------------------------------ protobuf wire format


class _Reader:
    """Protobuf's wire format over the file's bytes, by offsets (nothing is sliced or copied to be read or skipped),
    counting every field it reads against MAX_FIELDS."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.read = 0  # fields read so far

    def varint(self, pos: int, end: int, where: str) -> tuple[int, int]:
        """The unsigned varint at `pos` (before `end`) and the position after it."""
        buf, value = self.buf, 0
        for i in range(10):  # a 64-bit varint has at most 10 bytes
            if pos + i >= end:
                raise CaffeError(f"the file is truncated or not a .caffemodel: it ends inside a number ({where})")
            byte = buf[pos + i]
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value, pos + i + 1
        raise CaffeError(f"the file is corrupted or not a .caffemodel: a number longer than 10 bytes ({where})")

    def varints(self, start: int, end: int, where: str) -> Iterator[int]:
        """The varints packed in [start, end), one at a time (the caller stops when it has too many)."""
        while start < end:
            value, start = self.varint(start, end, where)
            yield value

    def fields(self, start: int, end: int, where: str) -> Iterator[tuple[int, int, int, int, int]]:
        """(number, wire type, a, b, key length) of each field of the message in [start, end).

        A varint's value is a (b is 0); a length-delimited field's bytes are [a, b). Consecutive fixed-width fields
        of one number (an unpacked repeated float or double) come as one run: records of key + value in [a, b),
        read with `fixed_values`; finding the run is vectorised, so a file of them is read at numpy's speed.
        """
        pos = start
        while pos < end:
            self.read += 1
            if self.read > MAX_FIELDS:
                raise CaffeError(
                    f"more than {MAX_FIELDS:,} protobuf fields in its layers and blobs, where "
                    "bvlc_googlenet.caffemodel "
                    "has a few thousand: the file is corrupted or not a .caffemodel"
                )
            key_start = pos
            key, pos = self.varint(pos, end, where)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise CaffeError(f"the file is corrupted or not a .caffemodel: a field numbered 0 ({where})")
            if wire == 0:
                value, pos = self.varint(pos, end, where)
                yield number, wire, value, 0, 0
            elif wire == 2:
                size, pos = self.varint(pos, end, where)
                if size > end - pos:
                    raise CaffeError(
                        f"the file is truncated or corrupted: {where} field {number} declares {size} bytes but only "
                        f"{end - pos} remain"
                    )
                yield number, wire, pos, pos + size, 0
                pos += size
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                if size > end - pos:
                    raise CaffeError(
                        f"the file is truncated or corrupted: {where} field {number} declares {size} bytes but only "
                        f"{end - pos} remain"
                    )
                keylen = pos - key_start
                run_end = key_start + self._run(key_start, keylen + size, keylen, end) * (keylen + size)
                yield number, wire, key_start, run_end, keylen
                pos = run_end
            else:  # 3 and 4 are protobuf's deprecated groups, never used by Caffe; 6 and 7 do not exist
                raise CaffeError(
                    f"the file is corrupted or not a .caffemodel: {where} field {number} has wire type {wire}, which "
                    "Caffe never writes"
                )

    def _run(self, start: int, stride: int, keylen: int, end: int) -> int:
        """How many records of `stride` bytes from `start` (before `end`) begin with the first one's key (at least 1).

        A few are compared one by one, the rest in numpy chunks that double: the work is proportional to the run
        found, not to the bytes after it, and a short run costs no numpy call."""
        buf, key = self.buf, self.buf[start : start + keylen]
        count, pos = 1, start + stride
        while pos + stride <= end and buf[pos : pos + keylen] == key:
            count, pos = count + 1, pos + stride
            if count == _SHORT_RUN:
                break
        else:
            return count
        n = (end - start) // stride
        keys = np.frombuffer(buf, np.uint8, count=n * stride, offset=start).reshape(n, stride)[:, :keylen]
        chunk = 64
        while count < n:
            same = (keys[count : count + chunk] == keys[0]).all(axis=1)
            if not same.all():
                return count + int(same.argmin())
            count, chunk = count + len(same), 2 * chunk
        return count

    def fixed_values(self, a: int, b: int, keylen: int, size: int) -> memoryview | bytes | np.ndarray:
        """The values of a run of fixed-width fields ([a, b) from `fields`): one value as a view of the file's bytes,
        a few joined, more as a (count, size) uint8 view of the file."""
        stride = keylen + size
        if b - a == stride:
            return self.buf[a + keylen : b]
        if b - a < _SHORT_RUN * stride:
            return b"".join(self.buf[pos + keylen : pos + stride] for pos in range(a, b, stride))
        return np.frombuffer(self.buf, np.uint8, count=b - a, offset=a).reshape(-1, stride)[:, keylen:]

    def text(self, a: int, b: int) -> str:
        """A string field, cut to MAX_NAME_BYTES (longer names are no GoogLeNet layer's, and error messages quote
        them)."""
        cut = b - a > MAX_NAME_BYTES
        return bytes(self.buf[a : min(b, a + MAX_NAME_BYTES)]).decode("utf-8", "replace") + ("..." if cut else "")


def _signed(number: int, bits: int) -> int:
    """Two's complement: protobuf writes negative int32/int64 values as 64-bit varints."""
    return number - (1 << 64) if number >= 1 << (bits - 1) else number


# ------------------------------------------------------------ Caffe messages


def _blob(r: _Reader, start: int, end: int, where: str) -> Tensor:
    """A BlobProto as a float32 tensor of its shape (`shape`, else the legacy num/channels/height/width).

    Values are counted as they arrive and refused past MAX_BLOB_VALUES; their bytes are viewed in the file, and
    copied only to join several pieces (an unpacked field's values, or a repeated packed field)."""
    shape: list[int] | None = None
    legacy = [0, 0, 0, 0]
    itemsize = 0  # 4: float values, 8: double values, 0: none yet
    first: memoryview | bytes | np.ndarray | None = None
    joined: bytearray | None = None
    nbytes = 0
    for number, wire, a, b, keylen in r.fields(start, end, where):
        if number == 7 and wire == 2:
            # an empty BlobShape is a scalar; a repeated one merges (protobuf), its dims appended
            shape = _blob_shape(r, a, b, where, shape or [])
        elif 1 <= number <= 4 and wire == 0:
            legacy[number - 1] = _signed(a, 32)
        elif (number, wire) in ((5, 2), (5, 5), (8, 2), (8, 1)):  # float or double data, packed or one field per value
            size = 4 if number == 5 else 8
            if itemsize and itemsize != size:
                raise CaffeError(f"{where}: a blob with both float and double values: the file is corrupted")
            itemsize = size
            piece = r.buf[a:b] if wire == 2 else r.fixed_values(a, b, keylen, size)
            nbytes += b - a if wire == 2 else (b - a) // (keylen + size) * size
            if nbytes // size > MAX_BLOB_VALUES:
                raise CaffeError(
                    f"{where}: more than {MAX_BLOB_VALUES:,} values, the most a blob of GoogLeNet holds "
                    "(loss1/fc's and loss2/fc's 1024 x 2048 weights): this is not bvlc_googlenet"
                )
            if first is None:
                first = piece
            else:
                if joined is None:
                    joined = bytearray(first.tobytes() if isinstance(first, np.ndarray) else first)
                joined += piece.tobytes() if isinstance(piece, np.ndarray) else piece
    shape = legacy if shape is None else shape
    _check_blob_size(shape, nbytes, itemsize, where)
    dtype = "<f8" if itemsize == 8 else "<f4"
    if joined is not None:
        values = np.frombuffer(joined, dtype)
    elif isinstance(first, np.ndarray):
        values = np.ascontiguousarray(first).view(dtype).reshape(-1)
    else:
        values = np.frombuffer(first if first is not None else b"", dtype)
    # astype: a native-endian float32 copy that owns its memory (not a view of the file's bytes).
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def _blob_shape(r: _Reader, start: int, end: int, where: str, shape: list[int]) -> list[int]:
    """`shape` with a BlobShape's dims (field 1, one varint each or packed) appended, at most MAX_BLOB_AXES."""
    for sub, sub_wire, a, b, _ in r.fields(start, end, where):
        if sub != 1:
            continue
        if sub_wire not in (0, 2):
            raise CaffeError(f"{where}: an integer stored with wire type {sub_wire}: the file is corrupted")
        for dim in [a] if sub_wire == 0 else r.varints(a, b, where):
            shape.append(_signed(dim, 64))
            if len(shape) > MAX_BLOB_AXES:
                raise CaffeError(
                    f"{where}: a blob shape with more than {MAX_BLOB_AXES} axes, where GoogLeNet's blobs have at most "
                    f"{MAX_BLOB_AXES}: this is not bvlc_googlenet"
                )
    return shape


def _check_blob_size(shape: list[int], nbytes: int, itemsize: int, where: str) -> None:
    """`nbytes` of values (`itemsize` each, 0: none) are exactly what a blob of `shape` holds."""
    if any(d < 0 for d in shape):
        raise CaffeError(f"{where}: a blob of shape {tuple(shape)}: the file is corrupted")
    if itemsize and nbytes % itemsize:
        raise CaffeError(
            f"{where}: {nbytes} bytes of {'float' if itemsize == 4 else 'double'} values, not a multiple of "
            f"{itemsize}: the file is corrupted"
        )
    count, needed = nbytes // itemsize if itemsize else 0, math.prod(shape)
    if count != needed:
        raise CaffeError(
            f"{where}: {count} values for a blob of shape {tuple(shape)} ({needed} values): the file is truncated or "
            "corrupted"
        )


def _layer(r: _Reader, start: int, end: int, v1: bool, index: int) -> tuple[str, str, list[tuple[int, int]]]:
    """A LayerParameter's (or V1LayerParameter's) name, type and where its blobs are (at most BLOBS_PER_LAYER)."""
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    name, kind, blobs = f"#{index}", "", []
    for number, wire, a, b, _ in r.fields(start, end, f"layer #{index}"):
        if number == name_field and wire == 2:
            name = r.text(a, b)
        elif number == type_field and v1 and wire == 0:  # V1: an enum
            kind = _V1_TYPES.get(a, f"V1 type {a}")
        elif number == type_field and not v1 and wire == 2:  # current: a string
            kind = r.text(a, b)
        elif number == blobs_field and wire == 2:
            if len(blobs) == BLOBS_PER_LAYER:
                raise CaffeError(
                    f"layer {name!r} has more than {BLOBS_PER_LAYER} blobs, where GoogLeNet's layers have "
                    f"{BLOBS_PER_LAYER} "
                    "(weights and biases): this is not bvlc_googlenet"
                )
            blobs.append((a, b))
        elif v1 and number == 1 and wire == 2:
            raise CaffeError(
                f"layer {name!r} is in Caffe's V0 format (before 2014)",
                fix="upgrade the file with Caffe's upgrade_net_proto_binary",
            )
    return name, kind, blobs


def parse_net(data: bytes | memoryview) -> tuple[str, list[CaffeLayer]]:
    """The file's format ("layer" or "V1 layers") and its layers that carry weights, in file order.

    Bounded by what GoogLeNet has, counted while reading: at most MAX_LAYERS layers, WEIGHTED_LAYERS of them with
    weights, BLOBS_PER_LAYER blobs each, MAX_BLOB_AXES axes and MAX_BLOB_VALUES values per blob, MAX_FIELDS fields.
    """
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    r = _Reader(buf)
    layers: list[CaffeLayer] = []
    formats: set[int] = set()
    count = 0
    for number, wire, a, b, _ in r.fields(0, len(buf), "top-level"):
        if number not in (100, 2) or wire != 2:  # only `layer` (current) and `layers` (V1) are read
            continue
        formats.add(number)
        if len(formats) == 2:
            raise CaffeError(
                "the file mixes current (layer) and V1 (layers) layers, which Caffe refuses: the file is corrupted"
            )
        count += 1
        if count > MAX_LAYERS:
            raise CaffeError(
                f"more than {MAX_LAYERS:,} layers, where BVLC's GoogLeNet has {TRAIN_VAL_LAYERS} (train_val.prototxt) "
                "and the "
                "split layers Caffe adds: this is not bvlc_googlenet"
            )
        name, kind, blobs = _layer(r, a, b, v1=number == 2, index=count)
        if not blobs:
            continue
        if len(layers) == WEIGHTED_LAYERS:
            raise CaffeError(
                f"layer {name!r} is layer {len(layers) + 1} with weights, more than GoogLeNet's {WEIGHTED_LAYERS}: "
                "this is not bvlc_googlenet"
            )
        layers.append(
            CaffeLayer(name, kind, [_blob(r, a, b, f"layer {name!r} blob {i}") for i, (a, b) in enumerate(blobs)])
        )
    if not layers:
        raise CaffeError(
            "the file holds no layers with weights: it is not a .caffemodel (a prototxt, an empty or a corrupted file?)"
        )
    return ("V1 layers" if formats == {2} else "layer"), layers


# ------------------------------------------------------------ GoogLeNet


def _expected_shapes() -> dict[str, torch.Size]:
    """The state dict shapes of the GoogLeNet BVLC trained (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        model = GoogLeNet(**{k: v for k, v in MODEL_ARGS.items() if k != "init"}, init="pytorch")
    return {k: v.shape for k, v in model.state_dict().items()}


def _shape_matches(stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-axis shape may pad the expected one with leading 1s."""
    if stored == expected:
        return True
    return len(stored) == 4 and len(expected) < 4 and stored == (1,) * (4 - len(expected)) + expected


def caffe_state_dict(layers: list[CaffeLayer]) -> dict[str, Tensor]:
    """GoogLeNet's state dict from the weighted layers of bvlc_googlenet; a one-line CaffeError names the first layer
    that differs."""
    shapes = _expected_shapes()
    state: dict[str, Tensor] = {}
    seen: set[str] = set()
    for layer in layers:
        name = layer.name
        if name not in CAFFE_LAYERS:
            raise CaffeError(
                f"layer {name!r} ({layer.type or 'no type'}, with weights) is not a layer of GoogLeNet: this is not "
                "bvlc_googlenet"
            )
        if name in seen:
            raise CaffeError(f"layer {name!r} appears twice with weights: this is not bvlc_googlenet")
        seen.add(name)
        module = CAFFE_LAYERS[name]
        wanted = "InnerProduct" if module == "fc" or module.endswith(("fc1.0", "fc2")) else "Convolution"
        if layer.type and layer.type != wanted:
            raise CaffeError(
                f"layer {name!r} is a {layer.type} layer but GoogLeNet's is a {wanted}: this is not bvlc_googlenet"
            )
        if len(layer.blobs) != 2:
            raise CaffeError(
                f"layer {name!r} has {len(layer.blobs)} blob(s) but GoogLeNet's has 2 (weights and biases): this is "
                "not bvlc_googlenet"
            )
        for what, blob in zip(("weight", "bias"), layer.blobs):
            expected = tuple(shapes[f"{module}.{what}"])
            if not _shape_matches(tuple(blob.shape), expected):
                raise CaffeError(
                    f"layer {name!r} has {what} shape {tuple(blob.shape)} but GoogLeNet needs {expected}: this is not "
                    "bvlc_googlenet"
                )
            state[f"{module}.{what}"] = blob.reshape(expected)
    missing = [name for name in CAFFE_LAYERS if name not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CaffeError(
            f"layer {missing[0]!r} of GoogLeNet is missing{more}: no layer of that name with weights: this is not "
            "bvlc_googlenet"
        )
    return {k: state[k] for k in shapes}  # in the model's own order


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise CaffeError(f"{path} does not exist or is not a file: pass the path of bvlc_googlenet.caffemodel")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CaffeError(
            f"{path} is {size:,} bytes, more than a bvlc_googlenet.caffemodel can be ({MAX_FILE_BYTES:,}: its "
            f"{GOOGLENET_PARAMETERS:,} parameters as doubles with their gradients, plus 16 MiB), refused without "
            f"reading it: {FIX}"
        )
    with path.open("rb") as f:
        data = f.read(size + 1)  # no more than stat said (read(n) allocates n bytes), and one to see it grow
    if len(data) != size:
        raise CaffeError(
            f"{path} changed while it was read ({size:,} bytes, then {len(data):,}): convert it once it is complete"
        )
    return data


def convert_caffemodel(path: str | Path) -> dict[str, Any]:
    """A googlenet checkpoint dict (see `checkpoint.save_checkpoint`) from a bvlc_googlenet .caffemodel."""
    path = Path(path)
    data = _read(path)
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    try:
        caffe_format, layers = parse_net(data)
        weights = caffe_state_dict(layers)
    except CaffeError as exc:
        raise CaffeError(f"{path}: {exc}: {exc.fix}") from None
    del data, layers  # the file's bytes and the blobs as read: only `weights` is kept
    # the 1000 ILSVRC 2012 names in Caffe's order (sorted synsets); no download
    from torchvision.models import (
        GoogLeNet_Weights,
    )

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
    """Convert `path` and save the checkpoint atomically to `output` (default: beside it, as .pt); print what was
    done."""
    path = Path(path)
    out = Path(output) if output is not None else path.with_suffix(".pt")
    if out.is_dir():
        out = out / path.with_suffix(".pt").name
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise CaffeError(f"--output {out} is the .caffemodel itself: choose another file name")
    state = convert_caffemodel(path)
    save_checkpoint(out, state)
    params = sum(t.numel() for t in state["model"].values())
    print(
        f"Converted {path} ({state['caffe_format']} format, {len(CAFFE_LAYERS)} weighted layers, {params:,} "
        f"parameters) to {out}"
    )
    if state["sha1_matches_release"]:
        print(f"sha1 {state['source_sha1']} matches the released bvlc_googlenet.caffemodel")
    else:
        print(
            f"sha1 {state['source_sha1']} does not match the released bvlc_googlenet.caffemodel "
            f"({BVLC_GOOGLENET_SHA1}): "
            "its layers and shapes are GoogLeNet's, but these are other weights (fine-tuned, re-saved or corrupted?)"
        )
    print(
        "Input as in Caffe: BGR, pixel values 0-255 minus the mean (B, G, R) = (104, 117, 123), 256 px resize, 224 x "
        "224 centre crop"
    )
    return out


def run_convert(args: argparse.Namespace) -> None:
    """`googlenet convert CAFFEMODEL [--output FILE]`."""
    main_convert(args.caffemodel, args.output)
