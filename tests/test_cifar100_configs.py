"""configs/cifar100/: every recipe validates, builds and runs a forward on CIFAR-shaped input; the
schedule is mdistiller's; one recipe trains end to end on a tiny CIFAR-100 written in the real format."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdforge.build import build_distiller, build_model_from_spec
from kdforge.config.run import load_run_config
from kdforge.engine.schedule import LRFactor, build_scheduler

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs" / "cifar100").glob("*.yaml"))
METHODS = {"teacher", "baseline", "kd", "dkd", "fitnet", "at", "rkd", "crd", "pkt", "sp", "nst", "ofd", "vid", "dist",
           "logit_std"}
UNTRAINED = ["teachers.teacher.weights=null", "allow_untrained_teacher=true"]


def _load(path: Path, extra: list[str] | None = None):
    plain = load_run_config(path)
    return load_run_config(path, (UNTRAINED if plain.teachers else []) + (extra or []))


def test_every_method_has_a_recipe():
    assert {p.stem for p in CONFIGS} == METHODS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_validates_builds_and_runs_a_forward(path: Path) -> None:
    cfg = load_run_config(path)
    assert cfg.data.name == "cifar100" and cfg.data.batch_size == 64 and cfg.data.augment
    assert cfg.train.epochs == 240
    assert cfg.train.optimizer.name == "sgd"
    assert cfg.train.optimizer.kwargs == {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    assert cfg.train.schedule.name == "step"
    assert cfg.train.schedule.kwargs == {"milestones": [150, 180, 210], "gamma": 0.1}
    if path.stem in ("teacher", "baseline"):
        assert not cfg.jobs and cfg.student.name == ("resnet32x4" if path.stem == "teacher" else "resnet8x4")
        return
    assert cfg.student.name == "resnet8x4" and cfg.teachers["teacher"].name == "resnet32x4"
    assert cfg.teachers["teacher"].weights == "runs/cifar100_teacher/best.pt"  # what teacher.yaml writes
    assert load_run_config(ROOT / "configs/cifar100/teacher.yaml").name == "cifar100_teacher"
    cfg = _load(path)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with build_distiller(cfg, warn=lambda m: None) as distiller:
        if distiller.needs_dataset_labels:
            distiller.set_dataset_labels(torch.arange(50000) % 100)
        distiller.dry_run(x, labels=y, index=torch.tensor([0, 1, 2, 3]), epoch=0)  # taps, connectors, shapes
        out, kd_loss = distiller(x, labels=y, index=torch.tensor([0, 1, 2, 3]), epoch=0)
    assert out.shape == (4, 100) and torch.isfinite(kd_loss)


def test_the_schedule_reproduces_the_milestones():
    cfg = load_run_config(ROOT / "configs/cifar100/kd.yaml", UNTRAINED)
    steps = 782  # ceil(50000 / 64)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    sched = build_scheduler(opt, cfg.train.schedule.name, cfg.train.schedule.kwargs, cfg.train.epochs, steps)
    factor: LRFactor = sched.lr_lambdas[0]  # type: ignore[assignment]
    for epoch in range(240):
        want = 0.05 * 0.1 ** sum(epoch >= m for m in (150, 180, 210))  # mdistiller: epoch+1 > stage
        for step in (epoch * steps, epoch * steps + steps - 1):
            assert 0.05 * factor(step) == pytest.approx(want, rel=1e-12), (epoch, step)
    assert 0.05 * factor(149 * steps + steps - 1) == pytest.approx(0.05)
    assert 0.05 * factor(150 * steps) == pytest.approx(0.005)


def test_crd_recipe_trains_on_a_tiny_cifar100(tmp_path):
    """The real data path: the pickle archive → CIFAR targets → CRD's class negatives, one epoch."""
    from kdforge.engine import Trainer
    from user_data_helpers import write_cifar

    write_cifar(tmp_path / "data", "cifar100", n_train=48, n_test=16)
    cfg = _load(ROOT / "configs/cifar100/crd.yaml", [
        f"data.root={tmp_path / 'data'}", "data.batch_size=16", "data.num_workers=0", "train.epochs=1",
        f"output_dir={tmp_path / 'runs'}", "teachers.teacher.name=resnet8x4",  # a small teacher: a fast test
        "jobs.0.loss.n_data=48", "jobs.0.loss.nce_k=32"])
    trainer = Trainer(cfg, verbose=False)
    summary = trainer.fit()
    loss = trainer.distiller.jobs[0].loss
    assert loss.labels_by_index is not None and loss.labels_by_index.numel() == 48
    assert summary["best"] is not None and (tmp_path / "runs").exists()


@pytest.mark.parametrize("milestones", [[150, 0], [150.5], ["150"], [True]])
def test_step_schedule_rejects_milestones_that_are_not_epochs(milestones):
    from kdforge.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="milestones are epoch numbers"):
        load_run_config(ROOT / "configs/cifar100/baseline.yaml", [f"train.schedule.milestones={milestones}"])
