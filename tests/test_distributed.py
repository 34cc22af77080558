"""torchrun: DistributedDataParallel on the CPU (gloo) matches one process, and resumes exactly.

`python -m torch.distributed.run` is the `torchrun` command, run with this
interpreter. Every run is tiny (3 batches of 16 per epoch, 2 epochs) with
OMP_NUM_THREADS=1, so two processes fit on a 2-core machine. Each process
spends seconds importing torch before any work, so the one-process reference
runs in this process, the two-process run it is compared with is also the
multi-node launch (two launchers joined by c10d rendezvous), and one interrupted
run is stopped twice.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import one_thread_here

from googlenet import distributed as dist_utils
from googlenet.cli import main
from googlenet.model import GoogLeNet

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
BASE = [
    "--epochs", "2", "--limit-train-batches", "3", "--batch-size", "16",
    "--limit-eval-batches", "3", "--eval-batch-size", "17",  # 51 images: unequal shards (26 and 25)
    "--deterministic", "--average", "ema", "--device", "cpu", "--project", "P",
    "--no-plots",  # weights, CSV and JSON are compared: no figures to draw
    "--amp", "off",  # fp32 on every processor: the comparisons below are at float32's rounding, bf16's is 1e-2
]  # fmt: skip
# The same mean gradient from 1 x 16 or 2 x 8 images needs the same images and no per-process randomness;
# SGD keeps float-rounding differences as small as they start (Adam divides them by tiny second moments).
EQUIVALENT = [
    *BASE, "--dropout", "0", "--dropout-aux", "0", "--no-augment", "--optimizer", "sgd", "--lr", "0.01",
    "--plots",  # the test-errors grid of one and of two processes is compared
]  # fmt: skip

# One driver for both Ctrl-Cs, chosen by environment variables: a real SIGINT reaching the worker of rank
# $SIGINT_RANK alone, inside its training step $SIGINT_AT (counted from 1 in this process) and/or, with
# $SIGINT_FINAL set, as the final evaluation starts.
DRIVER = """
import os, signal, sys
import googlenet.evaluate as evaluate
import googlenet.train as train

mine = os.environ.get("SIGINT_RANK", "0") == os.environ.get("RANK", "0")
at = int(os.environ.get("SIGINT_AT", "0")) if mine else 0
calls = [0]
transform, evaluate_all = train.batch_transform, evaluate.evaluate_all

