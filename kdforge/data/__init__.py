"""Datasets and transforms."""
from .fashion_mnist import (
    CLASSES,
    DEFAULT_DIRS,
    MEAN,
    STD,
    DatasetNotFoundError,
    FashionMNIST,
    IDXError,
    RandomCropFlip,
    WithIndex,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
    train_val_split,
)
from .transforms import Compose, ReplayableTransform, ReplayError, concat_params, take_rows

__all__ = [
    "Compose", "ReplayError", "ReplayableTransform", "concat_params", "take_rows",
    "CLASSES", "DEFAULT_DIRS", "DatasetNotFoundError", "FashionMNIST", "IDXError", "MEAN", "RandomCropFlip", "STD",
    "WithIndex", "find_fashion_mnist", "load_fashion_mnist", "read_idx", "train_val_split",
]
