"""Build models by name and load weights safely.

``build_model`` accepts

* a name registered in :data:`kdforge.MODELS` (``"resnet32x4"``; see ``MODELS.names()``),
* ``"torchvision:<name>"`` / ``"timm:<name>"`` when those packages are installed,
* ``"hf:<transformers class>"`` with ``config={...}`` or ``pretrained="local/dir"`` (see :mod:`kdforge.models.hf`),
* ``"package.module:callable"`` — any importable callable returning an ``nn.Module``.

``load_weights`` reads a state dict with ``torch.load(..., weights_only=True)`` (no arbitrary
pickles) or safetensors, unwraps common checkpoint layouts and DDP's ``module.`` prefix, and fails
with a :class:`WeightsError` that lists what does not fit.
"""
from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import MODELS

CHECKPOINT_KEYS = ("model", "state_dict", "student")
_SHOW = 5  # how many names an error lists per category


class WeightsError(ValueError):
    """Weights that cannot be loaded into a model (bad file, layout, keys or shapes)."""


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist."""


def _external(lib: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = importlib.import_module(lib)
    except ImportError:
        raise ImportError(
            f"model {lib}:{name} needs the {lib} package, which is not installed; "
            f"run `pip install {lib}` (or `pip install kdforge[vision]`)"
        ) from None
    except Exception as e:  # e.g. a torchvision built for another torch version fails with RuntimeError
        raise ImportError(f"model {lib}:{name}: {lib} is installed but does not import ({type(e).__name__}: {e}); "
                          f"install the {lib} version built for torch {torch.__version__}") from None
    if lib == "timm":
        if not module.is_model(name):
            hint = module.list_models(f"*{name}*")[:8]
            raise ValueError(f"unknown timm model {name!r}" + (f"; similar: {', '.join(hint)}" if hint else "")
                             + " (timm.list_models('*pattern*') lists them)")
        return module.create_model(name, **kwargs)
    names = module.models.list_models()
    if name not in names:
        from ..registry import closest
        hint = closest(name, names)
        raise ValueError(f"unknown torchvision model {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "")
                         + " (torchvision.models.list_models() lists them)")
    return module.models.get_model(name, **kwargs)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model from a zoo name, ``"torchvision:x"``, ``"timm:x"`` or ``"package.module:callable"``.

    Keyword arguments go to the builder (zoo models take ``num_classes=10, in_channels=3``).
    An unknown zoo name raises :class:`kdforge.RegistryError` naming the closest registered names.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string, got {name!r}")
    if ":" not in name:
        return MODELS.build(name, **kwargs)
    lib, _, rest = name.partition(":")
    if lib in ("torchvision", "timm"):
        model = _external(lib, rest, kwargs)
    elif lib == "hf":
        from .hf import build_hf_model

        model = build_hf_model(rest, **kwargs)
    else:
        model = MODELS.get(name)(**kwargs)  # 'package.module:callable', imported by the registry
    if not isinstance(model, nn.Module):
        raise TypeError(f"model spec {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ------------------------------------------------------------------------------------------ weights
def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{path} is a safetensors file; run `pip install safetensors` to read it") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
            detail = detail.split(" was not")[0].replace("WeightsUnpickler error: ", "")
            raise WeightsError(
                f"{path} holds Python objects besides tensors ({detail or 'see the cause below'}), which kdforge "
                f"does not unpickle for safety. Re-save only the weights: torch.save(model.state_dict(), path)"
            ) from None  # not chained: torch's text suggests weights_only=False, which kdforge never does
        raise WeightsError(f"{path} is not a PyTorch weights file (save one with torch.save(model.state_dict(), path)): {e}") from e
    except Exception as e:  # garbage input makes the unpickler fail in many ways (KeyError, EOFError, ...)
        raise WeightsError(
            f"{path} is not a PyTorch weights file or is damaged ({type(e).__name__}: {e}); "
            f"save one with torch.save(model.state_dict(), path)"
        ) from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path, key: str | None) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    keys = ", ".join(map(repr, list(obj)[:10]))
    if key is not None:
        if key not in obj:
            raise WeightsError(f"{path} has no entry {key!r}; its top-level keys are: {keys}")
        obj = obj[key]
    elif not _is_state_dict(obj):
        found = next((k for k in CHECKPOINT_KEYS if _is_state_dict(obj.get(k))), None)
        if found is None:
            raise WeightsError(
                f"{path} is a dict but neither a state dict nor a checkpoint holding one under "
                f"{', '.join(map(repr, CHECKPOINT_KEYS))}; its top-level keys are: {keys}. Pass key='...' to pick one."
            )
        obj = obj[found]
    if not _is_state_dict(obj):
        raise WeightsError(f"{path}: entry {key!r} is not a state dict (a mapping of names to tensors)")
    return obj


def _listing(kind: str, items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {kind}: {', '.join(items[:_SHOW])}{more}"


def load_weights(model: nn.Module, path: str | Path, strict: bool = True, key: str | None = None) -> nn.Module:
    """Load weights from ``path`` into ``model`` (in place) and return the model.

    ``path`` holds a raw state dict or a checkpoint dict with one under ``key`` or, when ``key`` is
    None, under the first of ``"model"``, ``"state_dict"``, ``"student"``. A ``"module."`` prefix on
    every key (DistributedDataParallel) is stripped. With ``strict=False`` missing and unexpected keys
    are ignored; shape mismatches always raise. Raises :class:`WeightsError` (a ``ValueError``;
    :class:`WeightsFileNotFoundError` also a ``FileNotFoundError`` for a missing file).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"weights file {str(path)!r} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    state = dict(_unwrap(_read(path), path, key))
    own = model.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
        for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    problems = [_listing("shape mismatches", mismatched)] if mismatched else []
    if strict:
        problems += [_listing("missing keys", missing)] if missing else []
        problems += [_listing("unexpected keys", unexpected)] if unexpected else []
    if problems:
        hint = (" Was the model built with the same architecture and num_classes/in_channels as the weights?"
                + (" Pass strict=False to skip missing/unexpected keys." if strict and (missing or unexpected) else ""))
        raise WeightsError(f"cannot load {path} into {type(model).__name__}: " + "; ".join(problems) + "." + hint)
    model.load_state_dict(state, strict=strict)
    return model


__all__ = ["CHECKPOINT_KEYS", "WeightsError", "WeightsFileNotFoundError", "build_model", "load_weights"]
