"""The layer-by-layer model summary of the seed README, plus FLOPs per image; `googlenet summary [RUN]`.

One row per leaf layer in execution order, a bold header row before each
Inception block and auxiliary head, and an "Inception block" row for each
block's concatenation; then the parameter totals. Rows outside the blocks
name their layer as model.py does ("conv1: 2D convolution"): the names
`--freeze` takes. Without a run the network is the paper's (1000 classes,
3 x 224 x 224); with one, the network that run trained, frozen as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checkpoint import load_checkpoint, preprocess_from_checkpoint
from .config import MAX_CHANNELS, MAX_CLASSES, ConfigError, TrainConfig, check_count, check_image_size
from .files import file_sha1
from .model import AuxPool, GoogLeNet, Inception, InceptionAux, count_parameters
from .pretrained import freeze_through
from .tables import format_table

__all__ = [
    "SummaryRow",
    "count_flops",
    "model_facts",
    "run_network",
    "summarize",
    "summary_model",
    "summary_rows",
    "summary_totals",
]

# `googlenet summary` without a run: the paper's network (ILSVRC 2014's 1000 classes, RGB, 224 px)
PAPER_CLASSES, PAPER_CHANNELS, PAPER_IMAGE_SIZE = 1000, 3, 224

LAYER_TYPES: dict[type, str] = {
    nn.Conv2d: "2D convolution",
    nn.ReLU: "ReLU",
    nn.MaxPool2d: "2D max pooling",
    nn.LocalResponseNorm: "Local response norm",
    nn.AdaptiveAvgPool2d: "2D average pooling",
    nn.AvgPool2d: "2D average pooling",
    AuxPool: "2D average pooling",
    nn.Flatten: "Flatten",
    nn.Dropout: "Dropout",
    nn.Linear: "Linear",
}


@dataclass(frozen=True)
class SummaryRow:
    layer: str  # "conv1: 2D convolution" outside the blocks (the layer's name, then its type), "ReLU" inside
    shape: str  # "[-1, C, H, W]", "---" for header rows
    params: str  # "9,472", "---" for header rows


def _layer_type(module: nn.Module) -> str:
    for cls in type(module).__mro__:
        if cls in LAYER_TYPES:
            return LAYER_TYPES[cls]
    return type(module).__name__


@torch.no_grad()
def summary_rows(model: GoogLeNet, image_size: int) -> list[SummaryRow]:
    """Run one training-mode forward (so the aux heads run) and record each layer.

    Takes the plain network of model.py (not an accelerated one, whose fused
    layers would not each get their row).
    """
    rows: list[SummaryRow] = []
    handles = []

    def shape(t: torch.Tensor) -> str:
        return "[" + ", ".join(["-1", *map(str, t.shape[1:])]) + "]"

    def leaf_hook(module: nn.Module, _inputs, output, prefix: str = "") -> None:
        params = sum(p.numel() for p in module.parameters())
        rows.append(SummaryRow(prefix + _layer_type(module), shape(output), f"{params:,}"))

    blocks = (Inception, InceptionAux)
    for name, module in model.named_modules():
        if isinstance(module, blocks):
            header = SummaryRow(f"**{name}**", "---", "---")
            handles.append(module.register_forward_pre_hook(lambda *_, h=header: rows.append(h)))
            if isinstance(module, Inception):
                handles.append(
                    module.register_forward_hook(
                        lambda _m, _i, out: rows.append(SummaryRow("Inception block", shape(out), "0"))
                    )
                )
        elif not list(module.children()):
            top = name.split(".")[0]  # a block's layers are named by its header row; the others by their own name
            prefix = "" if isinstance(getattr(model, top), blocks) else f"{top}: "
            handles.append(module.register_forward_hook(lambda m, i, o, p=prefix: leaf_hook(m, i, o, p)))

    was_training = model.training
    model.train()
    try:
        param = next(model.parameters())
        model(torch.zeros(2, model.in_channels, image_size, image_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def summary_totals(model: GoogLeNet) -> dict[str, int]:
    total = count_parameters(model)
    aux = sum(count_parameters(m) for m in (model.aux1, model.aux2) if m is not None)
    return {
        "Total params": total,
        "Trainable params": count_parameters(model, trainable_only=True),
        "Total params excluding auxiliary params": total - aux,
        "Non-trainable params": total - count_parameters(model, trainable_only=True),
    }


def model_facts(model: GoogLeNet, weights: str | None) -> dict[str, Any]:
    """What a run records about its network (env.json, then REPORT.md): its parameters, trainable and frozen, and
    the file its starting weights came from (--weights: path and sha1), if any."""
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    facts: dict[str, Any] = {"parameters": {"total": total, "trainable": trainable, "frozen": total - trainable}}
    if weights and os.path.isfile(weights):  # (a resumed run's may have moved since it started: its env.json has it)
        facts["weights"] = {"file": os.path.abspath(weights), "sha1": file_sha1(weights)}
    return facts


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int, in_channels: int, train: bool = False) -> int:
    """FLOPs of one forward pass per image (a multiply-add counts 2), by torch.utils.flop_counter."""
    was_training = model.training
    model.train(train)
    try:
        param = next(model.parameters())
        x = torch.zeros(1, in_channels, image_size, image_size, device=param.device, dtype=param.dtype)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def summarize(model: GoogLeNet, image_size: int, fmt: str = "markdown") -> str:
    """The seed README's summary table and totals, then the FLOPs per image."""
    rows = summary_rows(model, image_size)
    table = format_table(["Layer (type)", "Output Shape", "Param #"], [(r.layer, r.shape, r.params) for r in rows], fmt)
    totals = format_table(["", ""], [(k, f"{v:,}") for k, v in summary_totals(model).items()], fmt)
    flops = count_flops(model, image_size, model.in_channels)
    cost = format_table(
        ["", ""],
        [
            ("Input size", f"{model.in_channels} x {image_size} x {image_size}"),
            ("Multiply-adds per image (inference)", f"{flops / 2 / 1e6:,.1f} M"),
            ("FLOPs per image (inference)", f"{flops / 1e6:,.1f} M"),
        ],
        fmt,
    )
    return f"{table}\n\n{totals}\n\n{cost}\n"


