"""Datasets for your own data (``image_folder``, ``cifar10``/``cifar100``) and a run config's ``imports:``.

Builders follow :data:`kdforge.DATASETS`' convention: ``builder(cfg, seed, **data.kwargs)`` returns
``(train_dataset, eval_dataset)``; their keyword parameters are the ``data.kwargs`` a config may set,
checked when the config is validated. ``data.name: "package.module:callable"`` names a builder of
the same shape in your own code::

    # mypkg/datasets.py
    def my_data(cfg, seed, size=64):
        return MyDataset(cfg.root, "train", size), MyDataset(cfg.root, "val", size)

    # run config
    data: {name: "mypkg.datasets:my_data", root: /data/mine, kwargs: {size: 96}}

A run config's ``imports: [mypkg.datasets]`` imports modules before the config is validated, so
``@DATASETS.register``/``@MODELS.register``/``@LOSSES.register`` decorators in them take effect and
their names can be used anywhere in the config. Modules are looked up on ``sys.path`` and then in the
current directory.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset, Subset

from ..config.loading import ConfigError
from ..config.run import DataConfig
from ..registry import DATASETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------ imports
def import_module(name: str, what: str) -> Any:
    """``importlib.import_module(name)``, retried with the current directory on ``sys.path``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name) or os.getcwd() in sys.path:
            raise ConfigError(f"{what}: cannot import {name!r}: {e}") from None
    sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as e:
        sys.path.remove(os.getcwd())
        raise ConfigError(f"{what}: cannot import {name!r} ({e}); is the package installed, or on PYTHONPATH?") from None


def import_modules(names: Sequence[str]) -> None:
    """Import each module of a run config's ``imports:`` list (their registrations run)."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(f"imports[{i}]: {name!r} must be a module name such as mypkg.datasets")
        import_module(name, f"imports[{i}]")


# ------------------------------------------------------------------------------------ image folder
def _with_meta(subset: Subset, full: Any) -> Subset:
    subset.classes, subset.num_classes = full.classes, full.num_classes  # type: ignore[attr-defined]
    return subset


@DATASETS.register("image_folder")
def image_folder(cfg: DataConfig, seed: int, train_dir: str = "train", val_dir: str | None = "val", size: int = 224,
                 resize: int | None = None, padding: int = 0, flip_p: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, channels: int = 3,
                 extensions: Sequence[str] | None = None, decoder: str = "auto") -> tuple[Dataset, Dataset]:
    """Your own images: class sub-folders under ``data.root``/``train_dir`` and ``val_dir`` (or
    ``data.val_fraction`` of the training folder); resize + crop to ``size``, ``augment`` = random crop + flip."""
    from ..data.fashion_mnist import train_val_split
    from ..data.image_folder import IMG_EXTENSIONS, ImageFolder, ImageTransform

    if cfg.root is None:
        raise ConfigError("image_folder needs data.root: the folder holding train/<class>/*.png and val/<class>/*.png")
    if len(mean) != len(std) or len(mean) not in (1, channels):
        raise ConfigError(f"data.kwargs.mean/std need 1 or {channels} (channels) values each, got {mean} / {std}")
    root = Path(cfg.root).expanduser()
    train_root = root / train_dir
    if not train_root.is_dir():
        raise ConfigError(f"image_folder: {str(train_root)!r} does not exist; data.root must hold "
                          f"{train_dir}/<class>/<image> (set data.kwargs.train_dir to use another sub-folder)")
    try:
        common = {"size": size, "resize": resize, "mean": mean, "std": std}
        train_tf = ImageTransform(train=cfg.augment, flip_p=flip_p, padding=padding, **common)
        eval_tf = ImageTransform(train=False, **common)
    except ValueError as e:
        raise ConfigError(f"image_folder data.kwargs: {e}") from None
    opts: dict[str, Any] = {"extensions": extensions or IMG_EXTENSIONS, "channels": channels, "decoder": decoder}
    train = ImageFolder(train_root, train_tf, **opts)
    if cfg.val_fraction > 0:
        full_eval = ImageFolder(train_root, eval_tf, **opts)
        tr, va = train_val_split(len(train), cfg.val_fraction, seed)
        return _with_meta(Subset(train, tr.tolist()), train), _with_meta(Subset(full_eval, va.tolist()), train)
    if val_dir is None or not (root / val_dir).is_dir():
        raise ConfigError(f"image_folder: no evaluation folder {str(root / (val_dir or ''))!r}; add "
                          f"{val_dir or 'val'}/<class>/<image> under data.root, set data.kwargs.val_dir, or set "
                          f"data.val_fraction to hold out part of the training images")
    return train, ImageFolder(root / val_dir, eval_tf, classes=train.classes, **opts)


# ------------------------------------------------------------------------------------------- CIFAR
def _cifar(name: str) -> Callable[..., tuple[Dataset, Dataset]]:
    def build(cfg: DataConfig, seed: int, padding: int = 4, flip_p: float = 0.5, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> tuple[Dataset, Dataset]:
        from ..data.cifar import CIFAR, load_cifar
        from ..data.fashion_mnist import train_val_split

        kw: dict[str, Any] = {"padding": padding, "flip_p": flip_p, "mean": mean, "std": std}
        if cfg.val_fraction > 0:
            data = load_cifar(name, cfg.root, train=True)
            tr, va = train_val_split(len(data[1]), cfg.val_fraction, seed)
            return (CIFAR(name, None, augment=cfg.augment, indices=tr, data=data, **kw),
                    CIFAR(name, None, train=False, indices=va, data=data, **kw))
        return (CIFAR(name, cfg.root, train=True, augment=cfg.augment, **kw),
                CIFAR(name, cfg.root, train=False, **kw))

    build.__name__ = name
    build.__doc__ = (f"{name.upper().replace('CIFAR', 'CIFAR-')} from the python-pickle archive under data.root (read "
                     f"safely); augment = random crop (padding px) + flip; val_fraction holds out training images.")
    return build


DATASETS.register("cifar10")(_cifar("cifar10"))
DATASETS.register("cifar100")(_cifar("cifar100"))

__all__ = ["image_folder", "import_module", "import_modules"]
