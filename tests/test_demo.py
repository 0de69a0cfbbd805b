"""The main job (`make demo` = python -m kdforge.demo) end to end on tiny fake IDX files."""
import json

from kdforge import demo
from test_data import fake_dataset


def test_demo_trains_teacher_baseline_and_kd_and_compares(tmp_path, capsys):
    data = fake_dataset(tmp_path / "data", n_train=48, n_test=16)
    out = tmp_path / "runs"
    rc = demo.main(["--data", str(data), "--out", str(out), "--seeds", "0,1", "--quiet",
                    "--set", "train.epochs=1", "--set", "data.batch_size=16"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Fashion-MNIST test set, seed 1" in text and "final test top-1 over seeds [0, 1]" in text
    for run in ("fmnist_teacher", "fmnist_baseline", "fmnist_kd"):
        assert run in text
    assert (out / "seed0" / "accuracy.png").stat().st_size > 0
    res = json.loads((out / "demo_results.json").read_text())
    assert [r["seed"] for r in res["runs"]] == [0, 1] and 0 <= res["teacher"] <= 100
    kd = json.loads((out / "seed1" / "kd" / "summary.json").read_text())
    assert kd["jobs"] == ["kd"] and kd["params"] < kd["teachers"]["teacher"]["params"]
    # KD distils from the teacher cache built once (the teacher is not run again)
    assert kd["teacher_cache"] == str(out / "teacher_cache") and res["teacher_cache"]["views"] == 4
    assert (out / "teacher_cache" / "manifest.json").is_file()


def test_demo_without_data_says_how_to_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDFORGE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr("kdforge.data.fashion_mnist.DEFAULT_DIRS", [str(tmp_path / "nowhere")], raising=False)
    rc = demo.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "apt-get install dataset-fashion-mnist" in err