def step_transform(*args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaching one worker mid-step
    return transform(*args, **kwargs)

def final_evaluation(*args, **kwargs):  # write_final_outputs' (validation during training does not call it)
    if mine and os.environ.get("SIGINT_FINAL"):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaching one worker as the final evaluation starts
    return evaluate_all(*args, **kwargs)

train.batch_transform, evaluate.evaluate_all = step_transform, final_evaluation
from googlenet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(
    cwd: Path, argv: list[str], nproc: int | None = None, env: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N ...` (or plain python when nproc is None), never left hanging."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        if nproc
        else [sys.executable]
    )
    proc = subprocess.Popen(
        [*launcher, *argv],
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun stops its workers on SIGTERM (SIGKILL would orphan them)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"hung (deadlock?) after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def load(run_dir: Path) -> dict:
    return torch.load(run_dir / "weights" / "last.pt", weights_only=True)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    (root / "driver.py").write_text(DRIVER)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(workdir: Path) -> tuple[Path, str]:
    """The run of two processes: two launchers of one process each, joined by c10d rendezvous as two nodes would be
    (the Ctrl-C test launches two processes with --standalone). Returns its directory and the two launchers' stdout."""
    rdzv = [
        "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "test",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", *rdzv, "-m", "googlenet", "train", *EQUIVALENT]
    nodes = [
        subprocess.Popen([*cmd, "--name", "two"], cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=900) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
                node.wait(timeout=60)
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    return workdir / "P" / "two", "".join(out for out, _ in outputs)


@pytest.mark.slow
def test_two_processes_on_half_batches_match_one_process(workdir: Path, two_processes):
    with one_thread_here(workdir):  # the one process: this one, as one torchrun worker runs
        assert main(["train", *EQUIVALENT, "--name", "one"]) == 0
    one, (two, stdout) = workdir / "P" / "one", two_processes

    # only the global rank 0 logs and writes: one log line per epoch, one run directory, one world
    assert stdout.count("epoch 1/2") == 1 and stdout.count("Results saved to") == 1
    assert {"one", "two"} <= {p.name for p in (workdir / "P").iterdir()} and not (workdir / "P" / "two2").exists()
    assert json.loads((two / "env.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (two / "weights").iterdir()) == sorted(p.name for p in (one / "weights").iterdir())

    a, b = load(one), load(two)
    torch.manual_seed(0)
    init = GoogLeNet(**a["model_args"]).state_dict()
    assert max_diff(a["model"], init) > 1e-3  # training moved the weights far more than the tolerance
    assert max_diff(a["model"], b["model"]) < 1e-5
    assert max_diff(a["averaged_model"], b["averaged_model"]) < 1e-5

    # per-epoch metrics: training sums and validation (sharded, each sample once) reduced across processes
    for r1, r2 in zip(rows(one), rows(two), strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5"):
            assert float(r1[key]) == pytest.approx(float(r2[key]), abs=1e-5), key
        assert r1["lr"] == r2["lr"]
    m1, m2 = (json.loads((d / "metrics.json").read_text())["splits"] for d in (one, two))
    for split in ("train", "val", "test"):
        assert m1[split]["confusion_matrix"] == m2[split]["confusion_matrix"]
        assert m1[split]["loss"] == pytest.approx(m2[split]["loss"], abs=1e-5)
    # the final evaluation is sharded too: one log of it, and the same first misclassified test images
    assert stdout.count("evaluating test") == 1 and sum(sum(row) for row in m2["test"]["confusion_matrix"]) == 51
    assert (one / "errors_test.png").read_bytes() == (two / "errors_test.png").read_bytes()


def without_epoch_time(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows(run_dir)]


@pytest.mark.slow
def test_ctrl_c_on_one_worker_stops_all_and_resumes_exactly(workdir: Path):
    """Dropout and augmentation on: each process's own RNG streams and running sums must come back.

    Ctrl-C reaches rank 1 alone twice: mid-step in epoch 2, then, in the run resumed from there, as the final
    evaluation starts (so one run, not two, is interrupted there); a second resume only evaluates. The end state
    must be the uninterrupted run's."""
    reference = run(workdir, ["-m", "googlenet", "train", *BASE, "--name", "ddp-reference"], nproc=2)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir, want_dir = workdir / "P" / "ddp-stopped", workdir / "P" / "ddp-reference"

    # SIGINT reaches rank 1 alone, inside step 2 of epoch 2 (its 5th training step)
    stopped = run(
        workdir,
        ["driver.py", "train", *BASE, "--name", "ddp-stopped"],
        nproc=2,
        env={"SIGINT_AT": "5", "SIGINT_RANK": "1"},
    )
    assert stopped.returncode != 0  # torchrun reports the workers' exit status 130 as a failure
    assert (
        "Interrupted; progress saved (epoch 2, step 2). Resume with: googlenet train --resume P/ddp-stopped"
        in stopped.stdout
    )
    state = load(run_dir)
    assert state["epoch"] == 1 and state["epoch_state"]["step"] == 2
    assert len(state["rng_per_rank"]) == 2 and len(state["epoch_state_per_rank"]) == 2
    assert not torch.equal(state["rng_per_rank"][0]["augment"], state["rng_per_rank"][1]["augment"])

    # resumed, it finishes training; then SIGINT reaches rank 1 alone as the final evaluation starts
    resumed = run(
        workdir,
        ["driver.py", "train", "--resume", "P/ddp-stopped"],
        nproc=2,
        env={"SIGINT_FINAL": "1", "SIGINT_RANK": "1"},
    )
    assert "Resuming P/ddp-stopped at epoch 2, step 3" in resumed.stdout, resumed.stderr[-3000:]
    assert resumed.returncode != 0
    assert (
        "Interrupted during the final evaluation" in resumed.stdout
        and "googlenet train --resume P/ddp-stopped" in resumed.stdout
    )
    # both stopped after the split
    assert "evaluating train" in resumed.stdout and "evaluating val" not in resumed.stdout
    assert "Connection closed" not in resumed.stderr  # no process was left waiting on one that had gone
    assert not (run_dir / "metrics.json").exists()

    finished = run(workdir, ["-m", "googlenet", "train", "--resume", "P/ddp-stopped"], nproc=2)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "its training ended after epoch 2 of 2; running the final evaluation" in finished.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(map(sum, metrics["splits"]["test"]["confusion_matrix"])) == 51
    assert metrics == json.loads((want_dir / "metrics.json").read_text())

    got, want = load(run_dir), load(want_dir)
    for key in ("model", "averaged_model"):
        assert all(torch.equal(got[key][k], want[key][k]) for k in want[key]), key
    assert without_epoch_time(run_dir) == without_epoch_time(want_dir)


def test_backend_follows_the_training_device_not_the_machine(monkeypatch):
    """--device cpu under torchrun on a machine with GPUs must use gloo (NCCL cannot reduce CPU tensors)."""
    backends, gpus = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", gpus.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", backends.append)
    dist_utils.init(torch.device("cpu"))
    dist_utils.init(torch.device("cuda", 1))
    assert backends == ["gloo", "nccl"] and gpus == [torch.device("cuda", 1)]


def test_a_worker_leaves_with_its_status_its_output_and_its_exit_handlers():
    """exit_process after a process group: Python's exit handlers run and buffered output is written, then the
    process leaves without the native teardown that aborts a DDP process now and then (SIGABRT after its work)."""
    script = (
        "import atexit, sys; import googlenet.distributed as d; d._joined = True; "
        "atexit.register(lambda: print('exit handler ran')); sys.stdout.write('buffered, '); d.exit_process(3)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and done.stdout == "buffered, exit handler ran\n", done
