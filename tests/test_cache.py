"""Teacher-output cache (kdforge.cache): replayed views, cached vs live losses and training, stale and
half-written caches, bad arguments. Tiny CNNs on tiny fake Fashion-MNIST IDX files."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdforge.cache import CacheError, CachedViews, TeacherCache, build_cache, open_for_run, view_schedule
from kdforge.cache import topk as topk_mod
from kdforge.cli import main as cli
from kdforge.config.run import load_run_config
from kdforge.data import Compose, RandomCropFlip, ReplayError, concat_params
from kdforge.distiller import Distiller, DistillerError, ExternalTeacher
from kdforge.engine import Trainer, build_datasets, train
from kdforge.losses.response import DISTLoss, DKDLoss, KDLoss
from kdforge.models import build_model
from test_data import fake_dataset

N_TRAIN = 40
TEACHER = {"name": "cnn", "kwargs": {"channels": [4, 8, 8], "num_classes": 10, "in_channels": 1}}
STUDENT = {"name": "cnn", "kwargs": {"channels": [2, 4, 4], "num_classes": 10, "in_channels": 1}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Fake data and a teacher weights file (random init, seed 0)."""
    root = tmp_path_factory.mktemp("cache")
    data = fake_dataset(root / "data", n_train=N_TRAIN, n_test=10)
    torch.manual_seed(0)
    teacher = build_model(TEACHER["name"], **TEACHER["kwargs"])
    torch.save(teacher.state_dict(), root / "teacher.pt")
    return root, data


def kd_config(root: Path, data: Path, out: str = "run", jobs: list | None = None, **extra) -> dict:
    cfg = {"name": "kd", "seed": 0, "output_dir": str(root / out), "device": "cpu",
           "model": copy.deepcopy(STUDENT),
           "teachers": {"teacher": {**copy.deepcopy(TEACHER), "weights": str(root / "teacher.pt")}},
           "jobs": jobs or [{"name": "kd", "loss": {"type": "kd", "T": 2}, "student": "", "teacher": "", "weight": 0.5}],
           "data": {"name": "fashion_mnist", "root": str(data), "batch_size": 16, "augment": True},
           "train": {"epochs": 1, "ce_weight": 0.5, "log_every": 100, "optimizer": {"name": "sgd", "lr": 0.1}},
           "checkpoint": {"keep_best": False}}
    cfg.update(extra)
    return cfg


# ------------------------------------------------------------------------ replayable transforms
def test_transform_records_and_replays_batched_and_per_item():
    t = RandomCropFlip(padding=2)
    x = torch.randn(6, 1, 8, 8)
    with t.recording() as drawn:
        views = t(x)
    params = concat_params(drawn)
    assert set(params) == {"dy", "dx", "flip"} and len(params["dy"]) == 6
    with t.replaying(params):
        assert torch.equal(t(x), views)
    with t.replaying(params):  # one call per image consumes the rows in order
        assert torch.equal(torch.stack([t(img) for img in x]), views)
    with pytest.raises(ReplayError, match="exactly once per sample"):
        with t.replaying(params):
            t(x[:2])
    with pytest.raises(ReplayError, match="6 were given"):
        with t.replaying(params):
            t(torch.cat([x, x[:1]]))
    c = Compose([RandomCropFlip(padding=1), RandomCropFlip(padding=0, flip_p=1.0)])
    with c.recording() as drawn:
        y = c(x)
    with c.replaying(concat_params(drawn)):
        assert torch.equal(c(x), y)
    assert c.spec()["transforms"][1] == {"type": "RandomCropFlip", "padding": 0, "flip_p": 1.0, "fill": t.fill}


def test_find_transform_looks_through_wrappers_and_refuses_what_cannot_replay():
    from torch.utils.data import Subset

    from kdforge.cache import find_transform

    class Augmented(torch.utils.data.Dataset):  # CIFAR-style: the augmentation under another name
        def __init__(self, aug):
            self.augment = aug

    aug = RandomCropFlip()
    assert find_transform(Subset(Augmented(aug), [0])) is aug
    assert find_transform(Augmented(None)) is None

    class Opaque(torch.utils.data.Dataset):
        transform = staticmethod(lambda x: x + torch.randn_like(x))

    with pytest.raises(CacheError, match="cannot record and replay its random draws"):
        find_transform(Opaque())


