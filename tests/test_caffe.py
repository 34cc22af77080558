"""googlenet convert: BVLC's .caffemodel read without Caffe, checked against OpenCV's Caffe importer.

The released bvlc_googlenet.caffemodel cannot be downloaded here, so the tests
write their own .caffemodel files from random GoogLeNet weights (with the
small protobuf writer below, in the three layouts Caffe has used) and check
that (1) converting them gives back exactly those weights, (2) OpenCV 4, an
independent Caffe runtime, computes the same logits and auxiliary-head logits
from BVLC's prototxt and the file as the converted model does, and (3) other
networks, truncated files and random bytes are refused with one line.
"""

from __future__ import annotations

import hashlib
import math
import re
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor

from googlenet import caffe
from googlenet.caffe import (
    BVLC_GOOGLENET_SHA1,
    CAFFE_LAYERS,
    MAX_BLOB_VALUES,
    CaffeError,
    _expected_shapes,
    caffe_state_dict,
    convert_caffemodel,
    main_convert,
    parse_net,
)
from googlenet.checkpoint import load_model
from googlenet.data import Preprocess
from googlenet.errors import UserError
from googlenet.model import GoogLeNet

CAFFE_DIR = Path(__file__).parent / "data" / "caffe"  # BVLC's prototxt files, copied unchanged (see its README.md)
DEPLOY = CAFFE_DIR / "bvlc_googlenet_deploy.prototxt"
TRAIN_VAL = CAFFE_DIR / "bvlc_googlenet_train_val.prototxt"
needs_prototxt = pytest.mark.skipif(not DEPLOY.is_file(), reason=f"BVLC's prototxt files are not in {CAFFE_DIR}")

# ------------------------------------------------------------ a .caffemodel writer (protobuf wire format)

V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Data": 5, "Softmax": 20}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, payload: bytes | int) -> bytes:
    """A varint field (int payload) or a length-delimited one (bytes)."""
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def blob_bytes(t: Tensor, legacy_shape: bool) -> bytes:
    """BlobProto: shape (BlobShape, packed int64 dims) or Caffe's legacy num/channels/height/width, then packed float
    data."""
    shape = tuple(t.shape)
    if legacy_shape:
        header = b"".join(field(i + 1, d) for i, d in enumerate((1,) * (4 - len(shape)) + shape))
    else:
        header = field(7, field(1, b"".join(varint(d) for d in shape)))
    return header + field(5, t.detach().numpy().astype("<f4").tobytes())


def layer_bytes(name: str, kind: str, blobs: list[Tensor], v1: bool, legacy_shape: bool) -> bytes:
    encoded = [blob_bytes(b, legacy_shape) for b in blobs]
    if v1:  # V1LayerParameter: name 4, type 5 (enum), blobs 6
        return field(4, name.encode()) + field(5, V1_TYPES[kind]) + b"".join(field(6, b) for b in encoded)
    # LayerParameter: 1, 2, 7
    return field(1, name.encode()) + field(2, kind.encode()) + b"".join(field(7, b) for b in encoded)


def caffe_layers(state: dict[str, Tensor]) -> list[tuple[str, list[Tensor]]]:
    """GoogLeNet's state dict as Caffe's (layer name, [weights, biases]), in train_val.prototxt's order."""
    return [(name, [state[f"{module}.weight"], state[f"{module}.bias"]]) for name, module in CAFFE_LAYERS.items()]


def caffemodel_bytes(
    layers: dict[str, Tensor] | list[tuple[str, list[Tensor]]], v1: bool = False, legacy_shape: bool = False
) -> bytes:
    """A NetParameter as Caffe writes it: a data layer, the weighted layers, a softmax; `v1` for 2014's `layers`
    format."""
    if isinstance(layers, dict):
        layers = caffe_layers(layers)
    body = [layer_bytes("data", "Data", [], v1, legacy_shape)]
    for name, blobs in layers:
        kind = "InnerProduct" if blobs and blobs[0].dim() == 2 else "Convolution"
        body.append(layer_bytes(name, kind, blobs, v1, legacy_shape))
    body.append(layer_bytes("prob", "Softmax", [], v1, legacy_shape))
    return field(1, b"GoogleNet") + b"".join(field(2 if v1 else 100, layer) for layer in body)


