"""Exact resume after SIGKILL and Ctrl-C, and a clean stop on divergence.

Every run here is the real `googlenet train` command on the CPU with one thread,
--deterministic, dropout and augmentation on (so the RNG states matter), EMA
weights, and a tiny budget (4 batches of 16 per epoch). An interrupted and
resumed run must end with the same weights (bit for bit), the same averaged
weights and the same results.csv and metrics.json as the run that was never
interrupted.

A SIGKILL needs a process of its own; the resumes, Ctrl-C and divergence run in this process
(`googlenet_here`: the CLI's `main`, with a real SIGINT sent to this process from
inside a chosen step, or a NaN loss at a chosen step).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import one_thread_here

import googlenet.train as train
from googlenet.cli import main

EPOCHS, STEPS = 3, 4
ARGS = [
    "--epochs", str(EPOCHS), "--limit-train-batches", str(STEPS), "--batch-size", "16",
    "--limit-eval-batches", "1", "--eval-batch-size", "50",
    "--deterministic", "--average", "ema", "--device", "cpu", "--project", "P",
    "--no-plots",  # weights, CSV and JSON are compared: no figures to draw
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def googlenet_here(
    cwd: Path, *argv: str, sigint_at: tuple[int, ...] = (), nan_at: int = 0
) -> subprocess.CompletedProcess:
    """`googlenet ARGV` run by `main` in this process with one thread (as the processes here), with a real SIGINT
    from inside the training steps `sigint_at` (counted from 1) and a NaN loss at step `nan_at`.
    stderr holds what went to sys.stderr (the signal handler's own line goes to file descriptor 2)."""
    calls = {"step": 0, "loss": 0}
    transform, loss = train.batch_transform, train.googlenet_loss

    def step_transform(*args, **kwargs):
        calls["step"] += 1
        for at in sigint_at:
            if at == calls["step"]:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, arriving mid-step
        return transform(*args, **kwargs)

    def nan_loss(*args, **kwargs):
        calls["loss"] += 1
        value = loss(*args, **kwargs)
        return value * float("nan") if calls["loss"] == nan_at else value

    out, err = io.StringIO(), io.StringIO()
    with one_thread_here(cwd) as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(sys, "argv", ["googlenet", *argv])  # env.json records the command as typed
        mp.setattr(train, "batch_transform", step_transform)
        mp.setattr(train, "googlenet_loss", nan_loss)
        try:
            code = main(list(argv))
        except SystemExit as exc:  # how a stopped run leaves the process (exit status 130)
            code = exc.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def load(run: Path, name: str = "last.pt") -> dict:
    return torch.load(run / "weights" / name, weights_only=True)


def rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch_time"} for row in csv.DictReader(f)]


def assert_same_run(run: Path, reference: Path) -> None:
    """Same final weights (bit for bit), averaged weights, best epoch, results.csv and final metrics."""
    got, want = load(run), load(reference)
    for key in ("model", "averaged_model"):
        assert got[key].keys() == want[key].keys()
        differ = [k for k in want[key] if not torch.equal(got[key][k], want[key][k])]
        assert not differ, f"{key}: {len(differ)} tensors differ, e.g. {differ[0]}"
    assert (got["epoch"], got["best_epoch"], got["best_acc"]) == (want["epoch"], want["best_epoch"], want["best_acc"])
    assert rows(run) == rows(reference)
    assert (
        json.loads((run / "metrics.json").read_text())["splits"]
        == json.loads((reference / "metrics.json").read_text())["splits"]
    )
    assert (run / "REPORT.md").is_file()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(workdir: Path) -> Path:
    """The run never interrupted."""
    done = googlenet_here(workdir, "train", *ARGS, "--name", "reference")
    assert done.returncode == 0, done.stderr
    run = workdir / "P" / "reference"
    assert len(rows(run)) == EPOCHS
    return run


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_exact(workdir: Path, reference: Path):
    run, snapshot = workdir / "P" / "killed", workdir / "P" / "from-epoch-1"
    last = run / "weights" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "googlenet", "train", *ARGS, "--name", "killed"],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        while not last.exists():  # appears (atomically, by rename) when epoch 1 ends
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint after 15 minutes"
            time.sleep(0.01)
        # A hard link is a free snapshot of epoch 1's checkpoint: later saves replace the name, not this file.
        (snapshot / "weights").mkdir(parents=True)
        os.link(last, snapshot / "weights" / "last.pt")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL  # killed while running, not finished
    assert not (run / "metrics.json").exists()
    killed_at = load(run)["epoch"]
    assert killed_at in (1, 2) and load(snapshot)["epoch"] == 1  # normally 1: killed during epoch 2

    # Normally run's last.pt is still epoch 1's file, the snapshot's: resuming both would do the same work twice.
    same_file = os.path.samefile(last, snapshot / "weights" / "last.pt")
    for resumed in [run] if same_file else [run, snapshot]:
        done = googlenet_here(workdir, "train", "--resume", str(resumed.relative_to(workdir)))
        assert done.returncode == 0, done.stderr
        assert f"Resuming {resumed.relative_to(workdir)} at epoch" in done.stdout
        assert_same_run(resumed, reference)
    # env.json keeps the first process's environment and adds the resume's
    env = json.loads((run / "env.json").read_text())
    assert "--resume" not in env["command"] and [e["command"].split()[1:3] for e in env["resumed"]] == [
        ["train", "--resume"]
    ]
    # the resumed run said where it continued, and wrote nothing outside its directory
    assert sorted(p.name for p in (workdir / "P").iterdir()) == ["from-epoch-1", "killed", "reference"]


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_the_step_and_resumes_exactly(workdir: Path, reference: Path, capfd):
    run = workdir / "P" / "ctrl-c"
    # SIGINT arrives inside step 2 of epoch 2 (training step 6 of the run)
    done = googlenet_here(workdir, "train", *ARGS, "--name", "ctrl-c", sigint_at=(STEPS + 2,))
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "stopping after the current step" in capfd.readouterr().err
    line = next(x for x in done.stdout.splitlines() if "--resume" in x)
    assert line.startswith("Interrupted; progress saved (epoch 2, step 2)") and line.endswith(
        "googlenet train --resume P/ctrl-c"
    )

    state = load(run)
    assert state["epoch"] == 1 and state["epoch_state"]["step"] == 2 and state["epoch_state"]["seen"] == 32
    assert state["rng_per_rank"] and len(state["rng_per_rank"]) == 1
    assert len(rows(run)) == 1 and not (run / "metrics.json").exists()

    done = googlenet_here(workdir, "train", "--resume", "P/ctrl-c")
    assert done.returncode == 0, done.stderr
    assert "Resuming P/ctrl-c at epoch 2, step 3" in done.stdout
    assert_same_run(run, reference)


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_and_keeps_the_epoch_checkpoint(workdir: Path):
    run = workdir / "P" / "ctrl-c-twice"
    done = googlenet_here(workdir, "train", *ARGS, "--name", "ctrl-c-twice", sigint_at=(STEPS + 2, STEPS + 2))
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert (
        "Interrupted mid-step; the previous checkpoint, weights/last.pt, is kept. Resume with: googlenet train "
        "--resume P/ctrl-c-twice" in done.stdout
    )
    state = load(run)
    assert state["epoch"] == 1 and state["epoch_state"] is None  # the end-of-epoch-1 checkpoint, untouched
    assert [p.name for p in (run / "weights").iterdir() if p.name.startswith(".")] == []  # no temp files


