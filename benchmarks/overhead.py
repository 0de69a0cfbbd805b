"""What the Distiller costs over a hand-written KD step (taps, jobs, checks).

Times, in one process and interleaved, a training step written by hand (student forward/backward,
teacher forward under no_grad, KD + FitNet through a 1x1 conv written inline) against the same step
through ``kdforge.Distiller`` with two jobs; prints the median of each and their ratio.

    python benchmarks/overhead.py --repeats 30 --batch 64
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdforge import Distiller, DistillJob
from kdforge.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    student = build_model("resnet8", in_channels=1)
    teacher = build_model("resnet20", in_channels=1).eval().requires_grad_(False)
    x, y = torch.randn(a.batch, 1, 28, 28), torch.randint(0, 10, (a.batch,))

    # hand-written: raw forward hooks into a dict, connector inline
    conn = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64))
    feats: dict[str, torch.Tensor] = {}
    h1 = student.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("s", o))
    h2 = teacher.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("t", o))
    opt_a = torch.optim.SGD([*student.parameters(), *conn.parameters()], lr=0.01)

    def manual() -> None:
        out = student(x)
        with torch.no_grad():
            t_out = teacher(x)
        fs, ft = feats["s"], feats["t"]
        kd = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(t_out / 4, 1), reduction="batchmean") * 16
        loss = F.cross_entropy(out, y) + 0.9 * kd + 100 * F.mse_loss(conn(fs), ft)
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()

    for f in (manual, manual):
        f()
    times: dict[str, list[float]] = {"manual": [], "kdforge": []}
    d = Distiller(student, teacher, [DistillJob(loss={"type": "kd", "T": 4}, student="fc", teacher="fc", weight=0.9),
                                     DistillJob(loss="fitnet", student="layer3", teacher="layer3",
                                                connector="conv1x1_bn", weight=100)])
    opt_b = torch.optim.SGD(d.learnable_parameters(), lr=0.01)

    def kdforge_step() -> None:
        out, kd = d(x, labels=y)
        loss = F.cross_entropy(out, y) + kd
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()

    kdforge_step()  # warm-up (and lazy connector shapes)
    kdforge_step()
    for _ in range(a.repeats):
        for name, f in (("manual", manual), ("kdforge", kdforge_step)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    h1.remove()
    h2.remove()
    m, k = statistics.median(times["manual"]), statistics.median(times["kdforge"])
    print(f"resnet20 → resnet8, batch {a.batch}, {a.repeats} interleaved repeats, {a.threads} threads")
    print(f"hand-written step: median {m * 1e3:.1f} ms; Distiller step: median {k * 1e3:.1f} ms; ratio {k / m:.3f}")


if __name__ == "__main__":
    main()
