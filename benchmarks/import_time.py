"""Start-up: how long ``import kdforge`` takes, now and in the previous release.

Each sample is a fresh interpreter that imports torch first (every kdforge user pays that anyway),
then times ``import kdforge`` and records which heavy optional libraries it pulled in. Current and
previous release (git ``81ddfe3``, extracted with ``git archive``) alternate; medians and the ratio.

    python benchmarks/import_time.py --repeats 7
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench import PREVIOUS_RELEASE, ROOT, median

CHILD = """
import json, os, sys, time
import torch

def rss():  # resident MiB now (peak RSS would still be torch's import peak)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

rss0 = rss()
t = time.perf_counter()
import kdforge
dt = time.perf_counter() - t
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'matplotlib', 'tensorboard', 'faster_coco_eval',
                                                        'transformers', 'lightning'})
print(json.dumps({"s": dt, "mib": rss() - rss0,
                  "heavy": heavy, "file": kdforge.__file__}))
"""


def sample(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True,
                         cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(repeats: int) -> dict[str, float]:
    old = Path(tempfile.mkdtemp(prefix="kdforge_prev_"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "kdforge"], capture_output=True,
                         check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
    paths = {"kdforge": ROOT, f"previous release ({PREVIOUS_RELEASE})": old}
    res: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(repeats):
        for k, p in paths.items():
            res[k].append(sample(p))
    print(f"\n`import kdforge` after `import torch`, {repeats} fresh processes each, interleaved")
    out = {}
    for k, rs in res.items():
        s, mib = median([r["s"] for r in rs]), median([r["mib"] for r in rs])
        print(f"  {k:30s} median {s:6.3f} s, +{mib:5.1f} MiB resident; heavy modules loaded: "
              f"{', '.join(rs[0]['heavy']) or 'none'}")
        out[k] = s
    new, prev = out["kdforge"], out[f"previous release ({PREVIOUS_RELEASE})"]
    print(f"  previous / current: {prev / new:.2f}×")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    run(a.repeats)


if __name__ == "__main__":
    main()