def test_view_schedule_is_deterministic_and_cycles_through_all_views():
    idx = np.arange(200)
    v0 = view_schedule(3, 0, idx, 4)
    assert np.array_equal(v0, view_schedule(3, 0, idx, 4)) and v0.min() >= 0 and v0.max() < 4
    assert len(set(v0.tolist())) == 4  # spread over the views, not all the same
    seen = np.stack([view_schedule(3, e, idx, 4) for e in range(4)])
    assert all(sorted(seen[:, i].tolist()) == [0, 1, 2, 3] for i in range(len(idx)))  # K epochs: every view once
    assert not np.array_equal(v0, view_schedule(4, 0, idx, 4))  # depends on the seed
    assert (view_schedule(3, 5, idx, 1) == 0).all()  # K = 1: index-only
    # a shard of the indices gets the same views as in the full list (DDP ranks, workers)
    assert np.array_equal(view_schedule(3, 2, idx[1::2], 4), view_schedule(3, 2, idx, 4)[1::2])


# ------------------------------------------------------------------------ pixels the teacher saw
def test_replayed_views_are_the_pixels_the_teacher_saw(setup):
    root, data = setup
    # the teacher's input itself is a tap ("stages:input"), so the cache holds what the teacher saw
    jobs = [{"name": "px", "loss": "fitnet", "student": "stages:input", "teacher": "stages:input"}]
    cfg = kd_config(root, data, jobs=jobs)
    out = build_cache(cfg, views=3, out=root / "pixels", dtype="fp32", verbose=False)
    run = load_run_config(cfg)
    train_ds, _, _ = build_datasets(run.data, run.seed)
    cache, views = open_for_run(run.model_copy(update={"teacher_cache": str(out)}), train_ds)
    idx = list(range(N_TRAIN))
    distinct = []
    for v in range(3):
        items, teacher = views.replay(idx, [v] * N_TRAIN)
        x = torch.stack([it[0] for it in items])
        assert torch.equal(x, teacher["teacher"]["stages:input"])
        distinct.append(x)
    assert not torch.equal(distinct[0], distinct[1])  # K views really differ (random crop + flip)
    # and through the DataLoader path (batched __getitems__, schedule of epoch 1)
    views.set_epoch(1)
    batch = views.__getitems__([5, 0, 7])
    x = torch.stack([it[0] for it in batch])
    assert torch.equal(x, batch.teacher["teacher"]["stages:input"])


