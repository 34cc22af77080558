"""Data: from files on disk to batches of model inputs.

- datasets.py   the registry of named datasets, the split types (Split in memory, FileSplit on disk,
                Dataset), load_dataset and load_evaluation_data; `googlenet datasets`
- mnist.py      MNIST's IDX format and the copy vendored in the package (datasets/mnist/)
- folders.py    image folders: class subfolders, seeded stratified splits, the memory budget
- images.py     decoding one image file to a uint8 tensor (PIL, torchvision.io for JPEGs)
- transforms.py Augment, Preprocess and batch_transform (a whole batch at a time), evaluation's
                geometry, the paper's random crops of streamed folders
- stream.py     streamed folders: DataLoader workers, the epoch's batch order, evaluation batches

A batch of the in-memory path: `load_dataset` (uint8 N x C x H x W tensors) -> indexed in the epoch's
order -> `batch_transform` (augment, resize, normalise) -> the model.
"""

from ..errors import DataError
from .datasets import DATASETS, Dataset, DatasetInfo, FileSplit, Split, dataset_info, load_dataset, load_evaluation_data
from .folders import folder_splits, memory_budget_bytes, stratified_split
from .images import IMAGE_EXTENSIONS, load_image, read_image
from .mnist import MAX_IDX_BYTES, MNIST_FILES, mnist_dir, read_idx, read_mnist
from .stream import TrainLoader, default_workers, eval_batches, make_jpeg_folder, pipeline_images_per_second
from .transforms import (
    DIGITS,
    PHOTOS,
    Augment,
    Preprocess,
    batch_transform,
    crop_seed,
    elastic_field,
    eval_side,
    evaluation_view,
    resize_shorter,
    train_transform,
)

__all__ = [
    "DATASETS",
    "DIGITS",
    "IMAGE_EXTENSIONS",
    "MAX_IDX_BYTES",
    "MNIST_FILES",
    "PHOTOS",
    "Augment",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "FileSplit",
    "Preprocess",
    "Split",
    "TrainLoader",
    "batch_transform",
    "crop_seed",
    "dataset_info",
    "default_workers",
    "elastic_field",
    "eval_batches",
    "eval_side",
    "evaluation_view",
    "folder_splits",
    "load_dataset",
    "load_evaluation_data",
    "load_image",
    "make_jpeg_folder",
    "memory_budget_bytes",
    "mnist_dir",
    "pipeline_images_per_second",
    "read_idx",
    "read_image",
    "read_mnist",
    "resize_shorter",
    "stratified_split",
    "train_transform",
]
