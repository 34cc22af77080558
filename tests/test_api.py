"""The Python API in a few calls, as the README shows it: fit, load_model, classify, the preprocessing transform."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

import googlenet
from googlenet.data import batch_transform
from googlenet.data.datasets import _load_mnist


def test_fit_load_classify(tmp_path: Path, trained_run: Path):
    run = googlenet.fit(
        epochs=1, limit_train_batches=2, limit_eval_batches=1, device="cpu", project=str(tmp_path), name="api"
    )
    assert run == tmp_path / "api" and (run / "REPORT.md").is_file()

    model, meta = googlenet.load_model(trained_run)
    assert {"classes", "preprocess", "model_args", "config", "metrics"} <= set(meta)
    assert "optimizer" not in meta and "model" not in meta  # the description, not the training state
    assert meta["metrics"]["test"]["accuracy"] >= 0

    _, test = _load_mnist()
    images = test.images[:4]
    pre = googlenet.Preprocess.from_dict(meta["preprocess"])
    torch.testing.assert_close(pre(images), batch_transform(images, pre))
    from_tensor = googlenet.classify(model, meta, images, topk=3)
    Image.fromarray(images[0, 0].numpy(), mode="L").save(tmp_path / "digit.png")
    from_file = googlenet.classify(model, meta, [tmp_path / "digit.png"], topk=3)
    assert [p.classes for p in from_tensor][0] == from_file[0].classes and len(from_tensor) == 4
    assert abs(from_tensor[0].probabilities[0] - from_file[0].probabilities[0]) < 1e-5


def test_fit_refuses_settings_a_resume_would_ignore(tmp_path: Path):
    import pytest

    from googlenet.config import ConfigError

    with pytest.raises(ConfigError, match="epochs cannot apply"):
        googlenet.fit(resume=tmp_path / "exp", epochs=30)
