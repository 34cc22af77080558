"""The documentation's code blocks, checked: every fenced block of README.md and docs/usage.md is run or parsed.

- python: executed as a reader would paste it, in a fresh namespace with a temporary directory as the working
  directory (the examples are written to take seconds: their `fit` is a smoke run, with the settings of conftest's
  `trained_run`, which stands in for it);
- shell (bash, sh, console, or unlabelled with a command in it): each `googlenet ...` (also `python -m googlenet`,
  and under `torchrun` after torch's own parser has read torchrun's options) is parsed by `cli.get_args_parser()`,
  an unknown option or choice failing; a `train` line is also resolved and validated as `googlenet train` would
  (`config.resolve_config`, and `--freeze` against the network's layers); `pip install` extras are looked up in
  pyproject.toml and `python -c` code is compiled. Nothing is trained, installed or downloaded;
- yaml: read by `config.load_yaml` and resolved by `config.resolve_config`, as `--config FILE.yaml` is;
- text (an unlabelled block with no command, e.g. a folder layout): every `name.py` it names exists.

Each case is named after the file and line of its opening fence: `test_code_block[README.md:48 python]`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image
from torch.distributed.run import get_args_parser as torchrun_args_parser

import googlenet
from googlenet.cli import get_args_parser
from googlenet.config import ConfigError, load_yaml, resolve_config
from googlenet.model import GoogLeNet
from googlenet.pretrained import freeze_through

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/usage.md"]

PYTHON, SHELL, YAML, TEXT = "python", "shell", "yaml", "text"
LANGUAGES = {"python": PYTHON, "py": PYTHON, "bash": SHELL, "sh": SHELL, "shell": SHELL, "console": SHELL}
LANGUAGES |= {"yaml": YAML, "yml": YAML, "": TEXT, "text": TEXT}  # "": unlabelled, a shell block if it has a command
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")

CHECKED_PROGRAMS = ("googlenet", "torchrun", "pip", "python", "python3")  # a block with one of these is a shell block
# Programs a block may run whose lines are not ours to check: the reader's own tools.
OTHER_PROGRAMS = {"git", "cd", "mv", "cp", "mkdir", "ls", "tar", "tensorboard"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
OPTIONS_PLACEHOLDER = re.compile(r"\[[\w .|-]*\]")  # `[options]`: any options, left out; the rest is parsed
PLACEHOLDER = re.compile(r"<[^>]*>|^\.\.\.$")  # `<checkpoint>`, `...`: a line that then fails to parse is skipped
# Shell lines whose placeholders cannot be parsed, "FILE:LINE": "why". A skip not listed here fails its block's test,
# an entry that no longer skips fails test_skipped_shell_lines_are_the_known_ones. None today.
EXPECTED_SKIPS: dict[str, str] = {}

# Files the Python examples name as the reader's own (docs/usage.md says so); each test's directory has them.
READER_FILES = ("photo.jpg", "scans/")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    language: str  # as labelled: python, bash, ..., "" when unlabelled
    text: str

    @property
    def kind(self) -> str:
        kind = LANGUAGES.get(self.language.lower(), self.language)
        return SHELL if kind == TEXT and any(_is_command(line) for line in self.text.splitlines()) else kind

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line} {self.kind}"


def _is_command(line: str) -> bool:
    words = line.removeprefix("$ ").split()
    return bool(words) and words[0] in CHECKED_PROGRAMS


def code_blocks(text: str, path: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the line of its opening fence."""
    blocks, lines = [], text.splitlines()
    start, fence, language = None, "", ""
    for n, line in enumerate(lines):
        m = FENCE.match(line)
        if start is None and m:
            start, fence, language = n, m.group(1), m.group(2)
        elif start is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            if not m.group(2):  # a closing fence has no label
                blocks.append(Block(path, start + 1, language, "\n".join(lines[start + 1 : n]) + "\n"))
                start = None
    assert start is None, f"{path}:{start + 1}: a code block is never closed"
    return blocks


