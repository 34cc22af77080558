"""The run directory: naming (exp, exp2, ...; explicit names), commands recorded as a user types them, run files read
within their bounds and run folders kept inside the run."""

from __future__ import annotations

import dataclasses
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from googlenet.config import ConfigError, resolve_config
from googlenet.rundir import (
    RUN_FILE_BYTES,
    RunFileError,
    check_run_folders,
    claim_run_dir,
    command_line,
    read_run_file,
)

# ---------------------------------------------------------- run directories


def test_run_directories_auto_increment(tmp_path):
    cfg = resolve_config(project=str(tmp_path))
    assert claim_run_dir(cfg) == tmp_path / "exp" and (tmp_path / "exp").is_dir()  # claimed: made
    assert claim_run_dir(cfg) == tmp_path / "exp2"
    assert claim_run_dir(cfg) == tmp_path / "exp3"


def test_runs_started_together_never_share_a_directory(tmp_path):
    """Eight runs claim at once: eight directories, and of eight with one --name, one gets it and seven are refused."""
    with ThreadPoolExecutor(8) as pool:
        default = list(pool.map(lambda _: claim_run_dir(resolve_config(project=str(tmp_path))), range(8)))
    assert len(set(default)) == 8

    def same_name(_):
        try:
            return claim_run_dir(resolve_config(project=str(tmp_path), name="same"))
        except ConfigError as exc:
            return str(exc)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(same_name, range(8)))
    assert outcomes.count(tmp_path / "same") == 1 and sum("already exists" in str(o) for o in outcomes) == 7


def test_explicit_run_name_must_be_new_unless_exist_ok(tmp_path):
    cfg = resolve_config(project=str(tmp_path), name="mine")
    assert claim_run_dir(cfg) == tmp_path / "mine"
    with pytest.raises(ConfigError, match="already exists.*--exist-ok"):
        claim_run_dir(cfg)
    assert claim_run_dir(dataclasses.replace(cfg, exist_ok=True)) == tmp_path / "mine"
    assert claim_run_dir(resolve_config(project=str(tmp_path), exist_ok=True)) == tmp_path / "exp"


def test_commands_are_recorded_as_typed_without_machine_paths():
    assert (
        command_line(["/root/.pyenv/versions/3.11.7/bin/googlenet", "train", "--seed", "1"])
        == "googlenet train --seed 1"
    )
    assert command_line(["/usr/lib/python3/site-packages/googlenet/__main__.py", "train"]) == "googlenet train"
    assert command_line(["googlenet", "train", "--name", "my run"]) == "googlenet train --name 'my run'"


def test_a_users_script_keeps_its_name_without_its_path():
    assert command_line(["/home/me/experiments/sweep.py", "--lr", "1e-3"]) == "sweep.py --lr 1e-3"


# ---------------------------------------------------------- reading run files back, writing only inside the run


def test_run_files_over_their_bound_or_not_regular_files_are_refused_unread(tmp_path):
    for name, limit in RUN_FILE_BYTES.items():
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(limit + 1)  # sparse: the size without the disk space
        expected = (
            f"{path} is {limit + 1:,} bytes, more than the {limit:,} bytes a run's {name} can be: is it the right"
        )
        with pytest.raises(RunFileError, match=re.escape(expected)):
            read_run_file(tmp_path, name)
        path.unlink()
        os.mkfifo(path)  # nobody writes to it: opening it to read would block
        with pytest.raises(
            RunFileError, match=re.escape(f"{path} is not a regular file (a directory, FIFO or device?)")
        ):
            read_run_file(tmp_path, name)
        path.unlink()


PARSED = {  # id: (run file, its content, what read_run_file returns or its error's text after the run directory)
    "csv": ("results.csv", b"epoch,val_acc\n1,0.5\n", [{"epoch": 1.0, "val_acc": 0.5}]),
    "csv-text": ("results.csv", b"epoch,val_acc\n1,high\n", "results.csv is not valid CSV of numbers (could not"),
    "csv-short-row": ("results.csv", b"epoch,val_acc\n1\n", "results.csv is not valid CSV of numbers"),
    "yaml": ("config.yaml", b"lr: 0.1\nname: &n exp\n", {"lr": 0.1, "name": "exp"}),
    "yaml-alias": ("config.yaml", b"lr: &x 0.1\nwd: *x\n", "config.yaml uses YAML aliases (*name), which googlenet"),
    "yaml-deep": ("config.yaml", b"[" * 5000 + b"]" * 5000, "config.yaml is not valid YAML (maximum recursion depth"),
    "yaml-syntax": ("config.yaml", b"lr: [\n", "config.yaml is not valid YAML (while parsing"),
    "json": ("env.json", b'{"seed": 1}', {"seed": 1}),
    "json-latin1": ("env.json", b"\xff{}", "env.json is not UTF-8 text (byte 1)"),
    "json-syntax": ("metrics.json", b"{", "metrics.json is not valid JSON (Expecting property name"),
    "md": ("summary.md", b"| layer |\n", "| layer |\n"),
}


@pytest.mark.parametrize(("name", "content", "expected"), PARSED.values(), ids=PARSED)
def test_run_files_are_parsed_as_their_kind_or_refused_in_one_line(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    if not isinstance(expected, str) or name == "summary.md":
        assert read_run_file(tmp_path, name) == expected
        return
    with pytest.raises(RunFileError) as info:
        read_run_file(tmp_path, name)
    assert str(info.value).startswith(f"{tmp_path / expected}") and "\n" not in str(info.value), info.value


def test_run_folders_that_link_out_of_the_run_are_refused(tmp_path):
    """weights/ (or tensorboard/) linking out of the run: refused for --exist-ok (and --resume, test_hostile) before
    anything is written there; a link that stays inside the run is followed."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (run / "weights").symlink_to(tmp_path / "elsewhere")
    expected = f"run folder {run / 'weights'} is a link to {tmp_path / 'elsewhere'}, outside the run directory {run}: "
    with pytest.raises(RunFileError, match=re.escape(expected + "links out of a run are not followed")):
        check_run_folders(run)
    cfg = resolve_config(project=str(tmp_path / "runs"), name="r", exist_ok=True)
    with pytest.raises(RunFileError, match="run folder .*weights is a link"):
        claim_run_dir(cfg)
    (run / "weights").unlink()
    (run / "w").mkdir()
    (run / "weights").symlink_to("w")
    check_run_folders(run)
    assert claim_run_dir(cfg) == run
    (run / "tensorboard").symlink_to("/")
    with pytest.raises(RunFileError, match="tensorboard is a link to /, outside the run directory"):
        check_run_folders(run)
