"""Tests for googlenet.config and the train command's option handling (no training happens here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import googlenet.train
from googlenet import cli
from googlenet.config import PRESETS, ConfigError, TrainConfig, load_yaml, resolve_config


@pytest.fixture
def captured_fit(monkeypatch) -> list[TrainConfig]:
    """Replace fit() so that `googlenet train ...` only resolves its config."""
    seen: list[TrainConfig] = []
    monkeypatch.setattr(googlenet.train, "fit", lambda cfg, resume=None: seen.append(cfg))
    return seen


def test_default_is_the_fast_preset_with_the_paper_model():
    cfg = resolve_config()
    assert cfg == dataclasses.replace(TrainConfig(), preset="fast")
    assert PRESETS["fast"] == {}
    # The model settings default to the paper's.
    assert (cfg.dropout, cfg.dropout_aux, cfg.aux_weight, cfg.init) == (0.4, 0.7, 0.3, "caffe")
    assert cfg.dataset == "mnist"


def test_original_preset_is_the_seed_readme_recipe():
    cfg = resolve_config("original")
    assert cfg.preset == "original"
    assert (cfg.image_size, cfg.in_channels) == (224, 3)  # grey MNIST resized and copied to 3 channels
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("adam", 1e-4, 128, 20)
    assert cfg.aux_weight == 0.3
    assert cfg.val_fraction == 0.3  # the seed's 70/30 split
    assert cfg.schedule == "constant" and cfg.augment is False and cfg.average == "none"
    assert cfg.dataset == "mnist"


def test_paper_preset_is_the_papers_optimiser():
    cfg = resolve_config("paper")
    assert (cfg.optimizer, cfg.momentum) == ("sgd", 0.9)
    assert (cfg.schedule, cfg.step_epochs, cfg.step_gamma) == ("step", 8, 0.96)  # -4% every 8 epochs
    assert cfg.average == "polyak"
    assert (cfg.image_size, cfg.in_channels) == (224, 3)


def test_no_preset_has_a_time_budget():
    """Same command, same result: every preset trains all its epochs on any machine; --time-limit is opt-in."""
    assert {name: resolve_config(name).time_limit for name in PRESETS} == {name: 0.0 for name in PRESETS}
    assert resolve_config(time_limit=40).time_limit == 40.0  # still available


def test_old_names_still_read(tmp_path, captured_fit):
    """A setting or preset renamed (time -> time_limit, preset seed -> original) is read under its old name
    from the command line, a --config file, a checkpoint's or config.yaml's config and Python."""
    assert resolve_config("seed") == resolve_config("original")
    assert resolve_config(time=40) == resolve_config(time_limit=40)
    old = TrainConfig.from_dict({"time": 30.0, "preset": "seed"})  # a config.yaml written before the renames
    assert (old.time_limit, old.preset) == (30.0, "original")
    (tmp_path / "c.yaml").write_text("preset: seed\ntime: 20\n")
    assert cli.main(["train", "--config", str(tmp_path / "c.yaml")]) == 0
    assert cli.main(["train", "--preset", "seed", "--time", "25"]) == 0
    assert [(c.preset, c.time_limit) for c in captured_fit] == [("original", 20.0), ("original", 25.0)]
    with pytest.raises(ConfigError, match="time is the old name of time_limit, and both are set"):
        TrainConfig.from_dict({"time": 1.0, "time_limit": 2.0})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'imagenet'"):
        resolve_config("imagenet")


def test_precedence_defaults_preset_file_flags():
    cfg = resolve_config("original", {"lr": 0.01, "epochs": 3}, epochs=5, batch_size=None)
    assert cfg.lr == 0.01  # file over preset
    assert cfg.epochs == 5  # flag over file
    assert cfg.batch_size == 128  # a flag left unset (None) does not override
    assert cfg.image_size == 224  # preset over defaults


def test_unknown_keys_rejected():
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        resolve_config("fast", {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="unknown setting.*bogus"):
        TrainConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer 'rmsprop' is not one of adam, adamw, sgd"),
        ({"schedule": "poly"}, "schedule"),
        ({"average": "swa"}, "average"),
        ({"init": "xavier"}, "init"),
        ({"amp": "fp8"}, "amp"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"dropout_aux": -0.1}, "dropout_aux must be in"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"aux_weight": -0.3}, "must not be negative"),
        ({"time_limit": -1.0}, "time_limit must not be negative"),
    ],
)
def test_validation(values, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("fast", values)


def test_config_round_trips_through_a_dict_and_yaml(tmp_path):
    cfg = resolve_config("paper", epochs=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert TrainConfig.from_dict(load_yaml(path)) == cfg


def test_load_yaml_accepts_dashes_and_empty_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch-size: 16\nlabel_smoothing: 0.1\n")
    assert load_yaml(path) == {"batch_size": 16, "label_smoothing": 0.1}
    path.write_text("")
    assert load_yaml(path) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "must hold a mapping"), ("lr: [1, 2\n", "not valid YAML")],
)
def test_load_yaml_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml(tmp_path / "missing.yaml")


# ------------------------------------------------------- the train command


def test_cli_train_defaults(captured_fit):
    assert cli.main(["train"]) == 0
    assert captured_fit == [resolve_config("fast")]


def test_cli_yaml_config_applied_and_flags_override(tmp_path, captured_fit):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.05\nepochs: 7\nbatch-size: 64\noptimizer: sgd\nhflip: true\n")
    assert cli.main(["train", "--preset", "original", "--config", str(path), "--epochs", "2", "--no-augment"]) == 0
    (cfg,) = captured_fit
    assert (cfg.lr, cfg.batch_size, cfg.optimizer, cfg.hflip) == (0.05, 64, "sgd", True)  # from the file
    assert cfg.epochs == 2 and cfg.augment is False  # flags win
    assert cfg.image_size == 224 and cfg.preset == "original"  # the preset under the file


def test_cli_flags_map_to_config_fields(captured_fit):
    argv = [
        "train", "--dataset", "cifar10", "--image-size", "64", "--in-channels", "3", "--lr", "0.2",
        "--schedule", "cosine", "--warmup-epochs", "1.5", "--average", "ema", "--label-smoothing", "0.1",
        "--limit-train-batches", "3", "--exist-ok", "--no-channels-last", "--seed", "4",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    (cfg,) = captured_fit
    assert cfg == resolve_config(
        "fast",
        dataset="cifar10",
        image_size=64,
        in_channels=3,
        lr=0.2,
        schedule="cosine",
        warmup_epochs=1.5,
        average="ema",
        label_smoothing=0.1,
        limit_train_batches=3,
        exist_ok=True,
        channels_last=False,
        seed=4,
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("learning_rate: 0.1\n", "unknown setting(s) learning_rate"),
        ("- 1\n", "must hold a mapping"),
        ("optimizer: lbfgs\n", "optimizer 'lbfgs'"),
    ],
)
def test_cli_bad_config_file_exits_2(tmp_path, capsys, captured_fit, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("googlenet train: error:") and message in err
    assert captured_fit == []


def test_cli_bad_flag_value_exits_2(capsys, captured_fit):
    assert cli.main(["train", "--epochs", "0"]) == 2
    assert "epochs must be positive" in capsys.readouterr().err


def test_fit_rejects_too_small_images_before_loading_data(capsys):
    assert cli.main(["train", "--image-size", "30", "--project", "/nonexistent/never-created"]) == 2
    assert "minimum of 31" in capsys.readouterr().err


def test_yaml_exponent_floats_are_numbers(tmp_path):
    """`lr: 1e-4` is how everyone writes a learning rate, but PyYAML (YAML 1.1) reads it as the string
    '1e-4' (it wants '1.0e-4'). The config must still get the number, not fail on `'1e-4' <= 0` or,
    for fields that are not validated (step_gamma, ema_decay), crash later inside training."""
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nweight_decay: 5e-4\nstep_gamma: 9.6e-1\nema_decay: 9.99e-1\n")
    cfg = resolve_config("fast", load_yaml(path))
    assert (cfg.lr, cfg.weight_decay, cfg.step_gamma, cfg.ema_decay) == (1e-4, 5e-4, 0.96, 0.999)
    assert all(isinstance(v, float) for v in (cfg.lr, cfg.weight_decay, cfg.step_gamma, cfg.ema_decay))


def test_non_numeric_value_names_the_setting(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("step_gamma: fast\n")
    with pytest.raises(ConfigError, match="step_gamma"):
        resolve_config("fast", load_yaml(path))


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"schedule": "step", "step_epochs": 0}, "step_epochs"),  # else ZeroDivisionError in the scheduler
        ({"schedule": "step", "step_gamma": 0.0}, "step_gamma"),
        ({"pct_start": 1.5}, "pct_start"),  # else OneCycleLR's ValueError traceback after loading the data
        ({"limit_train_batches": 0}, "limit_train_batches"),  # else an epoch that trains nothing
        ({"limit_eval_batches": 0}, "limit_eval_batches"),
        ({"patience": 0}, "patience"),  # else training stops after the first epoch whatever happens
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"elastic": -1.0}, "elastic"),
        ({"elastic_sigma": 0.0}, "elastic_sigma"),  # else a division by zero in the Gaussian
    ],
)
def test_validation_of_schedule_and_run_control_settings(values, name):
    with pytest.raises(ConfigError, match=name):
        resolve_config("fast", values)


def test_every_choice_list_is_defined_once_and_documented():
    """config.CHOICES is what the CLI offers and validate() accepts; model.py's own list of inits is the same;
    docs/usage.md shows each list as the options' values."""
    from googlenet.cli import get_args_parser
    from googlenet.config import CHOICES
    from googlenet.model import INIT_SCHEMES

    assert CHOICES["init"] == INIT_SCHEMES
    commands = get_args_parser()._subparsers._group_actions[0].choices
    offered = {
        a.dest: tuple(a.choices) for c in ("train", "evaluate") for a in commands[c]._actions if a.dest in CHOICES
    }
    assert tuple(next(a for a in commands["benchmark"]._actions if a.dest == "amp").choices) == CHOICES["amp"]
    assert offered == CHOICES
    for key, values in CHOICES.items():
        if key != "tta":
            bad = "nope"
            with pytest.raises(ConfigError, match=f"{key} 'nope' is not one of {', '.join(values)}"):
                TrainConfig(**{key: bad}).validate()
    usage = (Path(__file__).parent.parent / "docs" / "usage.md").read_text()
    for key, values in CHOICES.items():
        assert f"--{key.replace('_', '-')} {'|'.join(values)}" in usage, key
