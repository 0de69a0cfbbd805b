"""Datasets for your own data: ``image_folder``, ``cifar10``/``cifar100``, and ``"package.module:callable"``.

``data.name`` is either a name registered in ``DATASETS`` (builders ``builder(cfg, seed)``) or an
import path ``"package.module:callable"``. The callable is called with ``data.kwargs`` as keyword
arguments, plus ``root=data.root`` and ``seed=run seed`` when it has parameters of those names, and
returns ``(train_dataset, eval_dataset)``::

    # mypkg/datasets.py
    def my_data(root, image_size=32):
        return MyDataset(root, "train", image_size), MyDataset(root, "val", image_size)

    # run config
    data: {name: "mypkg.datasets:my_data", root: /data/mine, kwargs: {image_size: 64}}

A run config's ``imports: [mypkg.datasets]`` imports modules before the config is validated, so
``@DATASETS.register``/``@MODELS.register``/``@LOSSES.register`` decorators in them take effect and
their names can be used anywhere in the config. Modules are looked up on ``sys.path`` and then in the
current directory.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.utils.data import Dataset

from ..config.loading import ConfigError
from ..config.run import DataConfig
from .data import DATASETS

Builder = Callable[[DataConfig, int], "tuple[Dataset, Dataset]"]


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


# ------------------------------------------------------------------------------------- resolution
def _call_user(fn: Callable[..., Any], spec: str) -> Builder:
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def build(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
        kwargs = dict(cfg.kwargs)
        if cfg.root is not None and ("root" in params or takes_any):
            kwargs.setdefault("root", cfg.root)
        if "seed" in params:
            kwargs.setdefault("seed", seed)
        try:
            inspect.signature(fn).bind(**kwargs)
        except TypeError as e:
            raise ConfigError(f"data.name {spec!r} cannot be called with {sorted(kwargs)}: {e}; its parameters are "
                              f"{list(params)} (set them in data.kwargs)") from None
        out = fn(**kwargs)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ConfigError(f"data.name {spec!r} returned {type(out).__name__}; it must return (train_dataset, "
                              f"eval_dataset)")
        for part, ds in zip(("train", "eval"), out):
            if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
                raise ConfigError(f"data.name {spec!r}: its {part} dataset is a {type(ds).__name__}, which has no "
                                  f"__getitem__/__len__ (a map-style torch Dataset is needed)")
        return out[0], out[1]

    return build


def resolve_dataset(name: str) -> Builder:
    """The builder for ``data.name``: a registered name, or ``"package.module:callable"`` (see module docs)."""
    if ":" not in name:
        try:
            return DATASETS.get(name)
        except KeyError as e:
            raise ConfigError(f"data.name: {e} Or name a function as 'package.module:callable' returning "
                              f"(train, eval).") from None
    mod_name, _, attr = name.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"data.name {name!r} must look like 'package.module:callable'")
    obj: Any = import_module(mod_name, f"data.name {name!r}")
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:20]
            raise ConfigError(f"data.name {name!r}: module {mod_name!r} has no attribute {attr!r}; it has: "
                              f"{', '.join(public)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"data.name {name!r} names a {type(obj).__name__}, which is not callable")
    return _call_user(obj, name)


# ------------------------------------------------------------------------------------ image folder
class ImageFolderOptions(BaseModel):
    """``data.kwargs`` of ``image_folder`` (see :class:`~kdforge.data.image_folder.ImageTransform`)."""

    model_config = ConfigDict(extra="forbid")

    train_dir: str = "train"
    val_dir: str | None = "val"
    size: int = Field(default=224, ge=1)
    resize: int | None = Field(default=None, ge=1)
    padding: int = Field(default=0, ge=0)
    flip_p: float = Field(default=0.5, ge=0, le=1)
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    channels: int = 3
    extensions: list[str] | None = None
    decoder: str = "auto"


def _options(model: type[BaseModel], cfg: DataConfig) -> Any:
    try:
        return model.model_validate(cfg.kwargs)
    except ValidationError as e:
        lines = [f"  data.kwargs.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid data.kwargs for {cfg.name!r}:\n" + "\n".join(lines)
                          + f"\naccepted: {', '.join(model.model_fields)}") from None


@DATASETS.register("image_folder")
def image_folder(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    """Class sub-folders under ``data.root``/``train_dir`` (training) and ``val_dir`` (evaluation); with
    ``data.val_fraction > 0`` the evaluation set is that fraction of the training folder instead.
    ``data.augment`` turns on the random crop + flip of training images."""
    from ..data.fashion_mnist import train_val_split
    from ..data.image_folder import IMG_EXTENSIONS, ImageFolder, ImageTransform
    from pathlib import Path

    o = _options(ImageFolderOptions, cfg)
    if cfg.root is None:
        raise ConfigError("image_folder needs data.root: the folder holding train/<class>/*.png and val/<class>/*.png")
    if len(o.mean) != len(o.std) or len(o.mean) not in (1, o.channels):
        raise ConfigError(f"data.kwargs.mean/std need 1 or {o.channels} (channels) values each, got {o.mean} / {o.std}")
    root = Path(cfg.root).expanduser()
    train_root = root / o.train_dir
    if not train_root.is_dir():
        raise ConfigError(f"image_folder: {str(train_root)!r} does not exist; data.root must hold "
                          f"{o.train_dir}/<class>/<image> (set data.kwargs.train_dir to use another sub-folder)")
    common = {"size": o.size, "resize": o.resize, "mean": o.mean, "std": o.std}
    train_tf = ImageTransform(train=cfg.augment, flip_p=o.flip_p, padding=o.padding, **common)
    eval_tf = ImageTransform(train=False, **common)
    opts = {"extensions": o.extensions or IMG_EXTENSIONS, "channels": o.channels, "decoder": o.decoder}
    train = ImageFolder(train_root, train_tf, **opts)
    if cfg.val_fraction > 0:
        from torch.utils.data import Subset

        full_eval = ImageFolder(train_root, eval_tf, **opts)
        tr, va = train_val_split(len(train), cfg.val_fraction, seed)
        return _with_meta(Subset(train, tr.tolist()), train), _with_meta(Subset(full_eval, va.tolist()), train)
    if o.val_dir is None or not (root / o.val_dir).is_dir():
        raise ConfigError(f"image_folder: no evaluation folder {str(root / (o.val_dir or ''))!r}; add "
                          f"{o.val_dir or 'val'}/<class>/<image> under data.root, set data.kwargs.val_dir, or set "
                          f"data.val_fraction to hold out part of the training images")
    return train, ImageFolder(root / o.val_dir, eval_tf, classes=train.classes, **opts)


def _with_meta(subset: Any, full: Any) -> Any:
    subset.classes, subset.num_classes = full.classes, full.num_classes
    return subset


# ------------------------------------------------------------------------------------------- CIFAR
class CifarOptions(BaseModel):
    """``data.kwargs`` of ``cifar10``/``cifar100``."""

    model_config = ConfigDict(extra="forbid")

    padding: int = Field(default=4, ge=0)
    flip_p: float = Field(default=0.5, ge=0, le=1)
    mean: list[float] | None = None
    std: list[float] | None = None


def _cifar(name: str) -> Builder:
    def build(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
        from ..data.cifar import CIFAR, load_cifar
        from ..data.fashion_mnist import train_val_split

        o = _options(CifarOptions, cfg)
        kw = {"padding": o.padding, "flip_p": o.flip_p, "mean": o.mean, "std": o.std}
        if cfg.val_fraction > 0:
            data = load_cifar(name, cfg.root, train=True)
            tr, va = train_val_split(len(data[1]), cfg.val_fraction, seed)
            return (CIFAR(name, None, augment=cfg.augment, indices=tr, data=data, **kw),
                    CIFAR(name, None, train=False, indices=va, data=data, **kw))
        return (CIFAR(name, cfg.root, train=True, augment=cfg.augment, **kw),
                CIFAR(name, cfg.root, train=False, **kw))

    build.__doc__ = (f"{name}: the python-pickle archive under data.root (read safely); data.augment adds random "
                     f"crop (kwargs.padding, default 4) + flip; data.val_fraction holds out part of the training set.")
    return build


DATASETS.register("cifar10")(_cifar("cifar10"))
DATASETS.register("cifar100")(_cifar("cifar100"))

__all__ = ["CifarOptions", "ImageFolderOptions", "image_folder", "import_module", "import_modules", "resolve_dataset"]
