"""googlenet: GoogLeNet (Inception-v1) faithful to the paper, and the toolkit around it."""

from .model import MIN_IMAGE_SIZE, GoogLeNet, GoogLeNetOutput, count_parameters

__version__ = "0.1.0"

__all__ = ["MIN_IMAGE_SIZE", "GoogLeNet", "GoogLeNetOutput", "count_parameters", "load_model", "__version__"]


def load_model(path, map_location="cpu"):
    """Load a checkpoint (.pt) or exported .safetensors file as an eval-mode GoogLeNet.

    Returns (model, metadata). Files are read without unpickling.
    """
    from pathlib import Path

    if str(path).endswith(".safetensors"):
        from .export import load_safetensors

        return load_safetensors(Path(path), map_location)
    from .checkpoint import load_model as _load

    return _load(path, map_location)
