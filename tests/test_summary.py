"""Tests for googlenet.summary: the layer table must match the seed README's, row by row.

tests/data/seed_summary.md is a verbatim copy of the seed README's summary
(224 px, 10 classes, 3 channels) and its totals. Our rows outside the Inception
blocks also name their layer ("conv1: 2D convolution"); the seed's do not.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import one_line_error

from googlenet import cli
from googlenet.checkpoint import load_checkpoint, save_checkpoint
from googlenet.model import GoogLeNet, count_parameters
from googlenet.pretrained import freeze_through
from googlenet.summary import summary_model, summary_rows, summary_totals

Row = tuple[str, str, str]  # (layer type, output shape, params)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _normalise(row: Row) -> Row:
    layer, shape, params = row
    if layer.startswith("**"):  # seed "**inception_3a**" / "**aux_1**" = ours "**inception3a**" / "**aux1**"
        layer = layer.replace("_", "")
    layer = layer.split(": ", 1)[-1]  # ours "conv1: 2D convolution" = seed "2D convolution"
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


def test_rows_outside_the_blocks_name_their_layer(our_rows):
    stem = our_rows[: our_rows.index(("**inception3a**", "---", "---"))]
    assert [r[0] for r in stem] == [
        "conv1: 2D convolution", "conv1: ReLU", "maxpool1: 2D max pooling", "lrn1: Local response norm",
        "conv2: 2D convolution", "conv2: ReLU", "conv3: 2D convolution", "conv3: ReLU",
        "lrn2: Local response norm", "maxpool2: 2D max pooling",
    ]  # fmt: skip
    model = GoogLeNet(10, 3, aux_logits=False)  # one network, all of it trainable again before each name
    for name in dict.fromkeys(r[0].split(":")[0] for r in stem):  # each one a layer --freeze takes
        freeze_through(model.requires_grad_(True), name)
        assert not any(p.requires_grad for p in getattr(model, name).parameters())
    after = [r[0] for r in our_rows[len(stem) :] if ": " in r[0]]
    assert after == [
        "maxpool3: 2D max pooling", "maxpool4: 2D max pooling", "avgpool: 2D average pooling", "flatten: Flatten",
        "dropout: Dropout", "fc: Linear",
    ]  # fmt: skip
    inside = our_rows[our_rows.index(("**inception3a**", "---", "---")) + 1]
    assert inside == ("2D convolution", "[-1, 64, 28, 28]", "12,352")  # a block's rows: named by its header


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
    assert cli.main(["summary", "--num-classes", "10", "--format", "text"]) == 0
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
    assert rows[0] == ("conv1: 2D convolution", "[-1, 64, 32, 32]", f"{1 * 7 * 7 * 64 + 64:,}")
    assert ("Inception block", "[-1, 1024, 2, 2]", "0") in rows
    assert rows[-1] == ("fc: Linear", "[-1, 7]", f"{1024 * 7 + 7:,}")
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


# ---------------------------------------------------------------- the paper's network, a run's


def _summary_model(*argv: str):
    return summary_model(cli.get_args_parser().parse_args(["summary", *argv]))


def test_the_default_is_the_papers_network(capsys):
    model, image_size, about = _summary_model()
    assert (model.num_classes, model.in_channels, image_size, about) == (1000, 3, 224, None)
    assert cli.main(["summary", "--image-size", "32"]) == 0  # 32 px: the same parameters, a cheap forward
    out = capsys.readouterr().out
    totals = parse_totals(out)
    assert totals["Total params excluding auxiliary params"] == 6_998_552  # PAPER.md, 1000 classes, 3 channels
    assert totals["Total params"] == 13_378_280
    assert parse_seed_layers(out)[-1] == ("fc: Linear", "[-1, 1000]", "1,025,000")


def test_summary_of_a_run_is_the_network_it_trained(capsys, trained_run):
    state = load_checkpoint(trained_run)
    size, margs = state["preprocess"]["image_size"], state["model_args"]
    assert cli.main(["summary", str(trained_run)]) == 0
    about, table = capsys.readouterr().out.split("\n\n", 1)
    assert about == (
        f"The network {trained_run} trained: {margs['num_classes']} classes, 1 input channel, {size} px, with its "
        "auxiliary heads."
    )
    assert table == (trained_run / "summary.md").read_text()  # what training wrote for it
    assert parse_totals(table)["Total params"] == 10_327_758  # PAPER.md: 10 classes, 1 channel
    assert re.search(rf"^\|\s+Input size\s+\|\s+1 x {size} x {size}\s+\|$", table, re.M)


def test_summary_of_a_run_at_another_size_without_aux_heads(trained_run):
    model, image_size, about = _summary_model(str(trained_run), "--image-size", "64", "--no-aux")
    trained = load_checkpoint(trained_run)["preprocess"]["image_size"]
    assert image_size == 64 and f"64 px (trained at {trained} px)" in about
    assert "without its auxiliary heads (--no-aux)" in about
    assert count_parameters(model) == 5_977_530  # PAPER.md: 10 classes, 1 channel, no aux heads


def test_summary_of_a_frozen_run_splits_trainable_and_frozen(capsys, tmp_path, trained_run):
    state = load_checkpoint(trained_run)
    state["config"] = {**state["config"], "weights": "bvlc_googlenet.pt", "freeze": "inception4e"}
    save_checkpoint(tmp_path / "frozen" / "weights" / "last.pt", state)  # no best.pt: the last is read
    assert cli.main(["summary", str(tmp_path / "frozen"), "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "--freeze inception4e: the layers up to and including it frozen" in out.splitlines()[0]
    model = GoogLeNet(**state["model_args"])
    training = ("inception5a.", "inception5b.", "aux1.", "aux2.", "fc.")  # what trains after --freeze inception4e
    trainable = sum(p.numel() for n, p in model.named_parameters() if n.startswith(training))
    total = count_parameters(model)
    assert re.search(rf"^Trainable params\s+{trainable:,}$", out, re.M)
    assert re.search(rf"^Non-trainable params\s+{total - trainable:,}$", out, re.M)
    assert re.search(rf"^Total params\s+{total:,}$", out, re.M)


def test_summary_run_errors_are_one_line(capsys, tmp_path, trained_run):
    run = str(trained_run)
    for flag, value in (("--num-classes", "5"), ("--in-channels", "3")):
        line = one_line_error(capsys, ["summary", run, flag, value], tmp_path)
        assert f"{flag} does not apply with a run" in line and f"drop {flag}" in line
    line = one_line_error(capsys, ["summary", str(tmp_path / "nope")], tmp_path)
    assert "nope does not exist" in line
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, ["summary", str(tmp_path / "empty")], tmp_path)
    assert "holds no weights/best.pt or weights/last.pt" in line
    line = one_line_error(capsys, ["summary", run, "--image-size", "16"], tmp_path)
    assert "minimum of 31" in line