@pytest.mark.parametrize(("nan_at", "kept"), [(STEPS + 2, True), (2, False)], ids=["epoch-2", "epoch-1"])
def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(workdir: Path, nan_at: int, kept: bool):
    name = f"nan-{nan_at}"
    run = workdir / "P" / name
    done = googlenet_here(workdir, "train", *ARGS, "--name", name, nan_at=nan_at)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, done.stderr
    epoch, step = divmod(nan_at - 1, STEPS)
    assert lines[0].startswith(
        f"googlenet train: error: loss became nan at epoch {epoch + 1}, step {step + 1}: lower --lr"
    )
    if kept:
        assert lines[0].endswith(
            f"the last good checkpoint (epoch 1) is kept in {Path('P', name, 'weights', 'last.pt')}"
        )
        state = load(run)
        assert state["epoch"] == 1 and state["epoch_state"] is None
        assert all(torch.isfinite(t).all() for t in state["model"].values())
        assert len(rows(run)) == 1
    else:
        assert lines[0].endswith("no checkpoint was written")
        assert not (run / "weights" / "last.pt").exists()
    assert not (run / "metrics.json").exists()


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path, capsys, monkeypatch):
    """A run that never finished an epoch, a stray file, a missing directory, a checkpoint without training state."""
    from googlenet.cli import main

    empty = tmp_path / "P" / "early"
    (empty / "weights").mkdir(parents=True)
    stray = tmp_path / "model.pt"
    stray.write_bytes(b"x")
    bare = tmp_path / "P" / "bare" / "weights" / "last.pt"
    bare.parent.mkdir(parents=True)
    torch.save({"model": {}, "model_args": {"num_classes": 10}}, bare)
    cases = [
        (empty, "has no weights/last.pt to resume from"),
        (stray, "--resume takes a run directory (e.g. runs/train/exp) or its weights/last.pt, not"),
        (tmp_path / "nope", "does not exist: --resume takes a run directory"),
        (bare.parent.parent, "cannot resume training (it has no config)"),
    ]
    # one real process for the exit status and the absence of a traceback ...
    proc = subprocess.run([sys.executable, "-m", "googlenet", "train", "--resume", str(empty)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and cases[0][1] in proc.stderr
    # ... and the rest in-process
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for target, message in cases:
        assert main(["train", "--resume", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing was written
