"""The BYOT and MEAL-V2 recipe configs train through the ordinary trainer (tiny fake data, 1 epoch)."""
import csv
from pathlib import Path

import torch

from kdforge.engine import train
from kdforge.models import build_model
from test_data import fake_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fmnist"
TINY = ["train.epochs=1", "data.batch_size=16"]


def test_byot_recipe_trains_heads_and_saves_the_plain_student(tmp_path):
    data = fake_dataset(tmp_path / "data", n_train=48, n_test=16)
    s = train(CONFIGS / "byot.yaml", [*TINY, f"data.root={data}", f"output_dir={tmp_path / 'byot'}"], verbose=False)
    assert s["jobs"] == ["byot"] and "top1" in s["final"]
    best = torch.load(Path(s["run_dir"]) / "best.pt", weights_only=True)
    plain = build_model("cnn", channels=[8, 16, 32], in_channels=1)
    assert best["student"].keys() == plain.state_dict().keys()  # no auxiliary heads in the student
    assert any("heads" in k or "head" in k for k in best["state"])  # but they are in the run's state


def test_meal_v2_recipe_uses_two_teachers_and_no_hard_labels(tmp_path):
    data = fake_dataset(tmp_path / "data", n_train=48, n_test=16)
    weights = []
    for i in range(2):
        torch.manual_seed(i)
        p = tmp_path / f"t{i}.pt"
        torch.save(build_model("cnn", channels=[32, 64, 128], in_channels=1).state_dict(), p)
        weights.append(p)
    s = train(CONFIGS / "meal_v2.yaml", [*TINY, f"data.root={data}", f"output_dir={tmp_path / 'meal'}",
                                         f"teachers.t0.weights={weights[0]}", f"teachers.t1.weights={weights[1]}"],
              verbose=False)
    assert s["jobs"] == ["ensemble_kd", "discriminator"] and set(s["teachers"]) == {"t0", "t1"}
    row = next(csv.DictReader((Path(s["run_dir"]) / "metrics.csv").open()))
    # no hard labels: the training loss is the two distillation jobs alone, not the (logged) task loss
    parts = float(row["loss_ensemble_kd"]) + float(row["loss_discriminator"])
    assert abs(float(row["train_loss"]) - parts) < 1e-3 and float(row["task_loss"]) > 0
