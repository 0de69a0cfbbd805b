"""Start-up: heavy optional libraries are imported on first use, never by ``import kdforge``."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy", "matplotlib", "tensorboard", "faster_coco_eval", "transformers", "lightning")


@pytest.mark.parametrize("module", ["kdforge", "kdforge.engine", "kdforge.cli"])
def test_import_does_not_load_heavy_optional_libraries(module):
    code = (f"import sys, {module}\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout.strip()
    assert out == "", f"`import {module}` imported {out}; import these where they are first used"


def test_mgd_still_solves_the_matching_with_scipy():
    import numpy as np

    from kdforge.losses.mgd import solve_matching

    cost = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 5.0]])
    assert solve_matching(cost, 1).tolist() == [[0, 1]]