def write_caffemodel(
    layers: dict[str, Tensor] | list[tuple[str, list[Tensor]]], path: Path, v1: bool = False, legacy_shape: bool = False
) -> Path:
    path.write_bytes(caffemodel_bytes(layers, v1, legacy_shape))
    return path


# ------------------------------------------------------------ fixtures


def random_googlenet(seed: int = 0) -> GoogLeNet:
    """GoogLeNet with random weights whose logits depend on the input: He init (scale kept through the ReLUs), random
    biases."""
    torch.manual_seed(seed)
    model = GoogLeNet(1000, 3, init="kaiming")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GoogLeNet:
    return random_googlenet()


@pytest.fixture(scope="module")
def caffemodel(model: GoogLeNet, tmp_path_factory) -> Path:
    """The random weights as a current-format .caffemodel (53 MB, like the released file)."""
    return write_caffemodel(model.state_dict(), tmp_path_factory.mktemp("caffe") / "random.caffemodel")


def assert_same_weights(state: dict[str, Tensor], model: GoogLeNet) -> None:
    own = model.state_dict()
    assert list(state) == list(own)
    for k, v in own.items():
        assert torch.equal(state[k], v), k


def check_message(msg: str, patterns: tuple[str, ...]) -> None:
    assert "\n" not in msg, msg
    for pattern in patterns:
        assert re.search(pattern, msg), (pattern, msg)


def one_line_error(path: Path, *patterns: str) -> None:
    """Converting the file fails with one line that starts with its path and matches each pattern."""
    with pytest.raises(CaffeError) as info:
        convert_caffemodel(path)
    assert str(info.value).startswith(str(path))
    check_message(str(info.value), patterns)


def refused(data: bytes, *patterns: str) -> None:
    """The same check on bytes in memory (spares the disk writing 53 MB files)."""
    with pytest.raises(CaffeError) as info:
        caffe_state_dict(parse_net(data)[1])
    check_message(str(info.value), patterns)


# ------------------------------------------------------------ layer names


@needs_prototxt
def test_layer_names_are_every_weighted_layer_of_bvlc_googlenet(model: GoogLeNet) -> None:
    blocks = prototxt_layers(TRAIN_VAL.read_text())
    weighted = [name for name, text in blocks if re.search(r'type: "(Convolution|InnerProduct)"', text)]
    assert list(CAFFE_LAYERS) == weighted
    modules = {k.rsplit(".", 1)[0] for k in model.state_dict()}
    assert sorted(CAFFE_LAYERS.values()) == sorted(modules)


# ------------------------------------------------------------ round trips


def test_round_trip_current_format(model: GoogLeNet, caffemodel: Path) -> None:
    state = convert_caffemodel(caffemodel)
    assert_same_weights(state["model"], model)
    assert state["caffe_format"] == "layer"
    assert state["model_args"] == {
        "num_classes": 1000,
        "in_channels": 3,
        "aux_logits": True,
        "dropout": 0.4,
        "dropout_aux": 0.7,
        "init": "caffe",
    }
    assert len(state["classes"]) == 1000 and state["classes"][0] == "tench"
    pre = Preprocess.from_dict(state["preprocess"])
    assert (pre.channel_order, pre.resize, pre.image_size, pre.in_channels) == ("BGR", 256, 224, 3)
    assert [round(m * 255, 9) for m in pre.mean] == [104, 117, 123] and [round(1 / s, 9) for s in pre.std] == [255] * 3
    assert state["source_sha1"] == hashlib.sha1(caffemodel.read_bytes()).hexdigest()
    assert state["sha1_matches_release"] is False


