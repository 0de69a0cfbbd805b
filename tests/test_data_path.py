"""The trainer's loaders keep the batched ``__getitems__`` path for every built-in dataset and every
wrapper the engine adds (subsets, ``with_index``, augmentation): no per-sample ``__getitem__`` calls."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from test_data import fake_dataset
from torch.utils.data import Dataset

from kdforge.data.wrappers import WithIndex, fetch_many
from kdforge.engine.data import DATASETS
from kdforge.engine.distributed import DistContext
from kdforge.engine.trainer import Trainer
from kdforge.registry import TASKS

def _fmnist_root(tmp_path: Any, name: str) -> Any:
    return fake_dataset(tmp_path / "fm", n_train=64, n_test=32)


def _cifar_root(tmp_path: Any, name: str) -> Any:
    from user_data_helpers import write_cifar

    write_cifar(tmp_path / "cifar", name, n_train=40, n_test=20)
    return tmp_path / "cifar"


def _folder_root(tmp_path: Any, name: str) -> Any:
    from user_data_helpers import write_image_folder

    return write_image_folder(tmp_path / "images", per_class=12, val_per_class=6)


def _text_root(tmp_path: Any, name: str) -> Any:
    for i in range(10):
        (tmp_path / "text" / f"m{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "text" / f"m{i}.py").write_text(f"x{i} = {i}\n" * 40)
    return tmp_path / "text"


# per built-in dataset: the task that reads it, data.kwargs small enough for a test, and its data root
BUILTIN = {
    "fashion_mnist": ("classification", {}, _fmnist_root),
    "scenes_seg": ("segmentation", {"n_train": 24, "n_test": 12, "size": 48}, _fmnist_root),
    "scenes_det": ("detection", {"n_train": 24, "n_test": 12, "size": 48}, _fmnist_root),
    "cifar10": ("classification", {}, _cifar_root),
    "cifar100": ("classification", {}, _cifar_root),
    "image_folder": ("classification", {"size": 16}, _folder_root),
    "text": ("language_modeling", {"seq_len": 16}, _text_root),
}
#: data settings a dataset needs in every variant (the text corpus is split by file: val_fraction > 0)
DATA_BASE = {"text": {"val_fraction": 0.2}}
VARIANTS = {
    "plain": {},
    "augment+index+subset": {"augment": True, "with_index": True, "train_subset": 20, "test_subset": 10},
    "val_split": {"val_fraction": 0.25, "augment": True},
}


def test_every_registered_dataset_is_covered():
    builtin = {n for n in DATASETS.names() if DATASETS.get(n).__module__.startswith("kdforge.")}  # not tests' own
    missing = sorted(builtin - set(BUILTIN))
    assert not missing, f"add {missing} to BUILTIN in tests/test_data_path.py (task and small kwargs)"


def _chain(ds: Any) -> list[Any]:
    out = [ds]
    while isinstance(getattr(out[-1], "__dict__", {}).get("dataset"), Dataset):
        out.append(out[-1].dataset)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", list(BUILTIN))
def test_trainer_loaders_never_fetch_per_item(name, variant, tmp_path, monkeypatch):
    task_name, kwargs, make_root = BUILTIN[name]
    if name == "text" and VARIANTS[variant].get("augment"):
        pytest.skip("text has no augmentation")
    root = make_root(tmp_path, name)
    data = {"name": name, "root": str(root), "batch_size": 8, "kwargs": {**kwargs, "cache_dir": str(tmp_path)}
            if name.startswith("scenes") else kwargs, **DATA_BASE.get(name, {}), **VARIANTS[variant]}
    trainer = Trainer({"task": task_name, "model": {"name": "cnn"}, "data": data}, verbose=False)
    task = TASKS.build(task_name)
    loaders = trainer._data(DistContext(), task)[:2] + (trainer._first_batch_loader, trainer._refresh_loader)
    for loader in loaders:
        chain = _chain(loader.dataset)
        assert all(callable(getattr(d, "__getitems__", None)) for d in chain), [type(d).__name__ for d in chain]

        def per_item(self: Any, i: int) -> Any:
            raise AssertionError(f"{type(self).__name__}[{i}] fetched per item: the batched path was lost")
        for cls in {type(d) for d in chain}:
            monkeypatch.setattr(cls, "__getitem__", per_item)
        batch = next(iter(loader))
        monkeypatch.undo()
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        assert len(first) > 0
        if loader is loaders[0] and VARIANTS[variant].get("with_index") and name != "scenes_det":  # det_collate drops it
            assert isinstance(batch[-1], torch.Tensor) and batch[-1].dtype == torch.long


@pytest.mark.parametrize("name", ["scenes_seg", "scenes_det"])
def test_batched_items_equal_per_item_items(name, tmp_path):
    root = fake_dataset(tmp_path / "fm", n_train=64, n_test=32)
    cfg = Trainer({"task": BUILTIN[name][0], "model": {"name": "cnn"},
                   "data": {"name": name, "root": str(root), "augment": True,
                            "kwargs": {**BUILTIN[name][1], "cache_dir": str(tmp_path)}}}, verbose=False).cfg.data
    train, _ = DATASETS.get(name)(cfg, 0)
    idx = [3, 0, 7, 7, 1]
    torch.manual_seed(1)
    batched = fetch_many(train, idx)
    torch.manual_seed(1)
    single = [train[i] for i in idx]
    for (xb, yb), (xs, ys) in zip(batched, single):
        assert torch.equal(xb, xs)
        if isinstance(ys, dict):
            assert ys.keys() == yb.keys() and all(torch.equal(yb[k], ys[k]) for k in ys)
        else:
            assert torch.equal(yb, ys)


def test_with_index_batched_and_single_agree_and_forward_attributes():
    class Items(Dataset):
        targets = [5, 6, 7]

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> Any:
            return torch.tensor([i]), i + 5

    class Plain(Items):
        def __getitem__(self, i: int) -> Any:
            return torch.tensor([i])

    ds = WithIndex(Items())
    assert ds.__getitems__([2, 0]) == [ds[2], ds[0]] and ds[2][-1] == 2 and ds.targets == [5, 6, 7]
    assert WithIndex(Plain())[1][1] == 1  # non-tuple items become (item, index)
