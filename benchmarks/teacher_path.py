"""The teacher inference path: a KD training step with the default TeacherExec vs the plain one.

For each pair (the demo's cnn[32,64,128] → cnn[8,16,32] on 1×28×28, and resnet32x4 → resnet8x4 on
3×32×32) two Distillers with the same weights train side by side, interleaved: ``plain``
(``teacher_exec: plain`` — the previous behaviour: contiguous weights, student first) and
``default`` (channels_last conv teacher, teacher first); ``--ablation`` adds each switch alone and
``--bf16`` the bf16-autocast teacher. Also prints how much a bf16 teacher changes the KD loss
(relative difference of the loss value on the same batch, mean over batches).

    python benchmarks/teacher_path.py --repeats 20            # 1 thread by default
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F

from _bench import interleaved, median
from kdforge import Distiller, DistillJob
from kdforge.models import build_model

PAIRS = {
    "cnn": (lambda: build_model("cnn", channels=[8, 16, 32]), lambda: build_model("cnn", channels=[32, 64, 128]),
            (1, 28, 28), 128),
    "resnet": (lambda: build_model("resnet8x4", in_channels=3), lambda: build_model("resnet32x4", in_channels=3),
               (3, 32, 32), 32),
}
VARIANTS = {"plain": "plain", "default": None}
ABLATION = {"teacher channels_last only": {"teacher_first": False},
            "teacher_first only": {"channels_last": False},
            "student channels_last only": {"channels_last": False, "teacher_first": False,
                                           "student_channels_last": True},
            "default + student channels_last (opt-in)": {"student_channels_last": "auto"}}


def step_fn(student, teacher, x, y, teacher_exec):  # type: ignore[no-untyped-def]
    d = Distiller(copy.deepcopy(student), {"t": copy.deepcopy(teacher)},
                  [DistillJob(loss={"type": "kd", "T": 4}, student="", teacher="", weight=0.9)],
                  teacher_exec=teacher_exec)
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        out, kd = d(x, labels=y)
        loss = F.cross_entropy(out, y) + kd
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def bf16_kd_difference(student, teacher, shape, batch: int, n: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Mean |KD(bf16 teacher) − KD(fp32 teacher)| / KD(fp32) over ``n`` random batches."""
    job = [DistillJob(loss={"type": "kd", "T": 4}, student="", teacher="")]
    fp = Distiller(copy.deepcopy(student), copy.deepcopy(teacher), job, teacher_exec="plain").eval()
    bf = Distiller(copy.deepcopy(student), copy.deepcopy(teacher), job, teacher_exec={"autocast": "bf16"}).eval()
    rel = []
    with torch.no_grad():
        for _ in range(n):
            x = torch.randn(batch, *shape)
            a, b = float(fp(x)[1]), float(bf(x)[1])
            rel.append(abs(b - a) / a)
    return statistics.mean(rel)


def run(pair: str, repeats: int, ablation: bool, bf16: bool) -> dict[str, float]:
    make_s, make_t, shape, batch = PAIRS[pair]
    torch.manual_seed(0)
    student, teacher = make_s(), make_t().eval()
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    variants: dict = dict(VARIANTS)
    if ablation:
        variants.update(ABLATION)
    if bf16:
        variants["default + bf16 teacher"] = {"autocast": "bf16"}
    times = interleaved({k: step_fn(student, teacher, x, y, v) for k, v in variants.items()}, repeats)
    base = median(times["plain"])
    print(f"\n{pair}: batch {batch}×{shape}, KD training step, {repeats} interleaved repeats, "
          f"{torch.get_num_threads()} thread(s)")
    for k, ts in times.items():
        print(f"  {k:24s} median {median(ts) * 1e3:8.1f} ms   speed-up vs plain {base / median(ts):5.2f}×")
    diff = bf16_kd_difference(student, teacher, shape, batch)
    print(f"  bf16 teacher changes the KD loss by {diff:.2e} (relative, mean of 5 batches)")
    return {"plain_ms": base * 1e3, "default_ms": median(times["default"]) * 1e3,
            "speedup": base / median(times["default"]), "bf16_rel_diff": diff,
            "variants": {k: base / median(ts) for k, ts in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ablation", action="store_true", help="also each switch alone")
    ap.add_argument("--bf16", action="store_true", help="also time a bf16-autocast teacher")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for p in a.pairs:
        run(p, a.repeats, a.ablation, a.bf16)


if __name__ == "__main__":
    main()
