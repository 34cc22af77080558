"""Tests for googlenet.summary: the layer table must match the seed README's, row by row.

tests/data/seed_summary.md is a verbatim copy of the seed README's summary
(224 px, 10 classes, 3 channels) and its totals.
"""

from __future__ import annotations

import re

import pytest
import torch

from googlenet import cli
from googlenet.model import GoogLeNet, count_parameters
from googlenet.summary import summary_rows, summary_totals

Row = tuple[str, str, str]  # (layer type, output shape, params)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _normalise(row: Row) -> Row:
    layer, shape, params = row
    if layer.startswith("**"):  # seed "**inception_3a**" / "**aux_1**" = ours "**inception3a**" / "**aux1**"
        layer = layer.replace("_", "")
    return layer, shape, params


def parse_seed_layers(text: str) -> list[Row]:
    """The rows of the seed's layer table, repaired where the seed's table is garbled.

    Four rows of the seed's aux_1 head lost a column separator, e.g.
    "| Flatten [-1, 2048]  |         0          |" and
    "|  Linear [-1, 1024]  |     2,098,176      |": the output shape slid into
    the layer column. The same rows of aux_2 are intact ("Flatten | [-1, 2048]
    | 0"), so we split the first cell into type and shape and keep the second
    cell as the parameter count; the ReLU/Dropout rows of aux_1 are intact but
    misaligned only visually.
    """
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and "Layer (type)" in line)
    rows: list[Row] = []
    for line in lines[start + 2 :]:  # skip the header and the alignment row
        if not line.startswith("|"):
            break
        cells = _cells(line)
        if len(cells) == 3:
            rows.append((cells[0], cells[1], cells[2]))
            continue
        match = re.fullmatch(r"(.+?) (\[.*\])", cells[0])
        assert len(cells) == 2 and match, f"unexpected seed row {line!r}"
        rows.append((match.group(1), match.group(2), cells[1]))
    return rows


def parse_totals(text: str) -> dict[str, int]:
    totals = {}
    for line in text.splitlines():
        cells = _cells(line) if line.startswith("|") else []
        if len(cells) == 2 and re.fullmatch(r"[\d,]+", cells[1]) and "params" in cells[0]:
            totals[cells[0]] = int(cells[1].replace(",", ""))
    return totals


@pytest.fixture(scope="module")
def seed_text(test_data_dir) -> str:
    return (test_data_dir / "seed_summary.md").read_text()


@pytest.fixture(scope="module")
def seed_rows(seed_text) -> list[Row]:
    return [_normalise(r) for r in parse_seed_layers(seed_text)]


@pytest.fixture(scope="module")
def our_rows() -> list[Row]:
    return [(r.layer, r.shape, r.params) for r in summary_rows(GoogLeNet(num_classes=10, in_channels=3), 224)]


def test_seed_table_parses_as_expected(seed_rows):
    # Guards the parser itself: 10 stem rows, 9 blocks of 15 (header, 6 conv+ReLU pairs, pool,
    # concatenation), 2 aux heads of 9 (header + 8 layers), 2 max pools between stages, 4 head rows.
    assert len(seed_rows) == 10 + 9 * 15 + 2 * 9 + 2 + 4
    aux1 = seed_rows[seed_rows.index(("**aux1**", "---", "---")) :][:9]
    assert aux1[1:] == [
        ("2D average pooling", "[-1, 512, 4, 4]", "0"),
        ("2D convolution", "[-1, 128, 4, 4]", "65,664"),
        ("ReLU", "[-1, 128, 4, 4]", "0"),
        ("Flatten", "[-1, 2048]", "0"),
        ("Linear", "[-1, 1024]", "2,098,176"),
        ("ReLU", "[-1, 1024]", "0"),
        ("Dropout", "[-1, 1024]", "0"),
        ("Linear", "[-1, 10]", "10,250"),
    ]


def test_summary_matches_the_seed_row_by_row(seed_rows, our_rows):
    ours = [_normalise(r) for r in our_rows]
    for i, (mine, seed) in enumerate(zip(ours, seed_rows)):
        assert mine == seed, f"row {i}: ours {mine} != seed {seed}"
    assert len(ours) == len(seed_rows)


