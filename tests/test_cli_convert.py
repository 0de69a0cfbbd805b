from pathlib import Path

import yaml

from kdforge.cli import main
from kdforge.config import DistillConfig, load

DATA = Path(__file__).parent / "data" / "translate"


def test_convert_prints_a_valid_kdforge_config(capsys):
    assert main(["convert", str(DATA / "up_multi_jobs.yaml")]) == 0
    out = capsys.readouterr().out
    cfg = load(DistillConfig, yaml.safe_load(out), context={"check_names": False})  # models/losses: the user's
    assert len(cfg.jobs) >= 2


def test_convert_writes_file_and_reports_errors(tmp_path, capsys):
    target = tmp_path / "kd.yaml"
    assert main(["convert", str(DATA / "mslim_vid.yaml"), "-o", str(target)]) == 0
    assert load(DistillConfig, yaml.safe_load(target.read_text()), context={"check_names": False}).jobs
    bad = tmp_path / "bad.yaml"
    bad.write_text("foo: 1\n")
    assert main(["convert", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "kdforge convert: error:" in err and "Traceback" not in err