# ------------------------------------------------------------------------ cached vs live losses
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-6), ("fp16", 2e-3), ("bf16", 2e-2)])
def test_cached_losses_equal_live_losses(setup, dtype, tol):
    root, data = setup
    cfg = kd_config(root, data)
    out = build_cache(cfg, views=2, out=root / f"loss_{dtype}", dtype=dtype, verbose=False)
    run = load_run_config({**cfg, "teacher_cache": str(out)})
    train_ds, _, _ = build_datasets(run.data, run.seed)
    _, views = open_for_run(run, train_ds)
    teacher = build_model(TEACHER["name"], **TEACHER["kwargs"])
    teacher.load_state_dict(torch.load(root / "teacher.pt", weights_only=True))
    teacher.eval()
    idx = list(range(N_TRAIN))
    student = torch.randn(N_TRAIN, 10) * 3
    for v in range(2):
        items, cached = views.replay(idx, [v] * N_TRAIN)
        x, y = torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
        with torch.no_grad():
            live = teacher(x)
        t = cached["teacher"][""]
        torch.testing.assert_close(t, live, rtol=tol, atol=tol)
        for loss in (KDLoss(T=4), DKDLoss(), DISTLoss(tau=2)):
            a, b = loss(student, t, labels=y, step=10**6), loss(student, live, labels=y, step=10**6)
            assert abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b))) * 10, (type(loss).__name__, a, b)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_cached_losses_within_the_documented_bound(setup, k):
    root, data = setup
    cfg = kd_config(root, data)
    out = build_cache(cfg, views=1, out=root / f"top{k}", topk=k, dtype="fp32", verbose=False)
    run = load_run_config({**cfg, "teacher_cache": str(out)})
    train_ds, _, _ = build_datasets(run.data, run.seed)
    cache, views = open_for_run(run, train_ds)
    assert cache.manifest["teachers"]["teacher"]["taps"][""]["storage"] == "topk"
    teacher = build_model(TEACHER["name"], **TEACHER["kwargs"])
    teacher.load_state_dict(torch.load(root / "teacher.pt", weights_only=True))
    teacher.eval()
    idx = np.arange(N_TRAIN)
    items, cached = views.replay(idx.tolist(), [0] * N_TRAIN)
    x = torch.stack([it[0] for it in items])
    with torch.no_grad():
        live = teacher(x) * 3  # sharpen: the stored logits are scaled the same way below
    t = cached["teacher"][""]
    values, indices, lse = cache.topk_parts("teacher", "", idx, np.zeros_like(idx))
    # rebuild from sharpened logits so the test covers peaked and flat teachers alike
    for logits in (teacher(x).detach(), live):
        vals, ind, l = topk_mod.compress(logits, k)
        rebuilt = topk_mod.restore(vals, ind, l, 10)
        assert torch.equal(rebuilt.argmax(1), logits.argmax(1))
        # T = 1: top-k probabilities and the tail mass are exact
        torch.testing.assert_close(F.softmax(rebuilt, 1).gather(1, ind), F.softmax(logits, 1).gather(1, ind))
        student = torch.randn(N_TRAIN, 10) * 2
        for T in (0.5, 1.0, 2.0, 4.0):
            l1 = (F.softmax(rebuilt / T, 1) - F.softmax(logits / T, 1)).abs().sum(1)
            assert (l1 <= 2 * topk_mod.softlabel_bound(vals, l, 10, T).float() + 1e-6).all()
            gap = abs(float(KDLoss(T=T)(student, rebuilt)) - float(KDLoss(T=T)(student, logits)))
            assert gap <= topk_mod.kd_bound(student, vals, l, 10, T) + 1e-6
    # what the cache serves is that rebuild, from what it stored
    torch.testing.assert_close(t, topk_mod.restore(values, indices, lse, 10))
    torch.testing.assert_close(values, teacher(x).detach().topk(k, 1).values)


# ------------------------------------------------------------------------ training: cached == live
class _ReplayOnly(torch.utils.data.Dataset):
    """The cached views without the teacher tensors: a live-teacher run on exactly the same pixels."""

    def __init__(self, views: CachedViews) -> None:
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def __getitems__(self, indices):
        return list(self.views.__getitems__(indices))


