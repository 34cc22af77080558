"""The CUDA path, on a real GPU (marker `gpu`; skipped without CUDA). scripts/gpu_check.sh runs these first.

The decisions themselves (which precision auto picks, when a gradient scaler is used, cudnn.benchmark,
pinned memory, the NCCL backend) are unit-tested on the CPU by injecting the device's capabilities
(tests/test_runtime.py, tests/test_train.py); here they run for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import googlenet.train
from googlenet import checkpoint, runtime
from googlenet.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

QUICK = ["--epochs", "1", "--limit-train-batches", "8", "--limit-eval-batches", "2", "--device", "cuda", "--exist-ok"]


def train(project: Path, name: str, *extra: str) -> Path:
    assert main(["train", *QUICK, "--project", str(project), "--name", name, *extra]) == 0
    return project / name


def test_auto_picks_bf16_only_where_the_gpu_has_it_natively():
    dtype, said = runtime.resolve_amp("auto", torch.device("cuda"))
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert dtype == (torch.bfloat16 if native else torch.float16), said


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_a_cuda_run_trains_evaluates_and_resumes_exactly(tmp_path, monkeypatch, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no native bf16 on this GPU")
    argv = ["--epochs", "2", "--limit-train-batches", "4", "--deterministic", "--amp", amp]
    whole = train(tmp_path, "whole", *argv)
    last = checkpoint.load_checkpoint(whole / "weights" / "last.pt")
    assert (last.get("scaler") is not None) == (amp == "fp16")  # the gradient scaler's state travels with the run
    env = json.loads((whole / "env.json").read_text())
    assert env["device"].startswith("cuda") and amp in env["precision"]
    assert 0.0 <= json.loads((whole / "metrics.json").read_text())["splits"]["test"]["accuracy"] <= 1.0

    # Ctrl-C inside step 2 of epoch 2, then --resume: the same weights as the uninterrupted run
    step, steps = googlenet.train.train_step, []

    def interrupted_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 6:
            signal.raise_signal(signal.SIGINT)
        return step(*args, **kwargs)

    monkeypatch.setattr(googlenet.train, "train_step", interrupted_step)
    assert main(["train", *QUICK, *argv, "--project", str(tmp_path), "--name", "stopped"]) == 130
    monkeypatch.setattr(googlenet.train, "train_step", step)
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    resumed = checkpoint.load_checkpoint(tmp_path / "stopped" / "weights" / "last.pt")
    assert all(torch.equal(last["model"][k], resumed["model"][k]) for k in last["model"])


def test_compile_channels_last_and_cudnn_benchmark(tmp_path):
    run = train(tmp_path, "compiled", "--compile", "--channels-last")
    assert (run / "metrics.json").is_file()
    assert torch.backends.cudnn.benchmark  # on unless --deterministic


def test_one_process_torchrun_on_nccl(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "googlenet"]
    cmd += ["train", *QUICK, "--project", str(tmp_path), "--name", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "env.json").read_text())["world_size"] == 1


def test_predict_and_onnx_export_of_a_cuda_run(tmp_path, capsys):
    run = train(tmp_path, "p")
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    assert main(["predict", str(run), str(image), "--device", "cuda"]) == 0
    assert "digit.png" in capsys.readouterr().out
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert list(run.glob("weights/*.onnx"))
