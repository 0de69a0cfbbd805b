"""CLI through ``kdforge.cli.main([...])``: train, eval, compare, inspect, and clean user errors."""
from __future__ import annotations

import json

import yaml
from test_engine_support import run_config

from kdforge.cli import COMMANDS, main


def _config(tmp_path, name="cli", jobs=False):
    cfg = run_config(str(tmp_path / name), epochs=1, jobs=jobs)
    cfg["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_commands_are_registered():
    names = [c.name for c in COMMANDS]
    assert {"train", "check", "show", "list", "eval", "compare", "inspect", "convert"} <= set(names)


def test_train_eval_compare(tmp_path, capsys):
    base = _config(tmp_path, "base")
    assert main(["train", str(base), "--quiet", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert summary["epochs"] == 2 and f"best top1 = {summary['best']['value']:.2f}" in out

    kd = _config(tmp_path, "kd", jobs=True)
    other_dir = tmp_path / "kd_out"
    assert main(["train", str(kd), "--quiet", "--out", str(other_dir)]) == 0
    assert (other_dir / "summary.json").is_file() and not (tmp_path / "kd").exists()
    capsys.readouterr()

    assert main(["eval", str(base), "--weights", str(tmp_path / "base" / "best.pt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 64 and res["metrics"]["top1"] == summary["best"]["value"]

    png = tmp_path / "cmp.png"
    assert main(["compare", str(tmp_path / "base"), str(other_dir), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "(baseline)" in table and "kd" in table and "delta" in table and png.stat().st_size > 1000
    kd_best = json.loads((other_dir / "summary.json").read_text())["best"]["value"]
    assert f"{kd_best - summary['best']['value']:+.2f}" in table

    # resume a finished run: nothing to train, same summary metrics
    assert main(["train", str(base), "--quiet", "--set", "train.epochs=2", "--resume"]) == 0
    again = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert again["final"] == summary["final"]


def test_inspect_lists_tappable_paths(capsys):
    assert main(["inspect", "resnet8", "--input-shape", "1,28,28", "--kwargs", "in_channels=1", "num_classes=10"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("layer3 "))
    assert "Sequential" in line and "(1, 64, 7, 7)" in line
    assert any(ln.startswith("fc ") and "(1, 10)" in ln for ln in out.splitlines())
    assert "77,754 params" in out


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["train", str(cfg), "--set", "train.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert "train.epochz" in err and "Traceback" not in err and err.startswith("kdforge train: error:")

    assert main(["train", str(cfg), "--set", "train.optimizer.name=lion"]) == 2
    assert "train.optimizer: unknown optimizer 'lion'" in capsys.readouterr().err

    assert main(["train", str(cfg), "--set", "data.name=fashion_mnist", "--data", str(tmp_path / "none")]) == 2
    assert "Fashion-MNIST not found" in capsys.readouterr().err

    assert main(["eval", str(cfg), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert main(["train", str(cfg), "--resume", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert main(["inspect", "resnet9000"]) == 2
    assert "resnet" in capsys.readouterr().err

    assert main(["compare", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err
