"""Search for a Fashion-MNIST recipe where KD really helps (the demo's recipe comes from here).

Trains, in one process, a teacher once and then baseline/KD students for the given recipes and
seeds, with in-memory tensors (no DataLoader) so that the comparison is cheap. Prints one line per
run and a summary (mean ± std over seeds) of the test-accuracy delta KD − baseline.

    python benchmarks/fmnist_recipe.py --teacher 32,64,128 --student 8,16,32 --epochs 5 \
        --alphas 0.5,0.9 --temps 4 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from kdforge import Distiller, DistillJob
from kdforge.data import load_fashion_mnist
from kdforge.models import build_model

MEAN, STD = 0.2860, 0.3530


def data(root: str | None):
    xs, ys = load_fashion_mnist(root, train=True)
    xt, yt = load_fashion_mnist(root, train=False)
    norm = lambda x: ((x.float() / 255 - MEAN) / STD).unsqueeze(1)  # noqa: E731
    return norm(xs), ys, norm(xt), yt


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    i, j = torch.randint(0, 5, (2,), generator=g).tolist()
    x = pad[:, :, i:i + 28, j:j + 28]
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def evaluate(model, xt, yt) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum().item() for i in range(0, len(xt), 1000))
    return 100.0 * correct / len(xt)


def train(model, xs, ys, xt, yt, epochs, lr, seed, bs=128, teacher=None, alpha=0.0, T=4.0, aug=True, wd=5e-4):
    g = torch.Generator().manual_seed(seed)
    if teacher is not None:
        d = Distiller(model, teacher, [DistillJob(loss={"type": "kd", "T": T}, student="fc", teacher="fc",
                                                  weight=alpha)])
        params = d.learnable_parameters()
    else:
        d, params = None, list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    steps = epochs * (len(xs) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xs), generator=g)
        for k in range(len(xs) // bs):
            idx = perm[k * bs:(k + 1) * bs]
            x, y = xs[idx], ys[idx]
            if aug:
                x = augment(x, g)
            if d is not None:
                out, kd = d(x)
                loss = (1 - alpha) * F.cross_entropy(out, y) + kd
            else:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return evaluate(model, xt, yt), time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--teacher", default="32,64,128")
    ap.add_argument("--teacher-convs", type=int, default=1)
    ap.add_argument("--student", default="8,16,32")
    ap.add_argument("--student-lr", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--alphas", default="0.9")
    ap.add_argument("--temps", default="4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--no-aug", action="store_true", help="no augmentation for the students")
    ap.add_argument("--teacher-no-aug", action="store_true", help="no augmentation for the teacher")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-cache", default=None, help="reuse/save the trained teacher's weights here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    xs, ys, xt, yt = data(a.data)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    torch.manual_seed(100)
    teacher = build_model("cnn", channels=ints(a.teacher), convs_per_stage=a.teacher_convs)
    if a.teacher_cache and os.path.exists(a.teacher_cache):
        teacher.load_state_dict(torch.load(a.teacher_cache, weights_only=True))
        acc, dt = evaluate(teacher, xt, yt), 0.0
    else:
        acc, dt = train(teacher, xs, ys, xt, yt, a.teacher_epochs, a.lr, 100, aug=not a.teacher_no_aug)
        if a.teacher_cache:
            torch.save(teacher.state_dict(), a.teacher_cache)
    print(f"teacher {a.teacher}x{a.teacher_convs}: {acc:.2f}% in {dt:.0f}s", flush=True)
    results: dict[str, list[float]] = {}
    for seed in ints(a.seeds):
        torch.manual_seed(seed)
        base = build_model("cnn", channels=ints(a.student))
        b_acc, dt = train(base, xs, ys, xt, yt, a.epochs, a.student_lr or a.lr, seed, aug=not a.no_aug)
        print(f"seed {seed} baseline: {b_acc:.2f}% ({dt:.0f}s)", flush=True)
        for alpha in map(float, a.alphas.split(",")):
            for T in map(float, a.temps.split(",")):
                torch.manual_seed(seed)
                stu = build_model("cnn", channels=ints(a.student))
                k_acc, dt = train(stu, xs, ys, xt, yt, a.epochs, a.student_lr or a.lr, seed, teacher=teacher, alpha=alpha, T=T,
                                  aug=not a.no_aug)
                key = f"alpha={alpha} T={T}"
                results.setdefault(key, []).append(k_acc - b_acc)
                print(f"seed {seed} KD {key}: {k_acc:.2f}% (delta {k_acc - b_acc:+.2f}, {dt:.0f}s)", flush=True)
    for key, deltas in results.items():
        sd = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
        print(f"{key}: delta {statistics.mean(deltas):+.2f} ± {sd:.2f} over {len(deltas)} seeds")


if __name__ == "__main__":
    main()