@pytest.mark.parametrize(
    "v1, legacy_shape", [(True, True), (False, True), (True, False)], ids=["v1-legacy", "legacy-shapes", "v1"]
)
def test_round_trip_other_formats(model: GoogLeNet, v1: bool, legacy_shape: bool) -> None:
    """2014's V1 `layers` with num/channels/height/width shapes (the released file's era), and each change alone."""
    caffe_format, layers = parse_net(caffemodel_bytes(model.state_dict(), v1=v1, legacy_shape=legacy_shape))
    assert_same_weights(caffe_state_dict(layers), model)
    assert caffe_format == ("V1 layers" if v1 else "layer")


def test_unpacked_and_double_values() -> None:
    """Protobuf readers must accept repeated numbers packed or not; Caffe writes doubles for Net<double>."""
    values = torch.arange(6, dtype=torch.float32)
    unpacked = field(7, field(1, 2) + field(1, 3)) + b"".join(
        varint(5 << 3 | 5) + np.float32(v).tobytes() for v in values.tolist()
    )
    doubles = field(7, field(1, b"\x02\x03")) + field(8, values.numpy().astype("<f8").tobytes())
    for blob in (unpacked, doubles):
        _, layers = parse_net(field(100, field(1, b"x") + field(7, blob)))
        assert torch.equal(layers[0].blobs[0], values.view(2, 3))


def test_main_convert_writes_a_loadable_checkpoint(model: GoogLeNet, caffemodel: Path, tmp_path: Path, capsys) -> None:
    out = main_convert(caffemodel, tmp_path / "out" / "googlenet.pt")
    printed = capsys.readouterr().out
    assert "does not match the released bvlc_googlenet.caffemodel" in printed and BVLC_GOOGLENET_SHA1 in printed
    loaded, meta = load_model(out)
    assert_same_weights(loaded.state_dict(), model)
    assert meta["source_sha1"] == hashlib.sha1(caffemodel.read_bytes()).hexdigest()
    with pytest.raises(CaffeError, match="the .caffemodel itself"):
        main_convert(caffemodel, caffemodel)


# ------------------------------------------------------------ OpenCV's Caffe runtime as the oracle


def prototxt_layers(text: str) -> list[tuple[str, str]]:
    """The top-level `layer { ... }` blocks of a prototxt as (name, text)."""
    blocks, depth, start = [], 0, None
    for match in re.finditer(r"\blayer\s*\{|\{|\}", text):
        if depth == 0 and match.group().startswith("layer"):
            start = match.start()
        depth += -1 if match.group() == "}" else 1
        if depth == 0 and start is not None:
            block = text[start : match.end()]
            blocks.append((re.search(r'name:\s*"([^"]+)"', block).group(1), block))
            start = None
    return blocks


def opencv_prototxt(tmp_path: Path, aux: bool) -> Path:
    """deploy.prototxt, with (aux) train_val's loss1/* and loss2/* layers but not its losses and accuracies."""
    text = DEPLOY.read_text()
    if aux:
        heads = [
            block
            for name, block in prototxt_layers(TRAIN_VAL.read_text())
            if name.startswith(("loss1/", "loss2/")) and not re.search(r'type: "(SoftmaxWithLoss|Accuracy)"', block)
        ]
        text += "\n" + "\n".join(heads) + "\n"
    path = tmp_path / ("with_aux.prototxt" if aux else "deploy.prototxt")
    path.write_text(text)
    return path


@torch.no_grad()
def ours(state: dict, x: Tensor) -> dict[str, Tensor]:
    """The converted model's eval logits and its auxiliary heads' (eval mode: no dropout), from the trunk's 4a and 4d
    maps."""
    net = GoogLeNet(**state["model_args"])
    net.load_state_dict(state["model"])
    net.eval()
    maps: dict[str, Tensor] = {}
    hooks = [
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out))
        for name in ("inception4a", "inception4d")
    ]
    logits = net(x).logits
    for hook in hooks:
        hook.remove()
    return {
        "loss1/classifier": net.aux1(maps["inception4a"]),
        "loss2/classifier": net.aux2(maps["inception4d"]),
        "loss3/classifier": logits,
    }


def max_relative_difference(theirs: np.ndarray, mine: Tensor) -> tuple[float, float]:
    diff = float(np.abs(theirs - mine.numpy()).max())
    return diff, diff / float(mine.abs().max())


