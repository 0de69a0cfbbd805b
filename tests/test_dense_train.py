"""Segmentation and detection runs through the CLI: teacher → baseline → distilled student, each a few
steps on tiny Fashion-MNIST scenes, with the shipped configs (configs/seg, configs/det)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdforge.cli import main
from kdforge.config.run import DataConfig
from kdforge.data import DatasetNotFoundError, find_fashion_mnist
from kdforge.engine import DATASETS, build_datasets
from kdforge.engine.dense_data import HFlip

ROOT = Path(__file__).resolve().parents[1]

try:
    find_fashion_mnist(None)
    HAVE_FMNIST = True
except (DatasetNotFoundError, Exception):
    HAVE_FMNIST = False

needs_data = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scenes_cache")


def _tiny(cache: Path, out: Path) -> list[str]:
    return ["--quiet", "--out", str(out), "--set", "train.epochs=1", "--set", "data.batch_size=8",
            "--set", "data.kwargs.n_train=16", "--set", "data.kwargs.n_test=8",
            "--set", f"data.kwargs.cache_dir={cache}", "--set", "train.schedule.warmup_epochs=0"]


def _summary(run: Path) -> dict:
    assert (run / "summary.json").is_file() and (run / "metrics.csv").is_file() and (run / "best.pt").is_file()
    return json.loads((run / "summary.json").read_text())


@needs_data
@pytest.mark.parametrize("family, teacher, metrics", [
    ("seg", "deeplab_t", {"mIoU", "pixel_acc", "mIoU_fg"}),
    ("det", "centernet_t", {"mAP", "mAP50", "mAP75"}),
])
def test_teacher_baseline_kd(family, teacher, metrics, tmp_path, cache, capsys):
    cfg = ROOT / "configs" / family
    runs = {k: tmp_path / k for k in ("teacher", "baseline", "kd")}
    assert main(["train", str(cfg / "teacher.yaml"), *_tiny(cache, runs["teacher"])]) == 0
    assert main(["train", str(cfg / "baseline.yaml"), *_tiny(cache, runs["baseline"])]) == 0
    assert main(["train", str(cfg / "kd.yaml"), *_tiny(cache, runs["kd"]),
                 "--set", f"teachers.{teacher}.weights={runs['teacher'] / 'best.pt'}"]) == 0
    summaries = {k: _summary(v) for k, v in runs.items()}
    main_metric = "mIoU" if family == "seg" else "mAP"
    for k, s in summaries.items():
        assert s["task"] == ("segmentation" if family == "seg" else "detection")
        assert s["main_metric"] == main_metric and metrics <= set(s["final"])
        assert all(0.0 <= s["final"][m] <= 1.0 for m in metrics)
        assert s["params"] > 0 and s["macs"] and s["epochs"] == 1
    assert summaries["teacher"]["params"] > 5 * summaries["kd"]["params"]  # a real teacher → student gap
    assert summaries["kd"]["jobs"] and not summaries["baseline"]["jobs"]
    header = (runs["kd"] / "metrics.csv").read_text().splitlines()[0]
    for job in summaries["kd"]["jobs"]:  # every distillation job logged its loss
        assert f"loss_{job}" in header

    capsys.readouterr()
    assert main(["compare", str(runs["baseline"]), str(runs["kd"]), "--no-plot"]) == 0
    table = capsys.readouterr().out
    extra = ["final pixel_acc"] if family == "seg" else ["final mAP50"]
    assert f"best {main_metric}" in table and all(e in table for e in extra) and "(baseline)" in table
    assert f"{summaries['baseline']['best']['value']:.4f}" in table


@needs_data
def test_scene_datasets_sizes_split_and_flip(cache):
    kw = {"n_train": 12, "n_test": 6, "size": 48, "cache_dir": str(cache)}
    train, evals, _ = build_datasets(DataConfig(name="scenes_seg", kwargs=kw), 0)
    assert (len(train), len(evals)) == (12, 6)
    image, mask = train[0]
    assert image.shape == (1, 48, 48) and mask.shape == (48, 48) and mask.dtype == torch.long
    train, val, _ = build_datasets(DataConfig(name="scenes_det", kwargs=kw, val_fraction=0.25), 0)
    assert (len(train), len(val)) == (9, 3)
    seg, _ = DATASETS.get("scenes_seg")(DataConfig(name="scenes_seg", kwargs=kw, augment=True), 0)
    assert isinstance(seg, HFlip)


def test_hflip_moves_boxes_with_the_image():
    image = torch.zeros(1, 16, 16)
    image[0, 2:5, 1:4] = 1.0  # object at x 1..3 → box x1=1, x2=4
    target = {"boxes": torch.tensor([[1.0, 2.0, 4.0, 5.0]]), "labels": torch.tensor([3])}
    flipped = HFlip([(image, target)], p=1.0)
    img, t = flipped[0]
    assert torch.equal(t["boxes"], torch.tensor([[12.0, 2.0, 15.0, 5.0]])) and torch.equal(t["labels"], target["labels"])
    ys, xs = torch.nonzero(img[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (12, 15)
    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[0, 0] = 5
    _, m = HFlip([(image, mask)], p=1.0)[0]
    assert m[0, 15] == 5 and m.sum() == 5


def test_bad_scene_sizes_are_config_errors(capsys, tmp_path):
    cfg = ROOT / "configs" / "seg" / "baseline.yaml"
    assert main(["train", str(cfg), "--quiet", "--out", str(tmp_path), "--set", "data.kwargs.size=50"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["train", str(cfg), "--quiet", "--out", str(tmp_path), "--set", "data.kwargs.n_train=0"]) == 2
    assert "n_train" in capsys.readouterr().err


def _dense_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dense_bench", ROOT / "benchmarks" / "dense.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dense_choice_requires_the_second_metric_not_to_drop():
    choose = _dense_bench().choose
    assert choose({"a": (0.02, -0.001), "b": (0.01, 0.0), "c": (-0.01, 0.02)}) == "b"
    assert choose({"a": (0.02, -0.001)}) is None


@needs_data
def test_dense_benchmark_selects_then_confirms_on_fresh_seeds(tmp_path, cache, monkeypatch, capsys):
    """benchmarks/dense.py det: teacher once, every detection candidate on the selection seed, the chosen one
    on a fresh confirmation seed; writes the report (tiny scenes, one epoch each)."""
    bench = _dense_bench()
    cands = sorted(p.stem for p in (ROOT / "configs" / "det").glob("kd_*.yaml"))
    assert {"kd_fine_grained", "kd_pkd", "kd_heatmap"} <= set(cands)
    tiny = [a for a in _tiny(cache, tmp_path)[3:] if a != "--set"]
    monkeypatch.setattr("sys.argv", ["dense.py", "det", "--runs", str(tmp_path), "--candidates", *cands,
                                     "--select-seeds", "0", "--confirm-seeds", "1", "--chosen", "kd_heatmap",
                                     *[x for kv in tiny for x in ("--set", kv)]])
    bench.main()
    report = (tmp_path / "report.md").read_text()
    assert "Selection" in report and "Confirmation" in report and "Chosen: **kd_heatmap** (given with --chosen)" in report
    assert all(f"| {c} |" in report for c in cands) and "Verdict" in report
    assert (tmp_path / "det_kd_heatmap_s1" / "summary.json").is_file()
    assert not (tmp_path / "det_kd_pkd_s1").exists()  # only the chosen recipe runs on the confirmation seed
    import importlib.util

    spec = importlib.util.spec_from_file_location("det_diagnosis", ROOT / "benchmarks" / "det_diagnosis.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["det_diagnosis.py", "--runs", str(tmp_path), "--seeds", "0", "1", "--reps", "2", "--paired", "kd_heatmap"])
    diag.main()
    out = capsys.readouterr().out
    assert "imitation mask covers" in out and "teacher on test" in out and "baseline s0 on test" in out and "eval noise" in out
    assert "paired Δ mAP det_kd_heatmap_s0 − det_baseline_s0" in out
    assert "| det_kd_heatmap_s1 |" in out  # the dynamics table lists every finished run
    monkeypatch.setattr("sys.argv", ["dense.py", "det", "--select-seeds", "0", "--confirm-seeds", "0"])
    with pytest.raises(SystemExit, match="fresh"):
        bench.main()