def run_network(path: str | Path, image_size: int | None = None, aux: bool = True) -> tuple[GoogLeNet, int, str]:
    """The network a run directory (or its .pt checkpoint) trained, as training built it, and the side to summarise
    it at: `image_size`, else the run's. Returns (model, side, a line saying what was built).

    Read as evaluate and predict read a run (`load_checkpoint`: weights_only, every field checked); its weights are
    not needed. Its `--freeze` is applied as training applied it, so the totals split trainable and frozen as
    training did. `aux` False: without the auxiliary heads (the inference network).
    """
    state = load_checkpoint(path)
    margs = {**state["model_args"], **({} if aux else {"aux_logits": False})}
    model = GoogLeNet(**margs)
    cfg = TrainConfig.from_dict(state["config"]) if state.get("config") is not None else None
    if cfg is not None and cfg.freeze:
        freeze_through(model, cfg.freeze)
    if "preprocess" in state:  # the side evaluate and predict feed it
        trained = preprocess_from_checkpoint(state).image_size
    else:
        trained = cfg.image_size if cfg is not None else PAPER_IMAGE_SIZE
    side = trained if image_size is None else image_size
    channels = f"{model.in_channels} input channel{'s' * (model.in_channels != 1)}"
    size = f"{side} px" + (f" (trained at {trained} px)" if side != trained else "")
    if model.aux_logits:
        heads = "with its auxiliary heads"
    else:
        heads = (
            "without its auxiliary heads (--no-aux)"
            if state["model_args"].get("aux_logits", True)
            else "no auxiliary heads"
        )
    frozen = f"; --freeze {cfg.freeze}: the layers up to and including it frozen" if cfg and cfg.freeze else ""
    about = f"The network {path} trained: {model.num_classes} classes, {channels}, {size}, {heads}{frozen}."
    return model, side, about


def summary_model(args) -> tuple[GoogLeNet, int, str | None]:
    """`googlenet summary`'s network and input side: the paper's (or the flags'), or with `args.run` that run's.

    With a run, --num-classes and --in-channels are refused (its weights fix them, as a checkpoint fixes a timm
    model's); --image-size and --no-aux apply (torchinfo's input size; the inference network).
    """
    if args.image_size is not None:
        check_image_size(args.image_size)
    if args.run is not None:
        flags = {"--num-classes": args.num_classes, "--in-channels": args.in_channels}
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise ConfigError(
                f"{given[0]} does not apply with a run: {args.run} has the classes and channels it was trained with; "
                f"drop {given[0]}, or leave out the run to summarise a network of your own"
            )
        return run_network(args.run, args.image_size, aux=not args.no_aux)
    num_classes = PAPER_CLASSES if args.num_classes is None else args.num_classes
    in_channels = PAPER_CHANNELS if args.in_channels is None else args.in_channels
    check_count("--num-classes", num_classes, MAX_CLASSES)  # bounds: config.py (memory)
    check_count("--in-channels", in_channels, MAX_CHANNELS)
    model = GoogLeNet(num_classes, in_channels, aux_logits=not args.no_aux)
    return model, PAPER_IMAGE_SIZE if args.image_size is None else args.image_size, None


def run_summary(args) -> None:
    """`googlenet summary [RUN]`: the layer-by-layer table of the paper's network, of the flags' or of a run's."""
    model, image_size, about = summary_model(args)
    if about:
        print(f"{about}\n")
    print(summarize(model, image_size, args.format), end="")
