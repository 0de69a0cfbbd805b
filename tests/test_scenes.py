import numpy as np
import pytest
import torch

from kdforge.data import scenes
from kdforge.data.scenes import DetScenes, SegScenes, build_scenes, compose_scenes, det_collate


def fake_source(m: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items that are solid squares of varying size (so thresholding keeps exactly the square)."""
    rng = np.random.default_rng(seed)
    imgs = np.zeros((m, 28, 28), np.uint8)
    for i in range(m):
        a = int(rng.integers(2, 8))
        imgs[i, a:28 - a, a:28 - a] = 200
    return imgs, rng.integers(0, 10, m)


def test_compose_is_deterministic_and_seeded():
    src = fake_source()
    a = compose_scenes(*src, n=6, size=64, seed=3)
    b = compose_scenes(*src, n=6, size=64, seed=3)
    c = compose_scenes(*src, n=6, size=64, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["masks"], c["masks"])
    assert a["images"].shape == (6, 1, 64, 64) and a["images"].dtype == torch.uint8
    assert a["masks"].shape == (6, 64, 64) and a["masks"].dtype == torch.uint8
    assert a["boxes"].shape == (6, 4, 4) and a["labels"].shape == (6, 4)


def test_masks_and_boxes_agree_with_images():
    imgs, labels = fake_source()
    d = compose_scenes(imgs, labels, n=20, size=64, seed=0)
    assert d["num_boxes"].min() >= 1 and int(d["masks"].max()) <= 10
    for i in range(20):
        img, mask = d["images"][i, 0], d["masks"][i]
        assert torch.equal(img > 0, mask > 0)  # only item pixels are pasted
        assert (img[mask > 0] >= 48).all()
        k = int(d["num_boxes"][i])
        assert (d["labels"][i, k:] == -1).all() and (d["labels"][i, :k] >= 0).all()
        for (x1, y1, x2, y2), c in zip(d["boxes"][i, :k].long().tolist(), d["labels"][i, :k].tolist()):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inside = mask[y1:y2, x1:x2] == c + 1
            # tight box: every border row/column of the box holds a pixel of the item's class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_later_items_overwrite_and_tiny_leftovers_get_no_box():
    imgs = np.zeros((1, 28, 28), np.uint8)
    imgs[0] = 200  # full square item: each scene is squares over squares
    d = compose_scenes(imgs, np.array([4]), n=30, size=64, seed=1, scale=(1.0, 1.0))
    for i in range(30):
        # every item is class 4 → label 5; visible pixels of dropped items stay in the mask
        assert set(d["masks"][i].unique().tolist()) <= {0, 5}
        k = int(d["num_boxes"][i])
        for x1, y1, x2, y2 in d["boxes"][i, :k].tolist():
            assert (x2 - x1) * (y2 - y1) >= 16


def test_build_scenes_caches_on_disk(tmp_path, monkeypatch):
    src = fake_source()
    a = build_scenes("train", 5, size=48, source=src, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("should have loaded from cache")

    monkeypatch.setattr(scenes, "compose_scenes", boom)
    b = build_scenes("train", 5, size=48, source=src, cache_dir=tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.undo()
    build_scenes("train", 5, size=48, source=src, cache_dir=tmp_path, scale=(0.8, 1.0))  # other key
    build_scenes("test", 5, size=48, source=src, cache_dir=tmp_path)  # other split → other seed
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_build_scenes_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="split"):
        build_scenes("valid", 2, source=fake_source(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        compose_scenes(np.zeros((3, 28, 28), np.float32), np.zeros(3), n=1)
    with pytest.raises(ValueError, match="fit"):
        compose_scenes(*fake_source(), n=1, size=32)


def test_datasets_and_collate():
    data = compose_scenes(*fake_source(), n=4, size=64, seed=0)
    x, m = SegScenes(data=data)[0]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert m.shape == (64, 64) and m.dtype == torch.long
    det = DetScenes(data=data)
    images, targets = det_collate([det[i] for i in range(4)])
    assert images.shape == (4, 1, 64, 64) and len(targets) == 4
    for i, t in enumerate(targets):
        assert t["boxes"].shape == (int(data["num_boxes"][i]), 4) and t["labels"].dtype == torch.long


def test_real_fashion_mnist_scenes(tmp_path):
    from kdforge.data import DatasetNotFoundError

    try:
        d = build_scenes("test", 8, cache_dir=tmp_path)
    except DatasetNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    assert d["images"].shape == (8, 1, 64, 64) and d["num_boxes"].min() >= 1
    assert (d["masks"] > 0).float().mean() > 0.05