@needs_prototxt
@pytest.mark.parametrize("layout", ["layer", "v1-legacy"])
def test_opencv_caffe_runtime_computes_the_same_logits(
    model: GoogLeNet, caffemodel: Path, tmp_path: Path, layout: str
) -> None:
    """OpenCV reads both layouts itself, so this also checks that the test writer writes real Caffe files."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe importer (OpenCV 5 dropped it): install opencv-python-headless<5")
    if layout == "v1-legacy":
        caffemodel = write_caffemodel(model.state_dict(), tmp_path / "v1.caffemodel", v1=True, legacy_shape=True)
    state = convert_caffemodel(caffemodel)
    # Caffe's input scale: 0-255 minus the mean
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 50
    expected = ours(state, x)
    logits = expected["loss3/classifier"]
    assert (logits[0] - logits[1]).abs().max() > 1  # logits that depend on the image, not only on the biases

    net = cv2.dnn.readNetFromCaffe(str(opencv_prototxt(tmp_path, aux=True)), str(caffemodel))
    net.setInput(x.numpy())
    names = list(expected)
    outputs = dict(zip(names, net.forward(names)))
    for name in names:
        diff, relative = max_relative_difference(outputs[name], expected[name])
        print(f"{name}: max |OpenCV - googlenet| = {diff:.2e} ({relative:.1e} of the largest logit)")
        assert relative < 1e-4, (name, diff)

    # the released deploy net as is
    deploy = cv2.dnn.readNetFromCaffe(str(opencv_prototxt(tmp_path, aux=False)), str(caffemodel))
    deploy.setInput(x.numpy())
    prob = deploy.forward("prob")
    assert np.abs(prob - torch.softmax(expected["loss3/classifier"], 1).numpy()).max() < 1e-5


@needs_prototxt
def test_predict_feeds_the_network_what_caffe_feeds_it(
    model: GoogLeNet, caffemodel: Path, tmp_path: Path, capsys
) -> None:
    """`googlenet predict` on an image file with the converted weights = OpenCV's Caffe net on Caffe's own input:
    BGR, 0-255 minus the mean (104, 117, 123), the 224 x 224 centre crop (of an image whose shorter side is already
    256)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe importer (OpenCV 5 dropped it): install opencv-python-headless<5")
    from PIL import Image

    from googlenet import cli

    # portrait-free: 256 rows, 300 columns
    rgb = np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    converted = tmp_path / "bvlc.pt"
    assert cli.main(["convert", str(caffemodel), "--output", str(converted)]) == 0
    capsys.readouterr()
    assert (
        cli.main(
            [
                "predict",
                str(converted),
                str(tmp_path / "photo.png"),
                "--topk",
                "5",
                "--format",
                "json",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    import json

    got = json.loads(capsys.readouterr().out)[0]["predictions"]

    bgr = rgb[16 : 16 + 224, 38 : 38 + 224, ::-1]  # the centre crop, channels reversed
    blob = cv2.dnn.blobFromImage(np.ascontiguousarray(bgr), 1.0, (224, 224), (104, 117, 123), swapRB=False, crop=False)
    net = cv2.dnn.readNetFromCaffe(str(opencv_prototxt(tmp_path, aux=False)), str(caffemodel))
    net.setInput(blob)
    prob = net.forward("prob")[0]
    classes = load_model(converted)[1]["classes"]
    top = np.argsort(-prob)[:5]
    assert [p["class"] for p in got] == [classes[i] for i in top]
    assert np.abs(np.array([p["probability"] for p in got]) - prob[top]).max() < 1e-5


# ------------------------------------------------------------ hostile and wrong files


def test_caffe_error_is_a_user_error() -> None:
    assert issubclass(CaffeError, UserError)  # the CLI prints it as one line, exit status 2


def test_another_network_is_refused_by_layer_name(tmp_path: Path) -> None:
    tiny = [("conv1", [torch.randn(4, 3, 3, 3), torch.randn(4)]), ("fc1", [torch.randn(10, 4), torch.randn(10)])]
    one_line_error(
        write_caffemodel(tiny, tmp_path / "tiny.caffemodel"),
        r"layer 'conv1' .*not a layer of GoogLeNet.*not bvlc_googlenet",
    )


def test_wrong_shape_missing_and_extra_layers_are_named(model: GoogLeNet) -> None:
    layers = caffe_layers(model.state_dict())
    fine_tuned = [(n, [torch.zeros(10, 1024), torch.zeros(10)] if n == "loss3/classifier" else b) for n, b in layers]
    refused(
        caffemodel_bytes(fine_tuned),
        r"layer 'loss3/classifier' has weight shape \(10, 1024\) but GoogLeNet needs \(1000, 1024\): this is not "
        r"bvlc_googlenet",
    )
    swapped = [
        (n, [b[0][:, :, 1:4, 1:4], b[1]] if n == "inception_4c/5x5" else b) for n, b in layers
    ]  # a 3x3 where BVLC has a 5x5
    refused(
        caffemodel_bytes(swapped, v1=True, legacy_shape=True),
        r"layer 'inception_4c/5x5' has weight shape \(64, 24, 3, 3\) .*\(64, 24, 5, 5\)",
    )
    missing = [(n, b) for n, b in layers if n != "inception_4c/5x5"]
    refused(caffemodel_bytes(missing), r"layer 'inception_4c/5x5' of GoogLeNet is missing")
    extra = [*layers[:-1], ("loss4/classifier", [torch.zeros(1000, 1024), torch.zeros(1000)])]  # in place of the last
    refused(caffemodel_bytes(extra), r"layer 'loss4/classifier' .*not a layer of GoogLeNet")
    refused(
        caffemodel_bytes([*layers, extra[-1]]),
        r"layer 'loss4/classifier' is layer 65 with weights, more than GoogLeNet's 64",
    )
    no_bias = [(n, b[:1] if n == "conv2/3x3" else b) for n, b in layers]
    refused(caffemodel_bytes(no_bias), r"layer 'conv2/3x3' has 1 blob")
    twice = [*layers[:-1], layers[0]]
    refused(caffemodel_bytes(twice), r"layer 'conv1/7x7_s2' appears twice")


def test_truncated_file(caffemodel: Path, tmp_path: Path) -> None:
    data = caffemodel.read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    one_line_error(
        path, r"the file is truncated or corrupted: top-level field 100 declares \d+ bytes but only \d+ remain"
    )
    for end in (1, 3, 100, len(data) - 1):  # inside the first key, the first layer, a blob, the last layer
        refused(data[:end], r"truncated|not a \.caffemodel")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "random.caffemodel"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096 << seed, dtype=np.uint8).tobytes())
    one_line_error(path)


def test_hostile_sizes_are_refused_before_allocating(tmp_path: Path) -> None:
    huge_layer = varint(100 << 3 | 2) + varint(1 << 62) + b"\0" * 16
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(huge_layer)
    one_line_error(path, r"declares 4611686018427387904 bytes but only 16 remain")
    # A blob whose shape promises 2^60 values but holds four: refused by counting, nothing allocated from the shape.
    path.write_bytes(
        field(100, field(1, b"conv1/7x7_s2") + field(7, field(7, field(1, varint(1 << 60))) + field(5, b"\0" * 16)))
    )
    one_line_error(path, r"layer 'conv1/7x7_s2' blob 0: 4 values for a blob of shape \(1152921504606846976,\)")
    path.write_bytes(field(100, field(1, b"x") + field(7, field(7, field(1, varint((1 << 64) - 1))))))  # dim -1
    one_line_error(path, r"shape \(-1,\)")
    path.write_bytes(b"\xff" * 11)
    one_line_error(path, "longer than 10 bytes")
    big = tmp_path / "big.caffemodel"
    with big.open("wb") as f:  # sparse: costs no disk space
        f.truncate((1 << 30) + 1)
    one_line_error(big, "refused without reading it")
    one_line_error(tmp_path / "absent.caffemodel", "does not exist")


def test_not_a_caffemodel(tmp_path: Path) -> None:
    for name, data in {
        "empty": b"",
        "prototxt": DEPLOY.read_bytes() if DEPLOY.is_file() else b'name: "GoogleNet"\n',
    }.items():
        path = tmp_path / f"{name}.caffemodel"
        path.write_bytes(data)
        one_line_error(path)


def test_mutated_files_give_only_caffe_errors(tmp_path: Path) -> None:
    """Random byte changes of a small valid file: every outcome is a one-line CaffeError, never another exception."""
    rng = np.random.default_rng(0)
    good = bytearray(
        write_caffemodel(
            [("conv1", [torch.randn(2, 3, 1, 1), torch.randn(2)])],
            tmp_path / "good.caffemodel",
            v1=True,
            legacy_shape=True,
        ).read_bytes()
    )
    path = tmp_path / "mutated.caffemodel"
    for _ in range(300):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), rng.integers(1, 4)):
            data[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data[: rng.integers(1, len(data) + 1)]))
        one_line_error(path)


