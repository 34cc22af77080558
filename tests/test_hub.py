"""hubconf.py: torch.hub.load works offline from this repository, installed or not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import googlenet
from googlenet.cli import main

REPO = Path(__file__).resolve().parents[1]


def hub_load(**kwargs):
    return torch.hub.load(str(REPO), "googlenet", source="local", trust_repo=True, **kwargs)


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "weights" / "best.pt"


def test_builds_the_model_from_keywords():
    model = hub_load(num_classes=10, in_channels=1, aux_logits=False)
    assert isinstance(model, googlenet.GoogLeNet)
    assert model.fc.out_features == 10 and model.conv1[0].in_channels == 1 and model.aux1 is None
    assert model.eval()(torch.zeros(2, 1, 32, 32)).logits.shape == (2, 10)


def test_pretrained_without_checkpoint_says_what_to_do():
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        hub_load(pretrained=True)


def test_loads_a_checkpoint_and_a_safetensors_export(checkpoint, tmp_path, capsys):
    expected, _ = googlenet.load_model(checkpoint)
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(checkpoint), "--format", "safetensors", "--output", str(exported)]) == 0
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for path in (checkpoint, exported):
            model = hub_load(checkpoint=str(path))
            assert not model.training
            assert torch.equal(model(x).logits, expected(x).logits)
    with pytest.raises(TypeError, match="fixes the architecture"):
        hub_load(checkpoint=str(checkpoint), num_classes=3)


def test_works_from_a_clone_that_is_not_installed(tmp_path):
    # A copy of the repository's code elsewhere: hubconf must import googlenet
    # from its own src/, not from the installed (editable) package.
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "hubconf.py", clone / "hubconf.py")
    shutil.copytree(
        REPO / "src" / "googlenet",
        clone / "src" / "googlenet",
        ignore=shutil.ignore_patterns("datasets", "__pycache__"),
    )
    script = textwrap.dedent(
        f"""
        import torch
        model = torch.hub.load({str(clone)!r}, "googlenet", source="local", num_classes=4)
        import googlenet
        assert googlenet.__file__.startswith({str(clone / "src")!r}), googlenet.__file__
        print(type(model).__name__, model.fc.out_features)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["GoogLeNet", "4"]
