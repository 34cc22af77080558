"""The layer-by-layer model summary of the seed README, plus FLOPs per image.

One row per leaf layer in execution order, a bold header row before each
Inception block and auxiliary head, and an "Inception block" row for each
block's concatenation; then the parameter totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import MAX_CHANNELS, MAX_CLASSES, check_count, check_image_size
from .model import AuxPool, GoogLeNet, Inception, InceptionAux, count_parameters
from .tables import format_table

__all__ = ["SummaryRow", "count_flops", "summarize", "summary_rows", "summary_totals"]

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
    layer: str
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

    def leaf_hook(module: nn.Module, _inputs, output) -> None:
        params = sum(p.numel() for p in module.parameters())
        rows.append(SummaryRow(_layer_type(module), shape(output), f"{params:,}"))

    for name, module in model.named_modules():
        if isinstance(module, (Inception, InceptionAux)):
            header = SummaryRow(f"**{name}**", "---", "---")
            handles.append(module.register_forward_pre_hook(lambda *_, h=header: rows.append(h)))
            if isinstance(module, Inception):
                handles.append(
                    module.register_forward_hook(
                        lambda _m, _i, out: rows.append(SummaryRow("Inception block", shape(out), "0"))
                    )
                )
        elif not list(module.children()):
            handles.append(module.register_forward_hook(leaf_hook))

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


def run_summary(args) -> None:
    """`googlenet summary`: the layer-by-layer table of a GoogLeNet of the given classes, channels and input size."""
    check_image_size(args.image_size)
    check_count("--num-classes", args.num_classes, MAX_CLASSES)  # bounds: config.py (memory)
    check_count("--in-channels", args.in_channels, MAX_CHANNELS)
    model = GoogLeNet(args.num_classes, args.in_channels, aux_logits=not args.no_aux)
    print(summarize(model, args.image_size, args.format), end="")
