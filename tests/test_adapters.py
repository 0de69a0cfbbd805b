"""The Distiller inside Hugging Face's Trainer and PyTorch Lightning (tiny models, a few steps)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kdforge import Distiller, DistillJob
from kdforge.models import build_model, load_weights

pytestmark = pytest.mark.extras


class _Images(Dataset):
    """Dict items as HF image datasets give them: class k images are brighter in channel k."""

    def __init__(self, n: int = 16, size: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 3, size, size, generator=g) * 0.3
        self.x[torch.arange(n), self.y] += 1.0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": int(self.y[i])}


def _vit(hidden: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=hidden, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=2 * hidden, num_labels=3)
    return transformers.ViTForImageClassification(cfg)


def test_hf_trainer_compute_loss_trains_student_and_connector(tmp_path):
    transformers = pytest.importorskip("transformers")
    from kdforge.adapters.hf import DistillationTrainer

    student, teacher = _vit(8), _vit(16)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    distiller = Distiller(student, {"t0": teacher}, [
        DistillJob(name="kd", loss={"type": "kd", "T": 2}, student="classifier", teacher="classifier", weight=0.5),
        DistillJob(name="hint", loss="fitnet", student="classifier:input", teacher="classifier:input",
                   connector="linear", weight=1.0)])
    args = transformers.TrainingArguments(str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                                          learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_steps=1, disable_tqdm=True)
    trainer = DistillationTrainer(distiller, args=args, train_dataset=_Images(), eval_dataset=_Images(8), ce_weight=0.5)
    names = {id(p) for group in trainer.create_optimizer().param_groups for p in group["params"]}
    assert all(id(p) in names for p in distiller.learnable_parameters())  # connectors were shaped before the optimizer
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in s_before.items())
    assert int(distiller.step) == 3  # the dry run that shaped the connector did not count
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and torch.isfinite(torch.tensor(metrics["eval_loss"]))
    path = trainer.save_student()
    again = transformers.ViTForImageClassification.from_pretrained(path)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in again.state_dict().items())


def test_hf_trainer_rejects_model_kwarg(tmp_path):
    transformers = pytest.importorskip("transformers")
    from kdforge.adapters.hf import DistillationTrainer

    args = transformers.TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(TypeError, match="not model="):
        DistillationTrainer(Distiller(_vit(8), {"t0": _vit(8)}, [DistillJob(loss="kd", student="classifier",
                                                                            teacher="classifier")]),
                            model=_vit(8), args=args)


def test_lightning_training_step_and_plain_student(tmp_path):
    L = pytest.importorskip("lightning")
    from kdforge.adapters.lightning import DistillationModule

    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    loader = DataLoader(ds, batch_size=8)
    student, teacher = build_model("resnet8"), build_model("resnet14")
    distiller = Distiller(student, {"t0": teacher}, [
        DistillJob(name="kd", loss="kd", student="", teacher="", weight=0.9),
        DistillJob(name="fit", loss="fitnet", student="layer2", teacher="layer2", connector="conv1x1", weight=1.0)])
    with pytest.raises(ValueError, match="example_batch"):
        DistillationModule(distiller).configure_optimizers()
    module = DistillationModule(distiller, ce_weight=0.1, example_batch=next(iter(loader)),
                                optimizer=lambda p: torch.optim.SGD(p, lr=0.05))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 2 and int(distiller.step) == 2
    logged = trainer.callback_metrics
    assert {"train/loss", "train/kd/kd", "train/kd/fit", "val/loss", "val/acc"} <= set(logged)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in before.items() if v.is_floating_point())
    path = module.save_student(tmp_path / "student.pt")
    fresh = load_weights(build_model("resnet8"), path)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_docs_integrations_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("lightning")
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    for code in (blocks[0], blocks[2]):  # blocks[1] is a method body shown for a user's own Trainer subclass
        exec(compile(code, "docs/integrations.md", "exec"), {})  # noqa: S102 - our own docs
    assert (tmp_path / "runs" / "hf_kd" / "student" / "config.json").is_file()
    assert (tmp_path / "runs" / "lightning_kd" / "student.pt").is_file()
    ns: dict = {}
    exec(compile(blocks[1], "docs/integrations.md", "exec"), ns)  # noqa: S102
    assert callable(ns["compute_loss"])


def test_distill_forward_batch_shapes():
    from kdforge.adapters.common import cross_entropy, distill_forward, output_logits

    d = Distiller(torch.nn.Linear(4, 3), {"t0": torch.nn.Linear(4, 3)}, [DistillJob(loss="kd", student="", teacher="")])
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    out, kd, labels = distill_forward(d, {"pixel_values": x, "labels": y})
    assert out.shape == (5, 3) and labels is y and kd.isfinite()
    out2, kd2, labels2 = distill_forward(d, (x, y))
    assert torch.equal(out, out2) and labels2 is y
    if not hasattr(d, "split_inputs"):
        with pytest.raises(ValueError, match="several model inputs"):
            distill_forward(d, {"input_ids": x, "attention_mask": x, "labels": y})
    with pytest.raises(ValueError, match="no model inputs"):
        distill_forward(d, {"labels": y})
    seq = torch.randn(2, 3, 7)
    assert torch.allclose(cross_entropy(seq, torch.tensor([[1, -100, 2], [0, 1, -100]])),
                          torch.nn.functional.cross_entropy(seq.reshape(6, 7)[[0, 2, 3, 4]], torch.tensor([1, 2, 0, 1])))
    assert output_logits({"logits": x}) is x and output_logits((x, None)) is x
    with pytest.raises(TypeError, match="task_loss"):
        output_logits([None])
