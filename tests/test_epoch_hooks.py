"""The trainer calls Distiller.on_epoch_start, which refreshes MGD's channel matching from data."""
import torch

import test_engine_support as sup
from kdforge.engine import Trainer
from kdforge.losses.mgd import MGDLoss


def test_trainer_refreshes_mgd_matching_every_update_freq_epochs(tmp_path, monkeypatch):
    cfg = sup.run_config(str(tmp_path / "run"), epochs=3, bn=True)
    cfg["model"]["kwargs"]["width"] = 4
    cfg["teachers"]["t0"]["kwargs"]["width"] = 8
    cfg["jobs"] = [{"name": "mgd", "loss": {"type": "mgd", "update_freq": 2, "auto_init": False},
                    "student": "bn1", "teacher": "bn1", "weight": 1e-3}]
    calls = []
    real = MGDLoss.update_matching

    def spy(self, loader, max_samples=-1):
        calls.append(len(loader.dataset))
        return real(self, loader, max_samples)

    monkeypatch.setattr(MGDLoss, "update_matching", spy)
    trainer = Trainer(cfg, verbose=False)
    trainer.fit()
    assert len(calls) == 2  # before epochs 0 and 2 of 3 (the dry run builds a provisional matching)
    loss = trainer.distiller.jobs[0].loss
    assert loss.matching.shape == (2, 4) and loss.matching.unique().numel() == 8  # 8 teacher ch → 2 groups × 4
    assert torch.isfinite(torch.tensor(trainer.distiller.losses["mgd"].item()))