def test_cli_convert(caffemodel: Path, tmp_path: Path, capsys) -> None:
    """`googlenet convert FILE [--output FILE]`: exit status 0, or 2 with one line naming the problem."""
    from googlenet import cli

    out = tmp_path / "converted.pt"
    assert cli.main(["convert", str(caffemodel), "--output", str(out)]) == 0
    assert "does not match the released bvlc_googlenet.caffemodel" in capsys.readouterr().out and out.is_file()
    tiny = write_caffemodel([("conv1", [torch.randn(4, 3, 3, 3), torch.randn(4)])], tmp_path / "tiny.caffemodel")
    assert cli.main(["convert", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("googlenet convert: error: ") and "layer 'conv1'" in err, err
    assert not tiny.with_suffix(".pt").exists()


# ------------------------------------------------------------ hostile files: bounded by what GoogLeNet has (issue 29)


def conv1(*blobs: bytes, name: bytes = b"conv1/7x7_s2") -> bytes:
    """A current-format layer with these BlobProto payloads."""
    return field(100, field(1, name) + field(2, b"Convolution") + b"".join(field(7, b) for b in blobs))


FLOAT, DOUBLE = varint(5 << 3 | 5), varint(8 << 3 | 1)  # the keys of one unpacked float / double value


class Hostile(NamedTuple):
    id: str
    make: Callable[[], bytes]  # the file's bytes
    expected: str  # a regular expression the one-line error must match


# Each is at most 19 MB; the largest issue 29 reported (20-200 MB) cost 3.5 GB to over 4 GB and minutes.
HOSTILE_FILES = [
    Hostile(
        "repeated-tiny-nested",
        lambda: field(100, field(7, b"")) * 2_000_000,
        r"layer '#65' is layer 65 with weights, more than GoogLeNet's 64: this is not bvlc_googlenet",
    ),
    Hostile(
        "many-layers",
        lambda: field(100, field(1, b"relu")) * 1_500_000,
        r"more than 1,000 layers, where BVLC's GoogLeNet has 166",
    ),
    Hostile(
        "many-blobs",
        lambda: field(100, field(1, b"conv1/7x7_s2") + field(7, b"") * 3_000_000),
        r"layer 'conv1/7x7_s2' has more than 2 blobs, where GoogLeNet's layers have 2 \(weights and biases\)",
    ),
    Hostile(
        "packed-dims",
        lambda: conv1(field(7, field(1, b"\x01" * 10_000_000))),
        r"layer 'conv1/7x7_s2' blob 0: a blob shape with more than 4 axes, where GoogLeNet's blobs have at most 4",
    ),
    Hostile(
        "unpacked-dims", lambda: conv1(field(7, field(1, 1) * 5_000_000)), r"blob 0: a blob shape with more than 4 axes"
    ),
    Hostile(
        "repeated-shapes",
        lambda: conv1(field(7, field(1, 1)) * 2_000_000),
        r"blob 0: a blob shape with more than 4 axes",
    ),
    Hostile(
        "unpacked-floats",
        lambda: conv1(field(7, field(1, b"\x01")) + (FLOAT + b"\0" * 4) * 2_400_000),
        r"blob 0: more than 2,097,152 values, the most a blob of GoogLeNet holds \(loss1/fc's and loss2/fc's 1024 x "
        r"2048",
    ),
    Hostile(
        "unpacked-doubles",
        lambda: conv1((DOUBLE + b"\0" * 8) * (MAX_BLOB_VALUES + 1)),
        r"blob 0: more than 2,097,152 values",
    ),
    Hostile(
        "packed-floats",
        lambda: conv1(field(5, b"\0" * 4 * (MAX_BLOB_VALUES + 1))),
        r"blob 0: more than 2,097,152 values",
    ),
    Hostile("floats-in-pieces", lambda: conv1(field(5, b"\0" * 4096) * 2100), r"blob 0: more than 2,097,152 values"),
    Hostile(
        "floats-between-fields",
        lambda: conv1((FLOAT + b"\0" * 4 + field(15, 0)) * 1_000_000),
        r"more than 100,000 protobuf fields in its layers and blobs, where bvlc_googlenet.caffemodel has a few "
        r"thousand",
    ),
    Hostile("many-fields", lambda: field(1, b"net") + field(5, 1) * 5_000_000, r"more than 100,000 protobuf fields"),
    Hostile(
        "many-fields-in-a-layer",
        lambda: field(100, field(1, b"x") + field(3, b"top") * 2_000_000),
        r"more than 100,000 protobuf fields",
    ),
    Hostile(
        "shape-vs-data",
        lambda: conv1(field(7, field(1, b"\x02\x03")) + field(5, b"\0" * 20)),
        r"blob 0: 5 values for a blob of shape \(2, 3\) \(6 values\): the file is truncated or corrupted",
    ),
    Hostile(
        "legacy-shape-vs-data",
        lambda: conv1(field(1, 64) + field(2, 3) + field(3, 7) + field(4, 7) + field(5, b"\0" * 4 * 1000)),
        r"blob 0: 1000 values for a blob of shape \(64, 3, 7, 7\) \(9408 values\)",
    ),
    Hostile(
        "truncated-varint",
        lambda: conv1(field(7, field(1, b"\x02")) + field(5, b"\0" * 8)) + varint(100 << 3 | 2) + b"\xff\xff\xff",
        r"the file is truncated or not a \.caffemodel: it ends inside a number \(top-level\)",
    ),
    Hostile(
        "truncated-key-in-a-blob", lambda: conv1(b"\x80"), r"it ends inside a number \(layer 'conv1/7x7_s2' blob 0\)"
    ),
    Hostile(
        "length-past-the-end",
        lambda: varint(100 << 3 | 2) + varint(10**7) + b"\0" * 100,
        r"top-level field 100 declares 10000000 bytes but only 100 remain",
    ),
    Hostile(
        "length-past-the-layer",
        lambda: field(100, field(1, b"x") + varint(7 << 3 | 2) + varint(5000) + b"\0" * 10) + b"\0" * 10_000,
        r"layer #1 field 7 declares 5000 bytes but only 10 remain",
    ),
    Hostile(
        "long-name", lambda: conv1(b"", b"", b"", name=b"n" * 10_000_000), r"layer 'n{256}\.\.\.' has more than 2 blobs"
    ),
    Hostile(
        "mixed-formats",
        lambda: field(2, field(4, b"x")) + field(100, field(1, b"y")),
        r"mixes current \(layer\) and V1 \(layers\) layers",
    ),
]


@pytest.mark.parametrize("case", HOSTILE_FILES, ids=[c.id for c in HOSTILE_FILES])
def test_hostile_file_is_refused_in_bounded_time_and_memory(case: Hostile, tmp_path: Path) -> None:
    """One line naming the problem and the fix, in well under a second per MB, using at most twice the file's size
    (the file's bytes, read whole, and what is decoded from them) plus a little: tracemalloc counts Python's and
    numpy's allocations, ru_maxrss the process's peak."""
    path = tmp_path / f"{case.id}.caffemodel"
    path.write_bytes(case.make())
    size = path.stat().st_size
    assert size < 20_000_000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    start = time.perf_counter()
    try:
        one_line_error(
            path,
            case.expected,
            r": convert BVLC's bvlc_googlenet\.caffemodel \(53\.5 MB; download it again if this copy is damaged\)$",
        )
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss
    print(
        f"{case.id}: {size / 1e6:.1f} MB file, {seconds:.2f} s, tracemalloc peak {peak / 1e6:.1f} MB, peak RSS grew "
        f"{grown / 1e6:.1f} MB"
    )
    assert peak < 2 * size + (16 << 20), peak
    assert grown < 200 << 20, grown
    assert seconds < 5, seconds


def test_the_bounds_are_googlenets() -> None:
    shapes = _expected_shapes()
    assert caffe.GOOGLENET_PARAMETERS == sum(math.prod(s) for s in shapes.values())
    assert caffe.WEIGHTED_LAYERS == len(CAFFE_LAYERS)
    assert caffe.MAX_BLOB_VALUES == max(math.prod(s) for s in shapes.values()) == math.prod(shapes["aux1.fc1.0.weight"])
    assert caffe.MAX_BLOB_AXES == max(len(s) for s in shapes.values())
    assert caffe.MAX_FILE_BYTES == 16 * caffe.GOOGLENET_PARAMETERS + (16 << 20)


@needs_prototxt
def test_the_layer_bound_is_train_vals() -> None:
    assert (
        caffe.TRAIN_VAL_LAYERS == len(prototxt_layers(TRAIN_VAL.read_text()))
        and caffe.MAX_LAYERS >= 5 * caffe.TRAIN_VAL_LAYERS
    )


def test_the_bounds_admit_googlenet_in_doubles_and_unpacked(model: GoogLeNet) -> None:
    """The bounds refuse only what GoogLeNet cannot have: its weights as doubles and as one field per value are read."""
    layers = caffe_layers(model.state_dict())
    doubles = b"".join(
        field(
            100,
            field(1, name.encode())
            + b"".join(
                field(
                    7, field(7, field(1, b"".join(varint(d) for d in b.shape))) + field(8, b.double().numpy().tobytes())
                )
                for b in blobs
            ),
        )
        for name, blobs in layers
    )
    assert_same_weights(caffe_state_dict(parse_net(doubles)[1]), model)
    blobs = dict(layers)["loss1/fc"]  # the largest blob, 2,097,152 values, here one field each

    def unpacked(t: Tensor) -> bytes:
        records = np.empty((t.numel(), 5), np.uint8)
        records[:, 0], records[:, 1:] = FLOAT[0], t.numpy().astype("<f4").reshape(-1, 1).view(np.uint8)
        return field(7, field(1, b"".join(varint(d) for d in t.shape))) + records.tobytes()

    data = field(100, field(1, b"loss1/fc") + b"".join(field(7, unpacked(t)) for t in blobs))
    start = time.perf_counter()
    (layer,) = parse_net(data)[1]
    assert time.perf_counter() - start < 2
    assert all(torch.equal(a, b) for a, b in zip(layer.blobs, blobs))


def test_a_file_larger_than_googlenet_can_be_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.caffemodel"
    with big.open("wb") as f:  # sparse: costs no disk space
        f.truncate(caffe.MAX_FILE_BYTES + 1)
    one_line_error(
        big,
        r"is 230,829,697 bytes, more than a bvlc_googlenet\.caffemodel can be \(230,829,696: its 13,378,280 parameters "
        r"as doubles",
        "refused without reading it",
    )


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_file_that_changes_while_read() -> None:
    """/proc files say they have 0 bytes and then give some: what a file still being written (downloaded) looks like."""
    with pytest.raises(
        CaffeError,
        match=r"/proc/self/status changed while it was read \(0 bytes, then 1\): convert it once it is complete",
    ):
        convert_caffemodel("/proc/self/status")
