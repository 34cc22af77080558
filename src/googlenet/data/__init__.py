"""Data: from files on disk to batches of model inputs.

- datasets.py   the registry of named datasets, the split types (Split in memory, FileSplit on disk,
                Dataset), load_dataset and load_evaluation_data; `googlenet datasets`
- mnist.py      MNIST's IDX format and the copy vendored in the package (datasets/mnist/)
- folders.py    image folders: class subfolders, seeded stratified splits, the memory budget
- images.py     decoding one image file to a uint8 tensor (PIL, torchvision.io for JPEGs)
- transforms.py Augment, Preprocess and batch_transform (a whole batch at a time), evaluation's
                geometry, the test-time views (TTA), the paper's random crops of streamed folders
- stream.py     streamed folders: DataLoader workers, the epoch's batch order, evaluation batches

A batch of the in-memory path: `load_dataset` (uint8 N x C x H x W tensors) -> indexed in the epoch's
order -> `batch_transform` (augment, resize, normalise) -> the model.
"""

from ..errors import DataError
from .datasets import (
    DATASETS,
    Dataset,
    DatasetInfo,
    FileSplit,
    Split,
    absolute_dataset,
    channel_stats,
    dataset_info,
    load_dataset,
    load_evaluation_data,
)
from .folders import class_name_problem, folder_splits, memory_budget_bytes, stratified_split
from .images import IMAGE_EXTENSIONS, load_image, open_image, read_image
from .mnist import MAX_IDX_BYTES, MNIST_FILES, mnist_dir, read_idx, read_mnist
from .stream import TrainLoader, default_workers, eval_batches, make_jpeg_folder, pipeline_images_per_second
from .transforms import (
    AUGMENT_SETTINGS,
    DIGITS,
    PHOTOS,
    TTA_MODES,
    Augment,
    Preprocess,
    augmentation_for,
    batch_transform,
    crop_seed,
    elastic_field,
    eval_side,
    evaluation_view,
    resize_shorter,
    train_transform,
    tta_view_count,
    tta_views,
    weighted_views,
)

__all__ = [
    "absolute_dataset",
    "DATASETS",
    "DIGITS",
    "IMAGE_EXTENSIONS",
    "MAX_IDX_BYTES",
    "MNIST_FILES",
    "PHOTOS",
    "TTA_MODES",
    "AUGMENT_SETTINGS",
    "Augment",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "FileSplit",
    "Preprocess",
    "Split",
    "TrainLoader",
    "augmentation_for",
    "batch_transform",
    "channel_stats",
    "class_name_problem",
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
    "open_image",
    "memory_budget_bytes",
    "mnist_dir",
    "pipeline_images_per_second",
    "read_idx",
    "read_image",
    "read_mnist",
    "resize_shorter",
    "stratified_split",
    "train_transform",
    "tta_view_count",
    "tta_views",
    "weighted_views",
]