def test_headers_name_our_modules(our_rows):
    headers = [r[0] for r in our_rows if r[0].startswith("**")]
    assert headers == [
        "**inception3a**", "**inception3b**", "**inception4a**", "**aux1**", "**inception4b**", "**inception4c**",
        "**inception4d**", "**aux2**", "**inception4e**", "**inception5a**", "**inception5b**",
    ]  # fmt: skip


def test_param_column_sums_to_the_total(our_rows):
    total = sum(int(p.replace(",", "")) for _, _, p in our_rows if p != "---")
    assert total == 10_334_030


def test_totals_match_the_seed(seed_text):
    seed = parse_totals(seed_text)
    assert seed == {
        "Total params": 10_334_030,
        "Trainable params": 10_334_030,
        "Total params excluding auxiliary params": 5_983_802,
        "Non-trainable params": 0,
    }
    assert summary_totals(GoogLeNet(10, 3)) == seed


def test_totals_without_aux_and_with_frozen_layers():
    model = GoogLeNet(10, 3, aux_logits=False)
    totals = summary_totals(model)
    assert totals["Total params"] == totals["Total params excluding auxiliary params"] == 5_983_802
    model.fc.weight.requires_grad_(False)
    totals = summary_totals(model)
    assert totals["Non-trainable params"] == 10_240
    assert totals["Trainable params"] == 5_983_802 - 10_240


def test_summary_leaves_the_model_as_it_was():
    model = GoogLeNet(10, 3).eval()

    def state():
        hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
        return hooks, {k: v.clone() for k, v in model.state_dict().items()}

    hooks, weights = state()
    summary_rows(model, 32)
    after_hooks, after_weights = state()
    assert not model.training
    assert after_hooks == hooks
    assert all(torch.equal(weights[k], after_weights[k]) for k in weights)


def _text_rows(out: str) -> list[Row]:
    """The layer rows of `--format text` output: columns separated by two or more spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Layer (type)"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == 3, line
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def test_cli_summary_text_format_matches_the_seed(capsys, seed_rows, seed_text):
    assert cli.main(["summary", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert [_normalise(r) for r in _text_rows(out)] == seed_rows
    for name, value in parse_totals(seed_text).items():
        assert re.search(rf"^{re.escape(name)}\s+{value:,}$", out, re.M), name
    assert "FLOPs per image (inference)" in out
    assert "|" not in out


def test_cli_summary_markdown_other_sizes(capsys):
    argv = ["summary", "--image-size", "64", "--num-classes", "7", "--in-channels", "1", "--no-aux"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = parse_seed_layers(out)  # our markdown has the seed's layout
    assert rows[0] == ("2D convolution", "[-1, 64, 32, 32]", f"{1 * 7 * 7 * 64 + 64:,}")
    assert ("Inception block", "[-1, 1024, 2, 2]", "0") in rows
    assert rows[-1] == ("Linear", "[-1, 7]", f"{1024 * 7 + 7:,}")
    assert not any("aux" in r[0] for r in rows)
    total = count_parameters(GoogLeNet(7, 1, aux_logits=False))
    assert parse_totals(out)["Total params"] == total
    assert sum(int(p.replace(",", "")) for _, _, p in rows if p != "---") == total
    assert re.search(r"^\|\s+Input size\s+\|\s+1 x 64 x 64\s+\|$", out, re.M)


def test_cli_summary_with_aux_at_a_small_size(capsys):
    assert cli.main(["summary", "--image-size", "32", "--num-classes", "3"]) == 0
    rows = parse_seed_layers(capsys.readouterr().out)
    aux = rows[rows.index(("**aux1**", "---", "---")) + 1]
    assert aux == ("2D average pooling", "[-1, 512, 4, 4]", "0")  # adaptive 2x2 -> 4x4 at 32 px


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "30"], "minimum of 31"),
        (["--num-classes", "0"], "--num-classes must be an integer from 1 to 100000"),
    ],
)
def test_cli_summary_errors(capsys, argv, message):
    assert cli.main(["summary", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("googlenet summary: error:") and message in err
