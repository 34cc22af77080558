"""googlenet export: each format reloads with its own runtime and reproduces the checkpoint's model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import googlenet
from googlenet.checkpoint import CheckpointError, load_model, load_safetensors
from googlenet.cli import main
from googlenet.export import PT2_METADATA_FILE


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "weights" / "best.pt"


@pytest.fixture(scope="module")
def reference(checkpoint: Path):
    """The checkpoint's eval-mode model (with its auxiliary heads) and its metadata."""
    return load_model(checkpoint)


def batch(state: dict, n: int) -> torch.Tensor:
    pre = state["preprocess"]
    return torch.randn(
        n, pre["in_channels"], pre["image_size"], pre["image_size"], generator=torch.Generator().manual_seed(n)
    )


@torch.inference_mode()
def expected_logits(reference, n: int) -> torch.Tensor:
    model, state = reference
    return model(batch(state, n)).logits


def export(capsys, checkpoint: Path, fmt: str, output: Path | None = None) -> str:
    argv = ["export", str(checkpoint), "--format", fmt] + (["--output", str(output)] if output else [])
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Max |difference|" in out.out and out.err == ""
    return out.out


def assert_metadata(meta: dict, state: dict) -> None:
    assert meta["classes"] == state["classes"]
    assert meta["preprocess"] == state["preprocess"]
    assert meta["model_args"] == {**state["model_args"], "aux_logits": False}


def test_safetensors_round_trip(capsys, checkpoint, reference, tmp_path):
    path = tmp_path / "model.safetensors"
    export(capsys, checkpoint, "safetensors", path)
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
        keys = list(f.keys())
    assert not any(k.startswith(("aux1.", "aux2.")) for k in keys)  # inference network only
    assert json.loads(raw["classes"]) == reference[1]["classes"]  # str -> str metadata holds JSON

    model, meta = googlenet.load_model(path)  # the package's one-call loader dispatches on the suffix
    assert not model.training and model.aux1 is None
    assert_metadata(meta, reference[1])
    with torch.inference_mode():
        for n in (1, 4):
            assert torch.equal(model(batch(reference[1], n)).logits, expected_logits(reference, n))


def test_safetensors_default_output_is_beside_the_checkpoint(capsys, checkpoint):
    out = export(capsys, checkpoint, "safetensors")
    path = checkpoint.with_suffix(".safetensors")
    assert str(path) in out and path.is_file()
    path.unlink()  # leave the shared run as the other modules expect it


def test_pt2_round_trip(capsys, checkpoint, reference, tmp_path):
    path = tmp_path / "model.pt2"
    export(capsys, checkpoint, "pt2", path)
    extra = {PT2_METADATA_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    assert_metadata(json.loads(extra[PT2_METADATA_FILE]), reference[1])
    with torch.inference_mode():
        for n in (1, 5):  # neither is the tracing batch: the batch axis is dynamic
            assert program.module()(batch(reference[1], n)) == pytest.approx(expected_logits(reference, n), abs=1e-4)


@pytest.mark.slow
def test_onnx_round_trip(capsys, checkpoint, reference, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    export(capsys, checkpoint, "onnx", path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]  # just the logits, no aux outputs
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert_metadata(meta, reference[1])
    for n in (1, 5):
        got = torch.from_numpy(session.run(None, {"images": batch(reference[1], n).numpy()})[0])
        assert got == pytest.approx(expected_logits(reference, n), abs=1e-4)


def test_onnx_without_the_extra_is_a_one_line_error(capsys, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert main(["export", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip() == "googlenet export: error: ONNX export needs onnxruntime: install the onnx extra: "
        "pip install 'googlenet[onnx]'"
    )
    assert not list(tmp_path.iterdir())  # no file, not even a temporary one


def test_output_folder_and_unwritable_output(capsys, checkpoint, tmp_path):
    export(capsys, checkpoint, "safetensors", tmp_path)  # a folder: the checkpoint's name inside it
    assert (tmp_path / "best.safetensors").is_file()
    (tmp_path / "a_file").write_text("")
    assert (
        main(
            [
                "export",
                str(checkpoint),
                "--format",
                "safetensors",
                "--output",
                str(tmp_path / "a_file" / "m.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("googlenet export: error: cannot write") and len(err.strip().splitlines()) == 1


def test_refuses_to_overwrite_the_checkpoint(capsys, checkpoint):
    assert main(["export", str(checkpoint), "--format", "safetensors", "--output", str(checkpoint)]) == 2
    assert "is the checkpoint itself" in capsys.readouterr().err


def test_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    assert main(["export", str(tmp_path / "nope.pt"), "--format", "pt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("googlenet export: error: ") and "does not exist" in err and "Traceback" not in err


def test_load_safetensors_refuses_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no googlenet metadata"):
        load_safetensors(foreign)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_safetensors(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_safetensors(tmp_path / "missing.safetensors")