def test_first_steps_match_a_live_teacher_run_on_the_same_views(setup):
    root, data = setup
    cfg = kd_config(root, data, jobs=[{"name": "kd", "loss": {"type": "kd", "T": 2}, "student": "", "teacher": "",
                                       "weight": 0.5},
                                      {"name": "fit", "loss": "fitnet", "student": "stages.1", "teacher": "stages.1",
                                       "connector": "conv1x1", "weight": 0.1}])
    out = build_cache(cfg, views=3, out=root / "steps", dtype="fp32", verbose=False)
    cached = train({**cfg, "teacher_cache": str(out), "output_dir": str(root / "steps_cached")}, verbose=False)
    assert cached["teacher_cache"] == str(out) and cached["teachers"]["teacher"]["params"] > cached["params"]

    run = load_run_config({**cfg, "teacher_cache": str(out)})
    train_ds, eval_ds, _ = build_datasets(run.data, run.seed)
    _, views = open_for_run(run, train_ds)
    views.set_epoch(0)
    live = Trainer({**cfg, "output_dir": str(root / "steps_live")}, datasets=(_ReplayOnly(views), eval_ds),
                   verbose=False).fit()
    a = torch.load(root / "steps_cached" / "last.pt", weights_only=True)["state"]
    b = torch.load(root / "steps_live" / "last.pt", weights_only=True)["state"]
    assert int(a["step"]) == int(b["step"]) == 3  # 40 samples / batch 16
    for k, v in b.items():
        torch.testing.assert_close(a[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert cached["final"]["loss"] == pytest.approx(live["final"]["loss"], rel=1e-5)


def test_cached_resume_and_workers_are_exact(setup):
    root, data = setup
    cfg = kd_config(root, data, train={"epochs": 2, "ce_weight": 0.5, "log_every": 100})
    out = build_cache(cfg, views=2, out=root / "resume", verbose=False)
    full = {**cfg, "teacher_cache": str(out), "output_dir": str(root / "r_full"), "checkpoint": {"every": 1}}
    train(full, verbose=False)
    half = {**full, "output_dir": str(root / "r_half")}
    train(half, resume=root / "r_full" / "epoch_001.pt", verbose=False)  # epoch 2 again, from the checkpoint
    workers = {**full, "output_dir": str(root / "r_workers"), "data": {**cfg["data"], "num_workers": 2}}
    train(workers, verbose=False)
    a = torch.load(root / "r_full" / "last.pt", weights_only=True)["state"]
    for other in ("r_half", "r_workers"):
        b = torch.load(root / other / "last.pt", weights_only=True)["state"]
        for k, v in a.items():
            torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=f"{other}: {k}")


# ------------------------------------------------------------------------ refusing what cannot serve
@pytest.fixture(scope="module")
def built(setup):
    root, data = setup
    cfg = kd_config(root, data)
    return cfg, build_cache(cfg, views=2, out=root / "stale_base", verbose=False)


def _refused(cfg: dict, cache: Path, *match: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(CacheError) as e:
        train({**cfg, "teacher_cache": str(cache)}, overrides, verbose=False)
    msg = str(e.value)
    assert "kdforge cache build" in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


def test_stale_caches_are_refused_naming_what_differs(setup, built, tmp_path):
    root, _ = setup
    cfg, cache = built
    train({**cfg, "teacher_cache": str(cache), "output_dir": str(tmp_path / "ok")}, verbose=False)  # fits
    # teacher weights changed
    other = build_model(TEACHER["name"], **TEACHER["kwargs"])
    torch.save(other.state_dict(), tmp_path / "other.pt")
    _refused(cfg, cache, "teachers.teacher: the weights file changed", overrides=[f"teachers.teacher.weights={tmp_path / 'other.pt'}"])
    # tap changed: a job reads a teacher tap the cache does not hold (at start-up, before training)
    jobs = [{"name": "fit", "loss": "fitnet", "student": "stages.1", "teacher": "stages.1", "connector": "conv1x1"}]
    _refused({**cfg, "jobs": jobs}, cache, "the jobs tap ['stages.1']")
    # augmentation changed
    _refused(cfg, cache, "data.transform", "data.kwargs", overrides=["data.kwargs.padding=3"])
    _refused(cfg, cache, "data.augment", overrides=["data.augment=false"])
    # dataset length changed
    _refused(cfg, cache, "data.length: cache 40, this run 30", overrides=["data.train_subset=30"])
    # the teacher converted to another dtype (teachers.NAME.dtype) gives other outputs
    _refused(cfg, cache, "teachers.teacher.dtype: cache None, this run 'bfloat16'", overrides=["teachers.teacher.dtype=bf16"])
    # a different teacher architecture
    _refused(cfg, cache, "teachers.teacher.kwargs", overrides=["teachers.teacher.kwargs.channels=[4,8,16]",
                                                               f"teachers.teacher.weights={tmp_path / 'other.pt'}"])


def test_cache_of_a_bfloat16_teacher(setup, tmp_path):
    root, data = setup
    cfg = kd_config(root, data, out=str(tmp_path / "r"))
    cfg["teachers"]["teacher"]["dtype"] = "bfloat16"  # its float32 inputs are cast for it, its outputs stored
    out = build_cache(cfg, views=1, out=tmp_path / "c", dtype="fp32", verbose=False)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    assert manifest["teachers"]["teacher"]["fingerprint"]["dtype"] == "bfloat16"
    train({**cfg, "teacher_cache": str(out)}, verbose=False)


def test_same_weights_under_another_path_are_accepted(setup, built, tmp_path):
    root, _ = setup
    cfg, cache = built
    copy_path = tmp_path / "copy.pt"
    copy_path.write_bytes((root / "teacher.pt").read_bytes())
    train({**cfg, "teacher_cache": str(cache), "output_dir": str(tmp_path / "r")},
          [f"teachers.teacher.weights={copy_path}"], verbose=False)


def test_changed_data_with_the_same_length_is_caught_by_the_replay_probe(setup, built, tmp_path):
    root, _ = setup
    cfg, cache = built
    data2 = fake_dataset(tmp_path / "data2", n_train=N_TRAIN, n_test=10)
    imgs = sorted(data2.glob("train-images*"))[0]
    # same length, other pixels
    from test_data import write_idx
    write_idx(imgs, np.random.default_rng(5).integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8))
    _refused(cfg, cache, "does not give the inputs the teacher saw", overrides=[f"data.root={data2}"])


def test_half_written_caches_are_refused(setup, built, tmp_path):
    import shutil
    cfg, cache = built
    for case in ("no_manifest", "incomplete", "truncated", "missing_array", "garbage_manifest"):
        d = tmp_path / case
        shutil.copytree(cache, d)
        m = json.loads((d / "manifest.json").read_text())
        if case == "no_manifest":
            (d / "manifest.json").unlink()
            match = "incomplete"
        elif case == "incomplete":
            (d / "manifest.json").write_text(json.dumps({**m, "complete": False}))
            match = "incomplete"
        elif case == "truncated":
            f = d / m["arrays"]["teacher/0"]["file"]
            f.write_bytes(f.read_bytes()[:-64])
            match = "truncated"
        elif case == "missing_array":
            (d / m["arrays"]["params/dy"]["file"]).unlink()
            match = "missing"
        else:
            (d / "manifest.json").write_text("{not json")
            match = "damaged"
        _refused(cfg, d, match)
    _refused(cfg, tmp_path / "nowhere", "does not exist")


def test_an_interrupted_build_leaves_no_cache_and_keeps_the_old_one(setup, built, monkeypatch, tmp_path):
    import shutil
    cfg, cache = built
    target = tmp_path / "c"
    shutil.copytree(cache, target)
    before = (target / "manifest.json").read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("kdforge.cache.build.write_manifest", boom)
    for out in (target, tmp_path / "fresh"):
        with pytest.raises(KeyboardInterrupt):
            build_cache(cfg, views=1, out=out, verbose=False)
    assert (target / "manifest.json").read_text() == before and not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary directory left behind


# ------------------------------------------------------------------------ arguments
def test_bad_arguments_are_clear_errors(setup, built, tmp_path):
    root, data = setup
    cfg, cache = built
    with pytest.raises(CacheError, match="--views must be an integer >= 1"):
        build_cache(cfg, views=0, out=tmp_path / "x", verbose=False)
    with pytest.raises(CacheError, match="--topk 11 is more than the 10 classes"):
        build_cache(cfg, views=1, out=tmp_path / "x", topk=11, verbose=False)
    with pytest.raises(CacheError, match="--dtype must be one of"):
        build_cache(cfg, views=1, out=tmp_path / "x", dtype="int8", verbose=False)
    with pytest.raises(CacheError, match="all views would be the same; use --views 1"):
        build_cache({**cfg, "data": {**cfg["data"], "augment": False}}, views=4, out=tmp_path / "x", verbose=False)
    with pytest.raises(CacheError, match="say where the cache goes"):
        build_cache(cfg, views=1, verbose=False)
    assert not (tmp_path / "x").exists()
    # a loss that needs the teacher model itself cannot run from a cache: refused by the build, the run, the Distiller
    mgd = [{"name": "mgd", "loss": "mgd", "student": "stages.2.bn", "teacher": "stages.2.bn"}]
    with pytest.raises(CacheError, match="loss MGDLoss needs the teacher model itself"):
        build_cache({**cfg, "jobs": mgd}, views=1, out=tmp_path / "x", verbose=False)
    with pytest.raises(CacheError, match="loss MGDLoss needs the teacher model itself"):
        train({**cfg, "jobs": mgd, "teacher_cache": str(cache)}, verbose=False)
    with pytest.raises(DistillerError, match="needs the teacher model"):
        Distiller(build_model("cnn", channels=[2, 4, 4]), {"t": ExternalTeacher(["stages.2.bn"], "a cache")}, mgd)
    # top-k logits for a loss that reads raw logits are refused when training
    top = build_cache(cfg, views=1, out=tmp_path / "top", topk=3, verbose=False)
    std = [{"name": "std", "loss": "logit_std", "student": "", "teacher": ""}]
    _refused({**cfg, "jobs": std}, top, "cached as top-3 logits but job(s) ['std'] read raw logits")


def _write_yaml(path: Path, cfg: dict) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_build_info_train_and_exit_codes(setup, tmp_path, capsys):
    root, data = setup
    cfg = _write_yaml(tmp_path / "kd.yaml", kd_config(root, data, out=str(tmp_path / "run")))
    out = tmp_path / "cache"
    assert cli(["cache", "build", str(cfg), "--views", "2", "--out", str(out), "--topk", "4", "--quiet"]) == 0
    assert cli(["cache", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "40 samples × 2 view(s)" in text and "k=4" in text
    assert cli(["train", str(cfg), "--set", f"teacher_cache={out}", "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["teacher_cache"] == str(out)
    capsys.readouterr()
    for args, msg in ((["--views", "0"], "--views must be >= 1"), (["--views", "2", "--topk", "11"], "more than the 10"),
                      (["--views", "2", "--topk", "x"], "--topk takes a number")):
        with pytest.raises(SystemExit) as e:
            rc = cli(["cache", "build", str(cfg), "--out", str(tmp_path / "bad"), "--quiet", *args])
            raise SystemExit(rc)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    # a job whose taps are not in the cache: exit 2 at start-up, with the rebuild command
    rc = cli(["train", str(cfg), "--set", f"teacher_cache={out}", "--set", "jobs.0.teacher=fc:input",
              "--set", "jobs.0.student=fc:input", "--quiet", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "the jobs tap ['fc:input']" in err and f"kdforge cache build {cfg}" in err


# ------------------------------------------------------------------------ torchrun
DDP_SCRIPT = """
import sys, json
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import test_engine_support  # registers tiny_net
from kdforge.engine import train
cfg = json.loads(open(sys.argv[1]).read())
cfg["output_dir"] = sys.argv[2]
train(cfg, verbose=False)
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_ranks_read_the_cache_and_match_one_process(setup, tmp_path):
    """Every rank reads the rows of its own shard from the shared memory-mapped cache; with the views
    replayed (not drawn per rank) and no BatchNorm in the student, 2 processes train what 1 does."""
    import test_engine_support  # noqa: F401  (registers tiny_net in this process too)
    from test_ddp import TESTS, _run
    import sys

    root, data = setup
    cfg = kd_config(root, data, model={"name": "tiny_net", "kwargs": {"num_classes": 10, "in_channels": 1}},
                    train={"epochs": 2, "ce_weight": 0.5, "log_every": 100})
    cfg["data"]["batch_size"] = 8
    cfg["teacher_cache"] = str(build_cache(cfg, views=2, out=tmp_path / "cache", verbose=False))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS)))
    _run([sys.executable, str(script), str(tmp_path / "cfg.json"), str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
          str(tmp_path / "cfg.json"), str(tmp_path / "two")], tmp_path)
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["state"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["state"]
    assert int(one["step"]) == int(two["step"]) == 10  # 40 samples / 8 × 2 epochs
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, atol=1e-5, rtol=1e-4, msg=k)