def doc_blocks() -> list[Block]:
    return [b for doc in DOCS for b in code_blocks((ROOT / doc).read_text(encoding="utf-8"), doc)]


# ------------------------------------------------------------------ shell


def shell_commands(block: Block) -> list[tuple[int, list[str]]]:
    """(line, argv) of every command in a shell block: `\\` continuations joined, `# comments` dropped, commands
    joined by `&&`, `;` or `|` split; in a console block only the `$ ` lines (the rest is output)."""
    commands, pending, first = [], "", 0
    for n, line in enumerate(block.text.splitlines(), block.line + 1):
        if block.language == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        first = first or n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lexer = shlex.shlex(pending + line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                if argv:
                    commands.append((first, argv))
                argv = []
            else:
                argv.append(token)
        pending, first = "", 0
    return commands


@dataclass
class Outcome:
    status: str  # checked, other (not ours to check), skipped (placeholders), problem
    detail: str = ""
    placeholders: int = 0  # `[options]` left out of a checked line


def _spelled_out(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser and its subcommands' without abbreviations: the docs spell every option in full (`--epoch` works
    today as `--epochs`, and stops working when another option starts with it)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _spelled_out(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]):
    """argparse's result, or the last line of its error (a SystemExit 0 is --help or --version: fine)."""
    parser = _spelled_out(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_known_args(argv)
    except SystemExit as exc:
        return None if exc.code == 0 else (err.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]


@functools.cache
def _network() -> GoogLeNet:
    return GoogLeNet(num_classes=10, in_channels=1, aux_logits=True)


def check_googlenet(argv: list[str]) -> Outcome:
    """Parse a `googlenet` command line; a `train` line is also resolved as `googlenet train` resolves it. A line with
    `<placeholders>` that does not parse is skipped."""
    kept = [a for a in argv if not OPTIONS_PLACEHOLDER.fullmatch(a)]
    outcome = _check_googlenet(kept)
    if outcome.status == "problem" and any(PLACEHOLDER.search(a) for a in kept):
        return Outcome("skipped", f"placeholders in googlenet {shlex.join(argv)}")
    outcome.placeholders = len(argv) - len(kept)
    return outcome


def _parsed(parser, argv: list[str], program: str, shown: list[str] | None = None):
    """(the parsed arguments, None), or (None, the Outcome that ends the check: --help, an error, leftovers)."""
    result = _parse(parser, argv)
    line = f"{program} {shlex.join(argv if shown is None else shown)}"
    if result is None:
        return None, Outcome("checked", "help")
    if isinstance(result, str):
        return None, Outcome("problem", f"{line}: {result}")
    args, extras = result
    if extras:
        return None, Outcome("problem", f"{line}: unrecognized arguments: {' '.join(extras)}")
    return args, None


def _check_googlenet(argv: list[str]) -> Outcome:
    args, outcome = _parsed(get_args_parser(), argv, "googlenet")
    if outcome is not None:
        return outcome
    if args.command == "train" and not (args.resume or args.config):  # a run or a file of the reader's: flags only
        values = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "config", "resume")}
        try:  # as train.run_train does, without the training
            cfg = resolve_config(args.preset, None, **values)
            if cfg.freeze:
                freeze_through(_network(), cfg.freeze)
        except ConfigError as exc:
            return Outcome("problem", f"googlenet {shlex.join(argv)}: {exc}")
    return Outcome("checked")


def check_torchrun(argv: list[str]) -> Outcome:
    """torchrun's own options by torch's parser, then the googlenet command it starts by ours."""
    kept = [a for a in argv if not OPTIONS_PLACEHOLDER.fullmatch(a)]
    args, outcome = _parsed(torchrun_args_parser(), kept, "torchrun", argv)
    if outcome is not None:
        return outcome
    if not (args.module and args.training_script == "googlenet"):
        return Outcome("problem", f"torchrun {shlex.join(argv)}: googlenet runs under torchrun as `-m googlenet`")
    outcome = check_googlenet(args.training_script_args)
    outcome.placeholders += len(argv) - len(kept)
    return outcome


