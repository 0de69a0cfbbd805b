"""The trainer hands the training set's labels to CRD (class-aware negatives) before training starts."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

import test_engine_support as sup
from kdforge.data import WithIndex
from kdforge.data.wrappers import dataset_labels
from kdforge.distiller import DistillerError
from kdforge.engine import DATASETS, Trainer
from kdforge.losses.crd import CRDLoss


class LabelledBlobs(sup.Blobs):
    """Blobs with the ``targets`` attribute kdforge's datasets (Fashion-MNIST, CIFAR, image folders) expose."""

    @property
    def targets(self) -> Tensor:
        return self.y


def _register() -> None:
    @DATASETS.register("labelled_blobs", override=True)
    def labelled_blobs(cfg: Any, seed: int) -> tuple[Dataset, Dataset]:
        return LabelledBlobs(64, seed=1), LabelledBlobs(32, seed=2)


def _cfg(tmp_path, dataset: str = "labelled_blobs", n_data: int = 40, **loss: Any) -> dict[str, Any]:
    _register()
    cfg = sup.run_config(str(tmp_path / "run"), epochs=1)
    cfg["data"] = {"name": dataset, "batch_size": 8, "with_index": True, "train_subset": 40}
    cfg["jobs"] = [{"name": "crd", "loss": {"type": "crd", "n_data": n_data, "nce_k": 32, "feat_dim": 8, **loss},
                    "student": "fc:input", "teacher": "fc:input", "weight": 0.8}]
    return cfg


def test_dataset_labels_through_wrappers():
    from torch.utils.data import Subset

    ds = LabelledBlobs(10)
    assert torch.equal(dataset_labels(WithIndex(Subset(ds, [3, 1, 8]))), ds.y[[3, 1, 8]])
    assert dataset_labels(sup.Blobs(10)) is None  # no targets attribute
    ds2 = sup.Blobs(4)
    ds2.targets = [{"boxes": 1}] * 4  # type: ignore[attr-defined]  (detection-style targets: not labels)
    assert dataset_labels(ds2) is None


def test_trainer_gives_crd_the_labels_and_negatives_avoid_the_anchor_class(tmp_path, monkeypatch):
    seen: list[tuple[Tensor, Tensor]] = []
    real = CRDLoss._class_negatives

    def spy(self, index):
        neg = real(self, index)
        seen.append((index.clone(), neg.clone()))
        return neg

    monkeypatch.setattr(CRDLoss, "_class_negatives", spy)
    trainer = Trainer(_cfg(tmp_path), verbose=False)
    trainer.fit()
    loss = trainer.distiller.jobs[0].loss
    labels = torch.arange(40) % 4  # the first 40 (train_subset) of LabelledBlobs
    assert torch.equal(loss.labels_by_index, labels)
    assert len(seen) == 1 + 5  # dry run + 40/8 training steps
    for index, neg in seen:
        assert neg.shape == (len(index), 32)
        assert (labels[neg] != labels[index].unsqueeze(1)).all()


def test_no_labels_is_an_error_before_training_naming_the_fix(tmp_path):
    cfg = _cfg(tmp_path, dataset="synthetic_blobs")
    cfg["data"]["train_subset"] = 40
    with pytest.raises(DistillerError, match=r"job 'crd': crd: negatives='class'.*no `targets`.*negatives: uniform"):
        Trainer(cfg, verbose=False).fit()
    assert not (tmp_path / "run" / "metrics.csv").exists()
    cfg = _cfg(tmp_path / "u", dataset="synthetic_blobs", negatives="uniform")
    assert Trainer(cfg, verbose=False).fit()["best"] is not None


def test_wrong_n_data_is_an_error_naming_the_size(tmp_path):
    with pytest.raises(DistillerError, match=r"n_data=64 but the training set has 40 samples; set the crd loss's "
                                             r"n_data: 40"):
        Trainer(_cfg(tmp_path, n_data=64), verbose=False).fit()
