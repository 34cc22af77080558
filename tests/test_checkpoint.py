"""Checkpoints: atomic saves, safe loading (no unpickled code), clear errors for files that are not ours.

Everything here runs in-process on synthetic checkpoints (no training), so it is fast.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import os
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_state, model_args

import googlenet
from googlenet import files
from googlenet.checkpoint import CheckpointError, load_checkpoint, load_weights, model_from_checkpoint, save_checkpoint
from googlenet.model import GoogLeNet

SRC = Path(googlenet.__file__).parent


@pytest.fixture(scope="module")
def state() -> dict:
    return checkpoint_state()


@pytest.fixture
def saved(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "run" / "weights" / "last.pt"
    save_checkpoint(path, state)
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ atomic writes


class DiskFull(OSError):
    pass


def test_round_trip(saved: Path, state: dict):
    loaded = load_checkpoint(saved)
    assert loaded["format_version"] == 1 and loaded["classes"] == state["classes"]
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    model = model_from_checkpoint(loaded)
    assert isinstance(model, GoogLeNet) and model.num_classes == 10
    # a run directory resolves to its checkpoint
    assert load_checkpoint(saved.parent.parent)["epoch"] == 1


@pytest.mark.parametrize(
    "failure", [DiskFull(28, "No space left on device"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"]
)
def test_failed_save_keeps_the_previous_checkpoint_and_no_temp_file(saved: Path, state: dict, monkeypatch, failure):
    before = saved.read_bytes()
    real_save = torch.save
    written = []

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])  # part of the file reached the disk
        written.append(Path(f))
        raise failure

    monkeypatch.setattr(torch, "save", half_then_fail)
    # a full disk becomes the one-line error naming the file (files.DiskFullError); Ctrl-C stays Ctrl-C
    with pytest.raises(
        files.DiskFullError if isinstance(failure, OSError) else type(failure),
        match="no space left on the device at .*last.pt" if isinstance(failure, OSError) else None,
    ):
        save_checkpoint(saved, {**state, "epoch": 2})
    assert written and written[0] != saved  # the partial file was a temporary one beside it
    assert saved.read_bytes() == before
    assert listing(saved.parent) == ["last.pt"]
    assert load_checkpoint(saved)["epoch"] == 1


def test_failed_text_write_keeps_the_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "results.csv"
    files.atomic_write_text(path, "epoch\n1\n")

    def boom(tmp: Path) -> None:
        tmp.write_text("epoch\n1\n2")  # partial
        raise DiskFull(28, "No space left on device")

    with pytest.raises(files.DiskFullError, match="no space left on the device at .*results.csv: free space"):
        files.atomic_save(path, boom)
    assert path.read_text() == "epoch\n1\n"
    assert listing(tmp_path) == ["results.csv"]


WRITE_CALLS = {"save", "savefig", "write_text", "write_bytes", "dump", "to_csv", "imsave"}
ATOMIC = {"atomic_save", "atomic_path", "atomic_write_text", "atomic_write_bytes", "save_checkpoint"}


def non_atomic_writes(source: str) -> list[int]:
    """Lines that write a file other than through files.atomic_* (calls lexically inside one are fine)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def called_name(call: ast.Call) -> str:
        f = call.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""

    def inside_atomic(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.Call) and called_name(node) in ATOMIC:
                return True
            if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call) and called_name(i.context_expr) in ATOMIC for i in node.items
            ):
                return True
            if isinstance(node, ast.FunctionDef) and node.name in ATOMIC:
                return True
        return False

    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = called_name(node)
        writes = name in WRITE_CALLS
        if name == "open":
            mode = (
                node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            )
            writes = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
        to_tmp = any(isinstance(a, ast.Name) and a.id == "tmp" for a in node.args)  # a temporary path handed in
        if writes and not to_tmp and not inside_atomic(node):
            bad.append(node.lineno)
    return bad


NOT_RUN_FILES = {
    "files.py",  # where the atomic writes are made
    "data/stream.py",  # make_jpeg_folder: the benchmark's synthetic JPEGs, in a temporary folder of its own
}
WRITERS = [m for m in (p.relative_to(SRC).as_posix() for p in sorted(SRC.rglob("*.py"))) if m not in NOT_RUN_FILES]


@pytest.mark.parametrize("module", WRITERS)
def test_run_files_are_written_atomically(module: str):
    """Checkpoints, results.csv, config.yaml, env.json, metrics, plots, the report and exports: every module writes
    through files.atomic_* (files.py is where those are made)."""
    assert non_atomic_writes((SRC / module).read_text()) == []


def test_the_atomic_write_scan_finds_plain_writes():
    assert non_atomic_writes("import torch\ntorch.save(x, 'a.pt')\nopen('r.csv', 'w')\nfig.savefig(p)\n") == [2, 3, 4]
    assert (
        non_atomic_writes("atomic_save(p, lambda t: torch.save(x, t))\nwith atomic_path(p) as t:\n    open(t, 'wb')\n")
        == []
    )


# ------------------------------------------------------------------ safe loading


