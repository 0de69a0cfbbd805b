"""Own data: image folders, CIFAR archives (safe unpickling), ``module:callable`` datasets, ``imports:``,
and a run config without ``data:``. The docs' own-data example is run as written."""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdforge.cli import main
from kdforge.config import ConfigError
from kdforge.config.run import DataConfig, load_run_config
from kdforge.data import DatasetNotFoundError
from kdforge.data.cifar import CIFAR, UnsafePickleError, load_cifar, safe_load_pickle
from kdforge.data.image_folder import ImageFolder, ImageTransform, image_decoder
from kdforge.engine import DATASETS, build_datasets
from user_data_helpers import write_cifar, write_image_folder

pytestmark = pytest.mark.extras  # also run in the torchvision/timm environment (make test-extras)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


def _data(**kw) -> DataConfig:
    return DataConfig(**kw)


# ------------------------------------------------------------------------------------------ image folder
def test_image_folder_classes_items_and_transforms(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("b_dog", "a_cat", "c_cow"), per_class=4, val_per_class=2)
    train, val, _ = build_datasets(_data(name="image_folder", root=str(root), augment=True,
                                         kwargs={"size": 16, "mean": [0.5], "std": [0.5]}), 0)
    assert train.classes == ["a_cat", "b_dog", "c_cow"] and val.classes == train.classes
    assert len(train) == 12 and len(val) == 6 and train.num_classes == 3
    x, y = val[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    # class k is bright in colour channel k: the normalised mean of that channel is the largest
    for i in range(len(val)):
        x, y = val[i]
        assert int(x.mean(dim=(1, 2)).argmax()) == y
    # eval transform is deterministic, training transform is random (crop/flip)
    assert torch.equal(val[1][0], val[1][0])
    draws = {tuple(train[0][0].flatten()[:40].tolist()) for _ in range(8)}
    assert len(draws) > 1


def test_image_transform_resize_crop_flip_normalise():
    img = torch.arange(3 * 8 * 12, dtype=torch.float32).remainder(256).to(torch.uint8).view(3, 8, 12)
    t = ImageTransform(size=8, resize=8, mean=[0.0], std=[1.0])
    out = t(img)
    assert out.shape == (3, 8, 8)  # shorter side already 8: centre crop of columns 2..9
    assert torch.allclose(out, img[:, :, 2:10].float() / 255)
    flip = ImageTransform(size=8, resize=8, train=True, flip_p=1.0, mean=[0.0], std=[1.0])
    torch.manual_seed(0)
    got = flip(img)
    assert any(torch.allclose(got, img[:, :, c:c + 8].float().flip(-1) / 255) for c in range(5))
    with pytest.raises(ValueError, match="resize >= size"):
        ImageTransform(size=16, resize=8)


def test_decoders_agree(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=1, val_per_class=1)
    pil = ImageFolder(root / "train", decoder="pil")
    auto = ImageFolder(root / "train", decoder="auto")
    assert torch.equal(pil[0][0], auto[0][0]) and pil[0][0].dtype == torch.uint8
    grey = ImageFolder(root / "train", channels=1, decoder="pil")
    assert grey[0][0].shape[0] == 1


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_torchvision_decoder_when_present(tmp_path):
    try:
        import torchvision.io  # noqa: F401
    except Exception as e:  # not installed, or built for another torch
        pytest.skip(f"torchvision does not import here: {e}")
    root = write_image_folder(tmp_path / "imgs", per_class=1, val_per_class=1)
    tv = ImageFolder(root / "train", decoder="torchvision")
    assert tv._decode is not image_decoder("pil") and image_decoder("auto") is image_decoder("pil")
    assert torch.equal(tv[0][0], ImageFolder(root / "train", decoder="pil")[0][0])


def test_image_folder_errors(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2, val_per_class=1)
    with pytest.raises(ConfigError, match="no evaluation folder.*val_fraction"):
        build_datasets(_data(name="image_folder", root=str(root), kwargs={"size": 8, "val_dir": "nope"}), 0)
    with pytest.raises(ConfigError, match="image_folder has no argument 'crop_size'.*accepted: train_dir"):
        load_run_config(_base(name="image_folder", root=str(root), kwargs={"crop_size": 8}))
    with pytest.raises(ConfigError, match="needs data.root"):
        build_datasets(_data(name="image_folder"), 0)
    (root / "val" / "horse").mkdir()
    (root / "val" / "horse" / "x.png").write_bytes((root / "val" / "cat" / "000.png").read_bytes())
    with pytest.raises(DatasetNotFoundError, match="horse.*training folder lacks"):
        build_datasets(_data(name="image_folder", root=str(root), kwargs={"size": 8}), 0)
    empty = tmp_path / "empty" / "train"
    empty.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        ImageFolder(empty)


def test_image_folder_val_fraction(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=5, val_per_class=0)
    train, val, _ = build_datasets(_data(name="image_folder", root=str(root), val_fraction=0.2, kwargs={"size": 8}), 3)
    assert len(train) + len(val) == 10 and len(val) == 2
    assert train.classes == ["cat", "dog"] and val.num_classes == 2
    assert not set(train.indices) & set(val.indices)


# ------------------------------------------------------------------------------------------------ CIFAR
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("archive", [False, True])
def test_cifar_reads_real_format(tmp_path, name, archive):
    where, arrays = write_cifar(tmp_path, name, n_train=20, n_test=10, archive=archive)
    images, labels, classes = load_cifar(name, tmp_path, train=True)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert np.array_equal(images.reshape(20, -1).numpy(), arrays["train"][0])  # row-major R, G, B planes
    assert labels.tolist() == arrays["train"][1]
    assert classes[:2] == ["class0", "class1"]
    tr, te, _ = build_datasets(_data(name=name, root=str(where), augment=True), 0)
    assert len(tr) == 20 and len(te) == 10 and tr.num_classes == (10 if name == "cifar10" else 100)
    batch = te.__getitems__([0, 3])
    x0, y0 = te[0]
    assert torch.allclose(batch[0][0], x0) and batch[0][1] == y0 == arrays["test"][1][0]
    mean = CIFAR(name, tmp_path, train=False).mean.view(3, 1, 1)
    std = CIFAR(name, tmp_path, train=False).std.view(3, 1, 1)
    expect = torch.from_numpy(arrays["test"][0][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(x0, (expect - mean) / std, atol=1e-6)


def test_cifar_val_fraction_and_errors(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=5)
    tr, va, _ = build_datasets(_data(name="cifar10", root=str(tmp_path), val_fraction=0.25), 0)
    assert (len(tr), len(va)) == (15, 5) and not va.train
    with pytest.raises(DatasetNotFoundError, match="needs data.root"):
        load_cifar("cifar10", None)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        load_cifar("cifar100", tmp_path)
    with pytest.raises(ConfigError, match="cifar10 has no argument 'pad'.*padding"):
        load_run_config(_base(name="cifar10", root=str(tmp_path), kwargs={"pad": 2}))


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_rejected(tmp_path):
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_load_pickle(pickle.dumps({b"data": _Evil()}))
    for payload in (pickle.dumps(print), pickle.dumps(np.load), pickle.dumps({b"x": [eval]}, protocol=2)):
        with pytest.raises(UnsafePickleError, match="refusing"):
            safe_load_pickle(payload)
    # a tampered batch file inside a real-looking archive is refused before anything runs
    folder, _ = write_cifar(tmp_path, "cifar10", n_train=5, n_test=5)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(UnsafePickleError, match="data_batch_3"):
        load_cifar("cifar10", tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        safe_load_pickle(b"garbage")
    # plain containers and numpy arrays (numpy 1.x and 2.x names) load
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for proto in (2, 3, 4, 5):
        assert np.array_equal(safe_load_pickle(pickle.dumps({b"a": arr}, protocol=proto))[b"a"], arr)


# --------------------------------------------------------------------- module:callable, imports, data:
def _write_module(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(body)
    sys.modules.pop(name, None)
    return name


def _base(**data) -> dict:
    return {"model": {"name": "resnet8", "kwargs": {"num_classes": 2}}, "data": data}


def test_module_callable_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cwd fallback appends to sys.path; undo it after
    mod = _write_module(tmp_path, "kdf_user_ds_a", (
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make(cfg, seed, n=4):\n"
        "    g = torch.Generator().manual_seed(seed)\n"
        "    ds = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.zeros(n, dtype=torch.long))\n"
        "    make.seen = (cfg.root, n, seed)\n"
        "    return ds, ds\n"
        "VALUE = 3\n"))
    cfg = load_run_config(_base(name=f"{mod}:make", root="somewhere", kwargs={"n": 6}) | {"seed": 5})
    tr, ev, _ = build_datasets(cfg.data, cfg.seed)
    assert len(tr) == 6 and sys.modules[mod].make.seen == ("somewhere", 6, 5)
    with pytest.raises(ConfigError, match="has no argument 'm'.*accepted: n"):
        load_run_config(_base(name=f"{mod}:make", kwargs={"m": 1}))
    with pytest.raises(ConfigError, match="no attribute 'mkae'.*make"):
        load_run_config(_base(name=f"{mod}:mkae"))
    with pytest.raises(ConfigError, match="not callable"):
        load_run_config(_base(name=f"{mod}:VALUE"))
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg_xyz.data'"):
        load_run_config(_base(name="no_such_pkg_xyz.data:make"))


def test_imports_register_before_validation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cwd fallback appends to sys.path; undo it after
    mod = _write_module(tmp_path, "kdf_user_ds_b", (
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "from kdforge.engine import DATASETS\n"
        "@DATASETS.register('kdf_test_mine', override=True)\n"
        "def mine(cfg, seed):\n"
        "    ds = TensorDataset(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))\n"
        "    return ds, ds\n"))
    try:
        with pytest.raises(ConfigError, match="unknown dataset 'kdf_test_mine'"):
            load_run_config(_base(name="kdf_test_mine"))
        cfg = load_run_config(_base(name="kdf_test_mine") | {"imports": [mod]})
        assert cfg.imports == [mod] and len(build_datasets(cfg.data, 0)[0]) == 4
        with pytest.raises(ConfigError, match=r"imports\[0\]: cannot import 'nope_mod_q'"):
            load_run_config(_base(name="kdf_test_mine") | {"imports": ["nope_mod_q"]})
    finally:
        DATASETS._items.pop("kdf_test_mine", None)


def test_run_config_without_data_is_an_error():
    with pytest.raises(ConfigError, match="needs a data: section.*image_folder.*cifar10.*fashion_mnist.*module:callable"):
        load_run_config({"model": "resnet8"})
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagefolder'.*Did you mean 'image_folder'"):
        load_run_config(_base(name="imagefolder"))


# ---------------------------------------------------------------------------- the docs, run as written
def _docs_configs() -> tuple[dict, dict]:
    section = DOCS.read_text().split("## Your own images", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    teacher, kd = (yaml.safe_load(b) for b in blocks[:2])
    assert teacher["name"] == "my_images_teacher" and kd["jobs"], "docs/datasets.md example changed shape"
    return teacher, kd


def test_docs_own_image_folder_example_trains_with_the_cli(tmp_path, monkeypatch, capsys):
    """What a user does: write the two configs from docs/datasets.md, `kdforge train` each."""
    teacher, kd = _docs_configs()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cwd fallback appends to sys.path; undo it after
    write_image_folder(tmp_path / teacher["data"]["root"], per_class=8, val_per_class=4)
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
    quick = ["--set", "train.epochs=1", "--set", "data.batch_size=8", "--set", "device=cpu", "--quiet"]
    assert main(["train", "teacher.yaml", *quick]) == 0
    assert Path(kd["teachers"]["t0"]["weights"]).is_file()
    assert main(["train", "kd.yaml", *quick]) == 0
    out = capsys.readouterr().out
    assert "my_images_kd: best" in out
    ck = torch.load(tmp_path / "runs" / "my_images_kd" / "best.pt", weights_only=True)
    assert any(k.startswith("fc.") for k in ck["student"])
    assert main(["eval", "kd.yaml", "--weights", "runs/my_images_kd/best.pt", "--set", "device=cpu"]) == 0
    assert "on 8 samples" in capsys.readouterr().out


def test_docs_module_callable_example_runs(tmp_path, monkeypatch):
    text = DOCS.read_text().split("## A dataset of your own", 1)[1]
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cwd fallback appends to sys.path; undo it after
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "datasets.py").write_text(code)
    for m in ("mypkg", "mypkg.datasets"):
        sys.modules.pop(m, None)
    write_image_folder(tmp_path / "mine", per_class=2, val_per_class=1)
    data = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", text, flags=re.S)[0])["data"]
    data["root"] = str(tmp_path / "mine")
    cfg = load_run_config({"model": {"name": "resnet8", "kwargs": {"num_classes": 2}}, "data": data})
    tr, ev, _ = build_datasets(cfg.data, 0)
    assert tr[0][0].shape == (3, 96, 96) and len(ev) == 2
