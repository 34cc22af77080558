"""Command line: parsing and dispatch only.

    googlenet train [--preset fast|original|paper] [--config FILE.yaml] [options]
    googlenet evaluate CHECKPOINT [--split train|val|test|all] [--dataset NAME] [--tta flip|crops10|crops144]
    googlenet report RUN_DIR
    googlenet summary [RUN] [--num-classes 1000] [--in-channels 3] [--image-size 224]
    googlenet datasets [imagefolder:PATH]
    googlenet predict CHECKPOINT IMAGE...
    googlenet export CHECKPOINT --format onnx|pt2|safetensors
    googlenet benchmark [--image-size 32] [--compare torchvision]
    googlenet convert BVLC_GOOGLENET.caffemodel [--output FILE.pt]

Errors the user can fix end with a one-line message and exit status 2, with
no traceback.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import __version__
from .config import (
    CHOICES,
    DATASET_NAMES,
    OLD_PRESET_NAMES,
    PRESETS,
    TrainConfig,
)
from .errors import UserError

__all__ = ["get_args_parser", "main"]

USER_ERRORS = (UserError, FileNotFoundError)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    bool_opt = argparse.BooleanOptionalAction
    g = p.add_argument_group("run")
    g.add_argument(
        "--preset",
        choices=[*PRESETS, *OLD_PRESET_NAMES],
        metavar="{" + ",".join(PRESETS) + "}",
        help="starting recipe: fast (CPU), original (the seed README's; also read as its old name, seed), paper (SGD, "
        "-4%% every 8 epochs, Polyak); the defaults below are fast's (default: fast, or the --config file's preset)",
    )
    g.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of settings (overrides the preset; flags override it)"
    )
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its weights/last.pt, exactly as it was configured",
    )
    g.add_argument("--project", help="parent directory of run directories")
    g.add_argument("--name", help="run directory name (auto-incremented: exp, exp2, ...)")
    g.add_argument("--exist-ok", action=bool_opt, default=None, help="reuse an existing run directory")
    g.add_argument(
        "--seed", type=int, help="seed of the split, the initialisation, the batch order and the augmentation"
    )
    g.add_argument("--deterministic", action=bool_opt, default=None, help="deterministic algorithms (slower)")
    g.add_argument("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    g.add_argument(
        "--limit-train-batches",
        type=int,
        metavar="N",
        help="at most N batches per epoch (quick runs; with --limit-eval-batches)",
    )
    g.add_argument(
        "--limit-eval-batches", type=int, metavar="N", help="evaluate at most N batches per split (quick runs)"
    )
    g.add_argument(
        "--plots",
        action=bool_opt,
        default=None,
        help="draw the curves, confusion matrices and test-errors grid as PNG files (--no-plots: REPORT.md, CSV, JSON)",
    )
    g.add_argument(
        "--tensorboard",
        action=bool_opt,
        default=None,
        help="also log the per-epoch scalars for TensorBoard in RUN/tensorboard (extra: googlenet[tensorboard])",
    )
    g.add_argument(
        "--patience",
        type=int,
        metavar="EPOCHS",
        help="stop early after this many epochs without a better validation accuracy",
    )

    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"{', '.join(DATASET_NAMES)} or imagefolder:PATH (mnist is built in)")
    g.add_argument("--data-dir", help="where torchvision datasets are (unset: ~/.cache/googlenet/data)")
    g.add_argument("--download", action=bool_opt, default=None, help="download a torchvision dataset if missing")
    g.add_argument("--val-fraction", type=float, help="validation share of the training set (stratified, seeded)")
    g.add_argument("--image-size", type=int, help="model input side in pixels (paper: 224)")
    g.add_argument("--in-channels", type=int, help="model input channels (unset: the weights', else the dataset's)")
    g.add_argument(
        "--data-loading",
        choices=CHOICES["data_loading"],
        help="memory: decode every image first (fast for MNIST and small folders); stream: read an image folder from "
        "disk "
        "with DataLoader workers and the paper's crops (ImageNet); auto: stream a folder over --memory-budget",
    )
    g.add_argument(
        "--memory-budget",
        type=float,
        metavar="GB",
        help="decoded images the in-memory path may hold (unset: half of this machine's memory, shared among "
        "torchrun's processes on it)",
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="DataLoader processes reading a streamed folder (unset: the cores, up to 8, shared among torchrun's "
        "processes)",
    )

    g = p.add_argument_group("augmentation (unset: the dataset's default, listed by googlenet datasets)")
    g.add_argument("--augment", action=bool_opt, default=None, help="training augmentation on/off")
    g.add_argument("--rotate", type=float, metavar="DEG", help="largest random rotation, in degrees")
    g.add_argument(
        "--translate", type=float, metavar="FRACTION", help="largest random shift, as a fraction of the side"
    )
    g.add_argument("--scale", type=float, metavar="FRACTION", help="largest random zoom in or out, relative")
    g.add_argument("--hflip", action=bool_opt, default=None, help="random horizontal flips")
    g.add_argument(
        "--crop-padding", type=int, metavar="PX", help="random crops of the image padded by PX native pixels"
    )
    g.add_argument(
        "--elastic", type=float, metavar="PX", help="elastic distortion strength (Simard et al.: 34; 0 = off)"
    )
    g.add_argument("--elastic-sigma", type=float, metavar="PX", help="smoothness of the elastic distortion")
    g.add_argument(
        "--color-jitter",
        type=float,
        metavar="STRENGTH",
        help="streamed folders: random brightness, contrast and saturation of this strength, e.g. 0.4 (0: off)",
    )

    g = p.add_argument_group("starting point (fine-tuning)")
    g.add_argument(
        "--weights",
        metavar="FILE",
        help="start from these weights: a googlenet checkpoint or run directory, googlenet convert's file, or a "
        ".safetensors export; classifiers for another class count start afresh",
    )
    g.add_argument(
        "--weights-preprocess",
        action=bool_opt,
        default=None,
        help="normalise as the weights were trained: their channel order, mean and std",
    )
    g.add_argument(
        "--freeze", metavar="LAYER", help="keep the layers up to and including LAYER fixed, e.g. inception4e"
    )

    g = p.add_argument_group("model")
    g.add_argument("--dropout", type=float, help="before the main classifier (paper 0.4)")
    g.add_argument("--dropout-aux", type=float, help="in the auxiliary heads (paper 0.7)")
    g.add_argument("--aux-weight", type=float, help="weight of each auxiliary loss (paper 0.3)")
    g.add_argument("--init", choices=CHOICES["init"], help="weight init (paper/Caffe: caffe)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="number of epochs (with --time-limit: the most)")
    g.add_argument(
        "--time-limit",
        "--time",
        type=float,
        metavar="MINUTES",  # --time: its name before (config.OLD_SETTING_NAMES)
        help="train and validate for at most this long: fewer epochs, and a shorter schedule, on slower machines "
        "(0: no limit, every epoch on every machine)",
    )
    g.add_argument("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    g.add_argument("--optimizer", choices=CHOICES["optimizer"], help="optimiser (paper: sgd)")
    g.add_argument("--lr", type=float, help="(peak) learning rate")
    g.add_argument("--momentum", type=float, help="sgd momentum (paper 0.9)")
    g.add_argument("--nesterov", action=bool_opt, default=None, help="sgd with Nesterov momentum")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (BVLC: 2e-4)")
    g.add_argument("--schedule", choices=CHOICES["schedule"], help="learning-rate schedule, per step (paper: step)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up of the cosine, constant and step schedules")
    g.add_argument("--step-epochs", type=int, help="step schedule: epochs between decays (paper 8)")
    g.add_argument("--step-gamma", type=float, help="step schedule: factor per decay (paper 0.96)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the training loss (paper: none)")
    g.add_argument(
        "--average", choices=CHOICES["average"], help="weight averaging, validated and saved (paper: polyak)"
    )
    g.add_argument("--ema-decay", type=float, help="ema: weight of the old average per step, after a warm-up")

    g = p.add_argument_group("speed")
    g.add_argument("--channels-last", action=bool_opt, default=None, help="channels_last memory format")
    g.add_argument(
        "--amp",
        choices=CHOICES["amp"],
        help="autocast (auto: bf16 on CUDA and on CPUs with AMX or AVX512-BF16, fp32 elsewhere; the run's env.json and "
        "REPORT.md say which ran)",
    )
    g.add_argument("--compile", action=bool_opt, default=None, help="torch.compile the model")
    g.add_argument("--eval-batch-size", type=int, help="batch size of validation and evaluation")

    defaults = TrainConfig()
    for action in p._actions:  # each setting's default, from TrainConfig (the fast preset)
        if hasattr(defaults, action.dest) and action.dest != "preset":
            value = getattr(defaults, action.dest)
            shown = "unset" if value is None else ("on" if value is True else "off" if value is False else value)
            action.help = f"{action.help} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for mistyped options and choices."""

    def error(self, message: str):
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            choices = re.findall(r"'([^']*)'", bad.group(2)) or [c.strip() for c in bad.group(2).split(",")]
            message += _did_you_mean(bad.group(1), choices)
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            message += _did_you_mean(
                unknown.group(1).split("=")[0], [o for a in self._actions for o in a.option_strings]
            )
        super().error(message)


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36)


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="googlenet",
        description="GoogLeNet (Inception-v1), faithful to the paper, and the toolkit around it.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"googlenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Formatter)

    p = command("train", "train (default: the fast CPU recipe on built-in MNIST)")
    _add_train_args(p)

    p = command("evaluate", "metrics of a checkpoint on train/val/test")
    p.add_argument("checkpoint", help="a .pt checkpoint or a run directory")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test", "all"], help="which split(s) to evaluate"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--dataset",
        help="evaluate on this data instead of the training set's: a dataset name or imagefolder:PATH (class names "
        "must match)",
    )
    p.add_argument("--data-dir", help="where the dataset is (torchvision datasets)")
    p.add_argument("--output", help="where to save the metrics JSON (unset: beside the checkpoint's run)")
    p.add_argument(
        "--tta",
        default="none",
        choices=CHOICES["tta"],
        help="test-time augmentation, softmax averaged over the views: flip (image and mirror, 2 views), crops10 (4 "
        "corners + centre "
        "and mirrors), crops144 (the paper's 4 scales x 3 squares x 6 crops x mirror)",
    )

    p = command("report", "rebuild a run's report, plots and tables from its files")
    p.add_argument("run_dir", help="a run directory, e.g. runs/train/exp")

    p = command("summary", "the layer-by-layer model summary: the paper's network, or the one a run trained")
    p.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run directory (e.g. runs/train/exp) or its .pt checkpoint: the network it trained (its classes, "
        "channels, image size, auxiliary heads and --freeze)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        help="classifier outputs (default: 1000, the paper's; refused with RUN, whose weights fix it)",
    )
    p.add_argument(
        "--in-channels", type=int, help="input channels (default: 3; refused with RUN, whose weights fix it)"
    )
    p.add_argument(
        "--image-size", type=int, help="input side in pixels (default: 224, the paper's, or RUN's training size)"
    )
    p.add_argument(
        "--no-aux", action="store_true", help="without the auxiliary heads (the inference network; also with RUN)"
    )
    p.add_argument("--format", default="markdown", choices=["markdown", "text"], help="table format")

    p = command(
        "datasets", "the datasets: whether each is here, its split sizes and default augmentation; or one image folder"
    )
    p.add_argument(
        "dataset",
        nargs="?",
        metavar="DATASET",
        help="imagefolder:PATH: that folder's classes, image counts, sizes, channels and splits; a name: its rows",
    )
    p.add_argument("--data-dir", help="where torchvision datasets are (unset: ~/.cache/googlenet/data)")
    p.add_argument(
        "--val-fraction", type=float, default=TrainConfig.val_fraction, help="validation share of the training set"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help=f"seed of the splits, as train's (default: {TrainConfig.seed})",
    )

    p = command("predict", "classify image files with a checkpoint")
    p.add_argument("checkpoint", help="a .pt checkpoint, a run directory, or an exported .safetensors or .onnx file")
    p.add_argument("images", nargs="+", help="image files, directories or globs")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (at most the class count)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")
    p.add_argument(
        "--invert", action="store_true", help="invert grey levels (dark-on-light scans for MNIST-style models)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    p = command("export", "export the inference network (onnx, pt2, safetensors)")
    p.add_argument("checkpoint", help="a .pt checkpoint or a run directory")
    p.add_argument("--format", default="safetensors", choices=["onnx", "pt2", "safetensors"], help="file format")
    p.add_argument("--output", help="output file (unset: beside the checkpoint)")

    p = command("convert", "convert BVLC's bvlc_googlenet.caffemodel to a checkpoint (no Caffe needed)")
    p.add_argument("caffemodel", help="the .caffemodel file, e.g. bvlc_googlenet.caffemodel")
    p.add_argument("--output", help="checkpoint to write (unset: beside the .caffemodel, with .pt)")

    p = command("benchmark", "training/inference throughput and fraction of the matmul peak")
    p.add_argument("--image-size", type=int, default=32, help="input side in pixels")
    p.add_argument(
        "--batch-size", type=int, default=TrainConfig.batch_size, help="images per step (as googlenet train's default)"
    )
    p.add_argument(
        "--mode", default="train", choices=["train", "eval", "both"], help="training step, inference step or both"
    )
    p.add_argument("--compare", choices=["torchvision"], help="time torchvision's googlenet in the same run")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    p.add_argument("--repeats", type=int, default=5, help="repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--amp",
        default="auto",
        choices=CHOICES["amp"],
        help="autocast, as googlenet train's --amp (applies to every model timed; auto: what googlenet train runs on "
        "this machine)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every model timed, as googlenet train --compile (this project's without its CPU speed-ups)",
    )
    p.add_argument(
        "--variants", action="store_true", help="also time the speed-ups one by one, each added to the previous ones"
    )
    p.add_argument(
        "--data-loading",
        default="memory",
        choices=["memory", "stream"],
        help="stream: also time the streamed data pipeline alone (DataLoader workers, JPEG decoding, the paper's crops "
        "at --image-size)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="--data-loading stream: an image folder to read (unset: a temporary folder of --images synthetic JPEGs)",
    )
    p.add_argument(
        "--images", type=int, help="--data-loading stream without --data: synthetic JPEGs to make (unset: 2000)"
    )
    p.add_argument(
        "--workers", type=int, help="--data-loading stream: DataLoader processes (unset: as googlenet train's default)"
    )

    for name, p in sub.choices.items():
        if name == "train":
            continue  # its defaults come from TrainConfig (_add_train_args)
        for action in p._actions:
            if action.default not in (None, False, argparse.SUPPRESS) and action.help and "default" not in action.help:
                action.help += f" (default: {action.default})"
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from .runtime import keep_freed_memory
    from .train import run_train

    keep_freed_memory()
    run_train(args)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import run_evaluate

    run_evaluate(args)


def cmd_report(args: argparse.Namespace) -> None:
    from .report import run_report

    run_report(args)


def cmd_summary(args: argparse.Namespace) -> None:
    from .summary import run_summary

    run_summary(args)


def cmd_datasets(args: argparse.Namespace) -> None:
    from .data.datasets import run_datasets

    run_datasets(args)


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import run_predict

    run_predict(args)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import run_export

    run_export(args)


def cmd_convert(args: argparse.Namespace) -> None:
    from .caffe import run_convert

    run_convert(args)


def cmd_benchmark(args: argparse.Namespace) -> None:
    from .benchmark import run_benchmark
    from .runtime import keep_freed_memory

    keep_freed_memory()  # as googlenet train does
    run_benchmark(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "summary": cmd_summary,
    "datasets": cmd_datasets,
    "predict": cmd_predict,
    "export": cmd_export,
    "benchmark": cmd_benchmark,
    "convert": cmd_convert,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's own parser, which knows its options (for "did you mean")
        parser._subparsers._group_actions[0].choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename and not str(exc).startswith(str(exc.filename)):
            msg = f"{exc.filename}: {exc.strerror or msg}"
        print(f"googlenet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ...: the file and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"googlenet {args.command}: error: {where}{exc.strerror or exc}: check the path and free space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> NoReturn:
    """The `googlenet` command: main(), then the process's exit (distributed.exit_process: a torchrun worker's
    without the native teardown that can abort it)."""
    try:
        code: object = main()
    except SystemExit as exc:
        code = exc.code
    distributed = sys.modules.get(f"{__package__}.distributed")  # not imported: no process group (and no torch)
    if distributed is None:
        sys.exit(code)
    distributed.exit_process(code)


if __name__ == "__main__":
    entry()