class Payload:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def test_pickled_code_is_refused_without_running(tmp_path: Path, state: dict):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({**state, "extra": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused.*exec.*nothing in it was run"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="refused"):
        googlenet.load_model(evil)
    assert not marker.exists()
    # the payload is live: a full unpickle does run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_pickled_payload_via_os_system_is_refused(tmp_path: Path, state: dict):
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    evil = tmp_path / "evil.pt"
    torch.save({**state, "extra": Shell()}, evil)
    with pytest.raises(CheckpointError, match="refused.*system"):
        load_checkpoint(evil)
    assert not marker.exists()


def hostile_bytes(good: bytes) -> dict[str, bytes]:
    rng = __import__("random").Random(0)
    return {
        "random": rng.randbytes(4096),
        "empty": b"",
        "text": b"hello, I am not a checkpoint\n",
        "truncated": good[: len(good) // 2],
        "truncated-head": good[:100],
        "gzip": gzip.compress(good[:20000]),
        "corrupted-middle": good[:3000] + rng.randbytes(2000) + good[5000:],
        "idx-huge-dims": bytes([0, 0, 8, 3]) + (0xFFFFFFFF).to_bytes(4, "big") * 3,
    }


@pytest.mark.parametrize("kind", list(hostile_bytes(b"x" * 10000)))
def test_hostile_bytes_are_a_clean_checkpoint_error(tmp_path: Path, saved: Path, kind: str):
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(hostile_bytes(saved.read_bytes())[kind])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "corrupted" in msg or "truncated" in msg or "not a googlenet checkpoint" in msg
    assert "refused" not in msg  # corruption is not reported as a security refusal


def test_missing_file_and_empty_run_directory(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no weights/best.pt or weights/last.pt"):
        load_checkpoint(tmp_path)


def test_other_files_are_not_googlenet_checkpoints(tmp_path: Path):
    tv = pytest.importorskip("torchvision")
    bare = tmp_path / "torchvision_googlenet.pt"
    torch.save(
        tv.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=10).state_dict(), bare
    )
    with pytest.raises(CheckpointError, match="not a googlenet checkpoint.*pass weights/best.pt"):
        load_checkpoint(bare)
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointError, match="not a googlenet checkpoint"):
        load_checkpoint(listed)
    newer = tmp_path / "newer.pt"
    torch.save({"model": {}, "model_args": {}, "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="newer googlenet"):
        load_checkpoint(newer)


def test_torchvision_weights_in_a_googlenet_wrapper(tmp_path: Path, state: dict):
    tv = pytest.importorskip("torchvision")
    path = tmp_path / "wrapped.pt"
    weights = tv.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=10).state_dict()
    save_checkpoint(path, {**state, "model": weights})
    with pytest.raises(CheckpointError, match="does not hold this architecture's weights"):
        model_from_checkpoint(load_checkpoint(path))


@pytest.mark.parametrize(
    ("num_classes", "in_channels", "what"), [(5, 1, "fc"), (10, 3, "conv1")], ids=["class-count", "channel-count"]
)
def test_shape_mismatch_names_the_layer_and_the_fix(state: dict, num_classes: int, in_channels: int, what: str):
    model = GoogLeNet(**model_args(num_classes, in_channels))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(model, state["model"])
    msg = str(info.value)
    assert what in msg and "expected" in msg and "class count or channel count" in msg and "\n" not in msg
    # the model was left untouched rather than half loaded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "edit",
    [{"num_classes": -1}, {"num_classes": "ten"}, {"colour": True}, {"in_channels": 0}],
    ids=["negative", "string", "unknown-key", "zero-channels"],
)
def test_unusable_model_arguments(tmp_path: Path, state: dict, edit: dict):
    path = tmp_path / "edited.pt"
    save_checkpoint(path, {**state, "model_args": {**state["model_args"], **edit}})
    with pytest.raises(CheckpointError, match="unusable model arguments"):
        model_from_checkpoint(load_checkpoint(path))


def test_weights_that_are_not_tensors(tmp_path: Path, state: dict):
    path = tmp_path / "strings.pt"
    save_checkpoint(path, {**state, "model": {k: "x" for k in state["model"]}})
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        model_from_checkpoint(load_checkpoint(path))


def test_a_checkpoint_written_before_the_redesign_still_loads(tmp_path: Path, test_data_dir: Path):
    """tests/data/checkpoint_format1.pt.gz: a best.pt written at commit 85e043f (before model.py held only the
    network), its weights replaced by a compressible pattern; the logits that code computed are stored beside it."""
    import json

    path = tmp_path / "best.pt"
    path.write_bytes(gzip.decompress((test_data_dir / "checkpoint_format1.pt.gz").read_bytes()))
    expected = json.loads((test_data_dir / "checkpoint_format1_logits.json").read_text())
    model, meta = googlenet.load_model(path)
    assert meta["classes"] == [str(i) for i in range(10)] and meta["model_args"]["num_classes"] == 10
    assert list(model.state_dict()) == list(GoogLeNet(10, 1).state_dict())  # the parameter names of today's network
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, torch.tensor(expected["logits"]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            googlenet.accelerate(model)(x).logits, torch.tensor(expected["logits"]), rtol=1e-4, atol=1e-5
        )