@functools.cache
def extras() -> frozenset[str]:
    """The optional-dependency groups of pyproject.toml (read without tomllib, which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return frozenset(re.findall(r"^([\w-]+)\s*=", section.group(1) if section else "", re.M))


def check_pip(argv: list[str]) -> Outcome:
    """`pip install` of this project: its extras must exist."""
    if argv[:1] != ["install"]:
        return Outcome("other")
    ours = [re.fullmatch(r"(?:\.|googlenet)(?:\[([^\]]*)\])?", a) for a in argv[1:] if not a.startswith("-")]
    ours = [m for m in ours if m]
    unknown = sorted({e.strip() for m in ours if m.group(1) for e in m.group(1).split(",")} - extras())
    if unknown:
        return Outcome("problem", f"pip {shlex.join(argv)}: no extra {unknown} (pyproject.toml has {sorted(extras())})")
    return Outcome("checked" if ours else "other")


def check_python(argv: list[str]) -> Outcome:
    if argv[:2] == ["-m", "googlenet"]:
        return check_googlenet(argv[2:])
    if argv[:1] == ["-c"] and len(argv) > 1:
        try:
            compile(argv[1], "python -c", "exec")
        except SyntaxError as exc:
            return Outcome("problem", f"python -c {argv[1]!r}: {exc}")
        return Outcome("checked")
    return Outcome("other")  # python -m pytest, a script of the reader's


def check_command(argv: list[str]) -> Outcome:
    program, rest = argv[0], argv[1:]
    if program == "googlenet":
        return check_googlenet(rest)
    if program == "torchrun":
        return check_torchrun(rest)
    if program in ("pip", "pip3"):
        return check_pip(rest)
    if program in ("python", "python3"):
        return check_python(rest)
    if program in OTHER_PROGRAMS:
        return Outcome("other")
    return Outcome(
        "problem", f"{program}: a program this test does not know: check it here, or list it in OTHER_PROGRAMS"
    )


def check_shell(block: Block) -> list[tuple[int, Outcome]]:
    """(line, outcome) of each of the block's commands."""
    return [(line, check_command(argv)) for line, argv in shell_commands(block)]


# ------------------------------------------------------------------ the other kinds


def run_python(block: Block) -> None:
    """Execute the block as a reader's script; its line numbers in a traceback are the Markdown file's."""
    code = compile("\n" * block.line + block.text, str(ROOT / block.path), "exec")
    exec(code, {"__name__": "__main__"})


def check_yaml(block: Block, directory: Path) -> None:
    """As `googlenet train --config FILE.yaml` reads the file (the reader's flags would come on top)."""
    path = directory / f"doc_{block.line}.yaml"
    path.write_text(block.text, encoding="utf-8")
    resolve_config(None, load_yaml(path))


def missing_modules(block: Block) -> list[str]:
    """The `name.py` files a text block (a layout) names that are not in src/ or tests/ (`test_<module>.py`, a
    pattern, is not a name)."""
    have = {p.name for folder in ("src", "tests", "scripts") for p in (ROOT / folder).rglob("*.py")}
    have |= {p.name for p in ROOT.glob("*.py")}
    named = re.findall(r"(?<![\w<>])(\w+\.py)\b", block.text)
    return sorted(set(named) - have)


