"""Fashion-MNIST IDX reading, lookup errors, dataset, augmentation, split, WithIndex."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdforge.data import (
    CLASSES,
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
from kdforge.data import fashion_mnist as fm

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` as an IDX file (gzipped when ``path`` ends in .gz)."""
    code = _CODES[arr.dtype]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def fake_dataset(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    for stem_img, stem_lbl, n in [(*fm.FILES[True], n_train), (*fm.FILES[False], n_test)]:
        write_idx(root / (stem_img + ext), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / (stem_lbl + ext), (np.arange(n) % 10).astype(np.uint8))
    return root


# ------------------------------------------------------------------------------------ read_idx
@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([1, -2, 70000], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "x.idx", arr))
    assert out.tolist() == [1, -2, 70000] and out.dtype == np.int32


def test_read_idx_truncated_and_corrupt(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IDXError, match=r"t-idx3-ubyte is truncated: header \(3, 28, 28\) promises 2368 bytes"):
        read_idx(path)
    path.write_bytes(path.read_bytes() + b"\0" * 20)
    with pytest.raises(IDXError, match="longer than its header"):
        read_idx(path)
    gz = write_idx(tmp_path / "t.gz", np.zeros((3, 28, 28), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(IDXError, match="t.gz: the gzip stream is truncated or corrupt"):
        read_idx(gz)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 10)
    with pytest.raises(IDXError, match="bad is not an IDX file"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ------------------------------------------------------------------------------------- lookup
def test_missing_directory_message(tmp_path, monkeypatch):
    monkeypatch.delenv("KDFORGE_DATA", raising=False)
    monkeypatch.setattr(fm, "DEFAULT_DIRS", ("$KDFORGE_DATA", str(tmp_path / "nowhere")))
    with pytest.raises(DatasetNotFoundError) as e:
        find_fashion_mnist()
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for part in ["$KDFORGE_DATA: not set", str(tmp_path / "nowhere"), "directory does not exist",
                 "sudo apt-get install dataset-fashion-mnist", "--data DIR", "KDFORGE_DATA=DIR"]:
        assert part in msg, part
    # a directory with only some of the files names what is missing
    (tmp_path / "some").mkdir()
    write_idx(tmp_path / "some" / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetNotFoundError, match="missing train-labels-idx1-ubyte, t10k-images"):
        find_fashion_mnist(tmp_path / "some")


def test_find_via_env_and_subdir(tmp_path, monkeypatch):
    fake_dataset(tmp_path / "fashion-mnist")
    assert find_fashion_mnist(tmp_path) == tmp_path / "fashion-mnist"
    monkeypatch.setenv("KDFORGE_DATA", str(tmp_path / "fashion-mnist"))
    assert find_fashion_mnist() == tmp_path / "fashion-mnist"


# ------------------------------------------------------------------------------------ dataset
@pytest.mark.parametrize("gz", [True, False])
def test_load_and_dataset_on_fake_files(tmp_path, gz):
    root = fake_dataset(tmp_path, gz=gz)
    x, y = load_fashion_mnist(root, train=True)
    assert x.shape == (12, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert load_fashion_mnist(root, train=False)[0].shape == (5, 28, 28)
    ds = FashionMNIST(root, indices=[3, 0])
    assert len(ds) == 2 and ds.CLASSES == CLASSES and len(CLASSES) == 10
    img, label = ds[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and label == 3
    assert torch.allclose(img[0], (x[3].float() / 255 - MEAN) / STD)
    with pytest.raises(IndexError, match="0..11"):
        FashionMNIST(root, indices=[12])


def test_image_label_count_mismatch(tmp_path):
    root = fake_dataset(tmp_path)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="5 images but .* 4 labels"):
        load_fashion_mnist(root, train=False)


def test_real_dataset():
    try:
        root = find_fashion_mnist()
    except DatasetNotFoundError:
        pytest.skip("Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist)")
    x, y = load_fashion_mnist(root, train=True)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert y.min() == 0 and y.max() == 9 and torch.bincount(y).tolist() == [6000] * 10
    xt, yt = load_fashion_mnist(root, train=False)
    assert xt.shape == (10000, 28, 28) and torch.bincount(yt).tolist() == [1000] * 10
    assert abs(x.float().mean().item() / 255 - MEAN) < 1e-3


# ------------------------------------------------------------------------------- augmentation
def test_random_crop_flip_shapes_and_values():
    x = torch.randn(1, 28, 28)
    aug = RandomCropFlip(padding=2, generator=torch.Generator().manual_seed(0))
    assert aug(x).shape == (1, 28, 28) and aug(torch.randn(5, 1, 28, 28)).shape == (5, 1, 28, 28)
    assert torch.equal(RandomCropFlip(padding=0, flip_p=1.0)(x), x.flip(-1))
    assert torch.equal(RandomCropFlip(padding=0, flip_p=0.0)(x), x)
    # every cropped image is one of the 25 windows of the padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    windows = [padded[:, i:i + 28, j:j + 28] for i in range(5) for j in range(5)]
    crops = RandomCropFlip(padding=2, flip_p=0.0)(x.expand(20, 1, 28, 28).contiguous())
    assert all(any(torch.equal(c, w) for w in windows) for c in crops)
    assert len({c.sum().item() for c in crops}) > 1  # images in a batch get different crops
    with pytest.raises(ValueError, match="expects"):
        aug(torch.randn(28, 28))


def test_random_crop_flip_generator_reproducible():
    x = torch.randn(4, 1, 28, 28)
    a = RandomCropFlip(generator=torch.Generator().manual_seed(1))(x)
    b = RandomCropFlip(generator=torch.Generator().manual_seed(1))(x)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- split, WithIndex
def test_train_val_split_deterministic_disjoint():
    tr, va = train_val_split(100, 0.2, seed=3)
    assert len(tr) == 80 and len(va) == 20
    assert np.intersect1d(tr, va).size == 0 and np.array_equal(np.union1d(tr, va), np.arange(100))
    tr2, va2 = train_val_split(100, 0.2, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, train_val_split(100, 0.2, seed=4)[1])
    assert len(train_val_split(10, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, 1.0)


def test_with_index(tmp_path):
    ds = FashionMNIST(fake_dataset(tmp_path))
    wi = WithIndex(ds)
    x, y, i = wi[7]
    assert i == 7 and y == ds[7][1] == 7 and torch.equal(x, ds[7][0])
    assert len(wi) == 12 and wi.targets is ds.targets
    batch = next(iter(torch.utils.data.DataLoader(wi, batch_size=4)))
    assert batch[2].tolist() == [0, 1, 2, 3]


def test_batched_fetch_matches_per_item(tmp_path):
    """DataLoader's __getitems__ path gives the same batches as per-item access (no transform), and
    WithIndex keeps the indices on that path."""
    from torch.utils.data import DataLoader, Subset

    from kdforge.data import FashionMNIST, WithIndex

    fake_dataset(tmp_path, n_train=20, n_test=4)
    ds = FashionMNIST(tmp_path, train=True)
    a = DataLoader(ds, batch_size=8, shuffle=False)
    b = [torch.stack([ds[i][0] for i in range(k, min(k + 8, 20))]) for k in range(0, 20, 8)]
    for (x, y), ref in zip(a, b):
        assert torch.equal(x, ref) and y.dtype == torch.long
    sub = WithIndex(Subset(ds, [3, 5, 7]))
    x, y, i = next(iter(DataLoader(sub, batch_size=3)))
    assert i.tolist() == [0, 1, 2] and torch.equal(x[1], ds[5][0]) and y[2] == ds[7][1]
