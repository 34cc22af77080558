"""The command line as a new user meets it: --version, help without loading torch, defaults and help on every option,
"did you mean"."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import googlenet
from googlenet.cli import get_args_parser, main


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return get_args_parser()._subparsers._group_actions[0].choices


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"googlenet {googlenet.__version__}"


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["predict", "--help"], ["train", "--optimiser", "sgd"]]
)
def test_help_and_typos_answer_without_loading_torch(argv):
    code = (
        f"import sys; from googlenet.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_every_option_has_help_and_train_options_show_their_default():
    for name, parser in _subparsers().items():
        for action in parser._actions:
            assert action.help and action.help.strip(), (
                f"googlenet {name} {action.option_strings or action.dest} has no help"
            )
    train = {a.dest: a.help for a in _subparsers()["train"]._actions}
    assert train["seed"].endswith("(default: 0)") and train["optimizer"].endswith("(default: adam)")
    assert train["channels_last"].endswith("(default: on)") and train["weights"].endswith("(default: unset)")


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["train", "--optimiser", "sgd"], "did you mean --optimizer?"),
        (["train", "--optimizer", "adm"], "did you mean adam?"),
        (["evaluate", "run", "--splt", "val"], "did you mean --split?"),
        (["export", "run", "--format", "onx"], "did you mean onnx?"),
    ],
)
def test_did_you_mean(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and suggestion in err, err


def test_unknown_dataset_name_suggests_the_close_one(capsys, tmp_path):
    assert main(["train", "--dataset", "mnsit", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'mnsit': did you mean mnist?" in err and err.count("\n") == 1


def test_resume_refuses_settings_it_would_ignore(capsys, tmp_path):
    assert (
        main(
            [
                "train",
                "--resume",
                str(tmp_path / "exp"),
                "--epochs",
                "30",
                "--lr",
                "0.1",
                "--device",
                "cpu",
                "--workers",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err  # --device and --workers are the machine's, so a resume takes them
    assert "--epochs, --lr cannot apply" in err and "googlenet train --weights" in err and err.count("\n") == 1