@pytest.fixture
def reader_directory(tmp_path, monkeypatch) -> Path:
    """A fresh working directory holding READER_FILES: a colour JPEG and a folder with a grey PNG."""
    Image.new("RGB", (40, 30), (200, 120, 40)).save(tmp_path / "photo.jpg")
    (tmp_path / "scans").mkdir()
    Image.new("L", (28, 28), 30).save(tmp_path / "scans" / "digit.png")
    assert all((tmp_path / name).exists() for name in READER_FILES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


SMOKE_RUN = {"epochs": 1, "batch_size": 32, "eval_batch_size": 100, "limit_train_batches": 3, "limit_eval_batches": 1}


@pytest.fixture
def smoke_fit(monkeypatch, trained_run: Path) -> None:
    """The examples' `googlenet.fit(**SMOKE_RUN)` returns conftest's `trained_run`, trained once per session with these
    settings (checked here); fit with any other settings trains."""
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert {key: config[key] for key in SMOKE_RUN} == SMOKE_RUN
    real = googlenet.fit

    def fit(cfg=None, resume=None, **settings):
        if cfg is None and resume is None and settings == SMOKE_RUN:
            return trained_run
        return real(cfg, resume, **settings)

    monkeypatch.setattr(googlenet, "fit", fit)


BLOCKS = doc_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_code_block(block, reader_directory, request):
    if block.kind == PYTHON:
        request.getfixturevalue("smoke_fit")
        run_python(block)
    elif block.kind == SHELL:
        found = check_shell(block)
        problems = [f"{block.path}:{line}: {o.detail}" for line, o in found if o.status == "problem"]
        problems += [
            f"{block.path}:{line}: skipped ({o.detail}): make it parse, or list it in EXPECTED_SKIPS"
            for line, o in found
            if o.status == "skipped" and f"{block.path}:{line}" not in EXPECTED_SKIPS
        ]
        assert not problems, "\n".join(problems)
        assert any(o.status == "checked" for _, o in found), f"{block.name}: no command in this block is checked"
    elif block.kind == YAML:
        check_yaml(block, reader_directory)
    elif block.kind == TEXT:
        missing = missing_modules(block)
        assert not missing, f"{block.name} names modules that do not exist: {missing}"
    else:
        pytest.fail(f"{block.name}: a ```{block.language} block: label it python, bash, yaml or text, or check it here")


def test_skipped_shell_lines_are_the_known_ones():
    """Counts what the shell checks cover (shown with -rP); fails on a problem, on a skip not in EXPECTED_SKIPS and on
    an entry of EXPECTED_SKIPS that no longer skips."""
    counts = {"checked": 0, "other": 0, "skipped": 0, "problem": 0, "placeholders left out": 0}
    skipped = set()
    for block in BLOCKS:
        for line, outcome in check_shell(block) if block.kind == SHELL else []:
            counts[outcome.status] += 1
            counts["placeholders left out"] += outcome.placeholders
            if outcome.status == "skipped":
                skipped.add(f"{block.path}:{line}")
    print(f"shell commands in {', '.join(DOCS)}: {counts}; skipped: {sorted(skipped) or 'none'}")
    assert counts["checked"] > 20 and not counts["problem"], counts
    assert skipped == set(EXPECTED_SKIPS), f"skipped {sorted(skipped)}, expected {sorted(EXPECTED_SKIPS)}"


# ------------------------------------------------------------------ the checks themselves


def _statuses(shell: str) -> list[tuple[str, str]]:
    (block,) = code_blocks(f"# t\n\n```bash\n{shell}```\n", "t.md")
    return [(o.status, o.detail) for _, o in check_shell(block)]


@pytest.mark.parametrize(
    "line, wrong",
    [
        ("googlenet train --epochz 1", "unrecognized arguments: --epochz"),
        ("googlenet train --epoch 1", "unrecognized arguments: --epoch"),  # an abbreviation
        ("googlenet train --amp fp8", "invalid choice: 'fp8'"),
        ("googlenet evaluate runs/train/exp --split dev", "invalid choice: 'dev'"),
        ("googlenet train --freeze inception4e", "without --weights"),
        ("googlenet train --weights w.pt --freeze inception9z", "GoogLeNet has no such layer"),
        ("googlenet train --lr -1", "lr"),
        ("googlenet export", "the following arguments are required: checkpoint"),
        ("googlenet traim", "invalid choice: 'traim'"),
        ("torchrun --nproc-per-nod 2 -m googlenet train", "unrecognized arguments: --nproc-per-nod"),
        ("torchrun --standalone train.py --epochs 1", "as `-m googlenet`"),
        ("torchrun --standalone -m googlenet train --optimiser sgd", "--optimiser"),
        ('pip install -e ".[dev,gpu]"', "no extra ['gpu']"),
        ("python -c 'import (oops'", "python -c"),
        ("make all", "does not know"),
    ],
)
def test_a_wrong_command_line_fails(line, wrong):
    ((status, detail),) = _statuses(line + "\n")
    assert status == "problem" and wrong in detail, detail


def test_comments_continuations_placeholders_and_prompts():
    shell = (
        "# a comment line\n"
        "googlenet train --epochs 1 \\\n    --amp off   # a comment after it\n"
        "git clone <this repository> googlenet && cd googlenet && googlenet summary\n"
        "torchrun --standalone --nproc-per-node 2 -m googlenet train [options]\n"
        "python -m googlenet predict <checkpoint> <image>\n"
        "pip install 'googlenet[tensorboard]' && python -m pytest -m 'not slow'\n"
    )
    (block,) = code_blocks(f"```bash\n{shell}```\n", "t.md")
    assert [(line, argv[:2]) for line, argv in shell_commands(block)] == [
        (3, ["googlenet", "train"]),
        (5, ["git", "clone"]),
        (5, ["cd", "googlenet"]),
        (5, ["googlenet", "summary"]),
        (6, ["torchrun", "--standalone"]),
        (7, ["python", "-m"]),
        (8, ["pip", "install"]),
        (8, ["python", "-m"]),
    ]
    assert shell_commands(block)[0][1] == ["googlenet", "train", "--epochs", "1", "--amp", "off"]
    outcomes = [o for _, o in check_shell(block)]
    statuses = [
        "checked",
        "other",
        "other",
        "checked",
        "checked",
        "checked",
        "checked",
        "other",
    ]  # other: git, cd, pytest
    assert [o.status for o in outcomes] == statuses
    assert outcomes[4].placeholders == 1  # [options] left out, the rest parsed
    (block,) = code_blocks("```console\n$ googlenet summary --format text\nrank  class\n$ googlenet tran\n```\n", "t")
    assert block.kind == SHELL and [line for line, _ in shell_commands(block)] == [2, 4]
    assert [o.status for _, o in check_shell(block)] == ["checked", "problem"]
    (block,) = code_blocks("```\nsome text\ngooglenet evaluate --dataset\n```\n", "t")
    assert block.kind == SHELL and check_shell(block)[0][1].status == "problem"  # unlabelled with a command: shell
    skipped = _statuses("googlenet evaluate <checkpoint> --split <split>\n")
    assert skipped == [("skipped", "placeholders in googlenet evaluate '<checkpoint>' --split '<split>'")]


def test_blocks_are_found_with_their_lines():
    text = "a\n```python\nx = 1\n```\n\n````md\n```bash\nnot a fence's end\n```\n````\n~~~yaml\nepochs: 1\n~~~\n"
    blocks = code_blocks(text, "t.md")
    assert [(b.line, b.kind) for b in blocks] == [(2, PYTHON), (6, "md"), (11, YAML)]
    assert blocks[1].text == "```bash\nnot a fence's end\n```\n"


def test_the_other_kinds_fail_when_wrong(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        check_yaml(Block("t.md", 1, "yaml", "epochs: 1\nlearning_rate: 0.1\n"), tmp_path)
    with pytest.raises(ConfigError, match="optimizer"):
        check_yaml(Block("t.md", 1, "yaml", "preset: paper\noptimizer: lamb\n"), tmp_path)
    check_yaml(Block("t.md", 1, "yaml", "preset: paper\nepochs: 2\n"), tmp_path)
    with pytest.raises(NameError) as exc:
        run_python(Block("README.md", 40, "python", "import googlenet\n\nx = images\n"))
    assert exc.traceback[-1].lineno + 1 == 43  # the Markdown file's line (pytest counts from 0)
    assert missing_modules(Block("t.md", 1, "", "src/\n  model.py  x\n  nowhere.py  y\ntests/test_<module>.py\n")) == [
        "nowhere.py"
    ]
