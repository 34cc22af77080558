"""The run directory: naming (exp, exp2, ...; explicit names), and commands recorded as a user types them."""

from __future__ import annotations

import dataclasses

import pytest

from googlenet.config import ConfigError, resolve_config
from googlenet.rundir import command_line, next_run_dir

# ---------------------------------------------------------- run directories


def test_run_directories_auto_increment(tmp_path):
    cfg = resolve_config(project=str(tmp_path))
    assert next_run_dir(cfg) == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert next_run_dir(cfg) == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert next_run_dir(cfg) == tmp_path / "exp3"


def test_explicit_run_name_must_be_new_unless_exist_ok(tmp_path):
    cfg = resolve_config(project=str(tmp_path), name="mine")
    assert next_run_dir(cfg) == tmp_path / "mine"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="already exists.*--exist-ok"):
        next_run_dir(cfg)
    assert next_run_dir(dataclasses.replace(cfg, exist_ok=True)) == tmp_path / "mine"
    assert next_run_dir(resolve_config(project=str(tmp_path), exist_ok=True)) == tmp_path / "exp"


def test_commands_are_recorded_as_typed_without_machine_paths():
    assert (
        command_line(["/root/.pyenv/versions/3.11.7/bin/googlenet", "train", "--seed", "1"])
        == "googlenet train --seed 1"
    )
    assert command_line(["/usr/lib/python3/site-packages/googlenet/__main__.py", "train"]) == "googlenet train"
    assert command_line(["googlenet", "train", "--name", "my run"]) == "googlenet train --name 'my run'"


def test_a_users_script_keeps_its_name_without_its_path():
    assert command_line(["/home/me/experiments/sweep.py", "--lr", "1e-3"]) == "sweep.py --lr 1e-3"
