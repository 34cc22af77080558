"""torch.hub entry points for this repository.

    model = torch.hub.load("path/to/repo", "googlenet", source="local", num_classes=10, in_channels=1)
    model = torch.hub.load("path/to/repo", "googlenet", source="local", checkpoint="runs/train/exp/weights/best.pt")

Works from a plain clone: the repository's src/ goes first on sys.path, so
the package need not be installed (and this checkout's code is the one used).
"""

import sys
from pathlib import Path

dependencies = ["torch"]

_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


def googlenet(pretrained: bool = False, checkpoint: str | Path | None = None, **kwargs):
    """GoogLeNet (Inception-v1) as in the paper.

    Without `checkpoint`: a freshly initialised `GoogLeNet(**kwargs)` (e.g.
    num_classes=10, in_channels=1, aux_logits=False). With `checkpoint`: the
    eval-mode model of a googlenet .pt checkpoint, run directory or exported
    .safetensors file, loaded without unpickling; the only keyword accepted
    then is `map_location`. For its class names and preprocessing use
    `googlenet.load_model(checkpoint)`, which also returns the metadata.
    No pretrained weights are published: `pretrained=True` needs `checkpoint`.
    """
    import googlenet as package

    if checkpoint is not None:
        map_location = kwargs.pop("map_location", "cpu")
        if kwargs:
            raise TypeError(f"the checkpoint fixes the architecture; drop {', '.join(sorted(kwargs))}")
        model, _ = package.load_model(checkpoint, map_location=map_location)
        return model
    if pretrained:
        raise ValueError(
            "no pretrained GoogLeNet weights are published: train one (googlenet train) and pass checkpoint=PATH"
        )
    return package.GoogLeNet(**kwargs)
