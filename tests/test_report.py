"""Tests for googlenet.report: REPORT.md, its tables, figures and lines, drawn from a run's files (conftest's
trained_run, one real `googlenet train` of 3 batches shared by the session), and `googlenet report`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import googlenet.report
from googlenet import cli
from googlenet.data import Augment, Dataset, Split, load_dataset
from googlenet.runtime import resolve_amp


def _table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> other cells, for every Markdown table row (the last row wins for a repeated first cell)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_report_tables_agree_with_metrics_json(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    splits = [metrics["splits"][s] for s in ("train", "val", "test")]
    rows = _table_rows((trained_run / "REPORT.md").read_text().split("## Model summary")[0])
    assert rows[""][:3] == ["Training", "Validation", "Testing"]
    assert rows["Loss"] == [f"{m['loss']:.4f}" for m in splits]
    assert rows["Accuracy (%)"] == [f"{100 * m['accuracy']:.2f}" for m in splits]
    assert rows["Top-5 accuracy (%)"] == [f"{100 * m['top5']:.2f}" for m in splits]
    assert rows["Images"] == ["100"] * 3
    header = rows["Class"]
    assert header[:3] == ["Training Precision", "Validation Precision", "Testing Precision"]
    assert header[-1] == "Testing F1 Score"
    for i, name in enumerate(metrics["classes"]):
        expected = [f"{m[key][i]:.4f}" for key in ("precision", "recall", "f1") for m in splits]
        assert rows[name] == expected, name
    for avg in ("macro", "weighted"):
        assert rows[f"*{avg} avg*"] == [f"{m[avg][key]:.4f}" for key in ("precision", "recall", "f1") for m in splits]


def test_report_embeds_the_summary_and_the_recipe(trained_run):
    report = (trained_run / "REPORT.md").read_text()
    assert (trained_run / "summary.md").read_text().strip() in report
    assert "batch size 32" in report and "(loss.png)" in report and "(accuracy.png)" in report
    assert "[validation](confusion_val.png)" in report


def test_report_command_rebuilds_the_report(trained_run, tmp_path, capsys):
    copy = tmp_path / trained_run.name
    shutil.copytree(trained_run, copy)
    removed = ["REPORT.md", "loss.png", "accuracy.png", "confusion_val.csv", "confusion_test.png"]
    for name in removed:
        (copy / name).unlink()
    assert cli.main(["report", str(copy)]) == 0
    assert str(copy / "REPORT.md") in capsys.readouterr().out
    for name in removed:
        assert (copy / name).is_file(), name
    assert (copy / "REPORT.md").read_text() == (trained_run / "REPORT.md").read_text()
    assert (copy / "confusion_val.csv").read_text() == (trained_run / "confusion_val.csv").read_text()


def test_report_command_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "results.csv is missing" in capsys.readouterr().err


def test_report_leads_with_results_flags_a_partial_run_and_shows_the_errors(trained_run, capsys):
    text = (trained_run / "REPORT.md").read_text()
    assert text.index("## Results") < text.index("## Model summary")
    assert "**Partial run** (--limit-train-batches 3, --limit-eval-batches 1)" in text
    assert (
        trained_run / "errors_test.png"
    ).is_file() and "![Test errors](errors_test.png)" in text  # 3 batches: plenty of errors
    assert "Top-5 accuracy (%)" in text  # 10 classes; a 2-class run says top-2 (test_evaluate)


def test_errors_grid_draws_the_colour_tiles_of_a_wide_split_and_removes_a_stale_one(tmp_path):
    images = torch.zeros(2, 3, 20, 40, dtype=torch.uint8)
    images[0, 0], images[1, 2] = 255, 255  # wide images, one red, one blue
    mnist = load_dataset("mnist", val_fraction=0.1, seed=0)
    data = dataclasses.replace(mnist, classes=["plane", "bird"], test=Split(images, torch.tensor([0, 1])))
    path = tmp_path / "errors_test.png"
    assert googlenet.report.plot_errors([(0, 1), (1, 0)], data, path) == 2
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    for channel in (0, 2):  # both tiles drawn in their own colour
        others = [c for c in range(3) if c != channel]
        assert ((pixels[..., channel] > 200) & (pixels[..., others] < 60).all(-1)).sum() > 100, channel
    assert googlenet.report.plot_errors([], data, path) == 0 and not path.exists()  # no errors: no stale picture


def test_class_names_are_drawn_as_text_never_as_mathtext(tmp_path):
    """Class names come from folder names: `$x^{$` made matplotlib's mathtext raise (no figure, no metrics.json). Tick
    labels and the errors grid draw them as written (test_hostile trains such a run end to end)."""
    classes = ["$x^{$", "$\\nosuch$", "a_b^c"]
    googlenet.report.plot_confusion([[1, 0, 0], [0, 1, 1], [2, 0, 0]], classes, "Test", tmp_path / "confusion.png")
    data = Dataset(
        "t", classes, *[Split(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.arange(3))] * 3, 1, 8, Augment()
    )
    assert googlenet.report.plot_errors([(0, 1), (1, 2), (2, 0)], data, tmp_path / "errors.png") == 3
    assert Image.open(tmp_path / "confusion.png").size > (100, 100) and Image.open(tmp_path / "errors.png").size


def test_env_json_and_report_state_the_precision(trained_run, tmp_path):
    env = json.loads((trained_run / "env.json").read_text())
    assert env["precision"] == resolve_amp("auto", torch.device("cpu"))[1]
    assert f"Precision: {env['precision']}. " in (trained_run / "REPORT.md").read_text()
    # Resumed on a processor of the other kind, --amp auto ran in the other precision from there on: the report says so.
    amx, avx2 = "bf16 autocast (auto: the processor has AMX)", "fp32 (auto: no native bf16 on this processor)"
    other = avx2 if env["precision"] == amx else amx
    run = shutil.copytree(trained_run, tmp_path / "t")
    env["resumed"] = [{**env, "precision": other}]
    (run / "env.json").write_text(json.dumps(env))
    googlenet.report.build_report(run)
    assert f"Precision: {env['precision']}, then {other}. " in (run / "REPORT.md").read_text()


def test_final_summary_names_each_split_and_the_report():
    metrics = {
        "best_epoch": 3,
        "classes": ["a", "b"],
        "splits": {"train": {"accuracy": 0.5, "top5": 1.0}, "test": {"accuracy": 0.25, "top5": 1.0}},
    }
    text = googlenet.report.final_summary(metrics, Path("runs/train/exp"))
    assert text.splitlines() == [
        "Best checkpoint (epoch 3) accuracy: train 50.00%, test 25.00%",
        "Results saved to runs/train/exp (report: runs/train/exp/REPORT.md)",
    ]


def test_report_of_malformed_run_files_is_a_one_line_error(trained_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    for text in ("- a list\n", "dataset: mnist\n"):  # not a mapping; a mapping without the recipe
        (copy / "config.yaml").write_text(text)
        assert cli.main(["report", str(copy)]) == 2
        err = capsys.readouterr().err
        assert "has unreadable run files" in err and err.count("\n") == 1


def test_no_plots_writes_the_report_without_figures(tmp_path):
    """--no-plots: REPORT.md, the confusion CSVs and metrics.json, no PNG and no link to one."""
    argv = ["train", "--epochs", "1", "--limit-train-batches", "2", "--limit-eval-batches", "1", "--batch-size", "16"]
    assert cli.main([*argv, "--eval-batch-size", "50", "--no-plots", "--project", str(tmp_path), "--name", "np"]) == 0
    run = tmp_path / "np"
    assert not list(run.glob("*.png")) and (run / "confusion_test.csv").is_file() and (run / "metrics.json").is_file()
    text = (run / "REPORT.md").read_text()
    assert ".png" not in text and "--no-plots" in text and "[testing](confusion_test.csv)" in text
