"""What the Distiller costs over a hand-written KD step (taps, jobs, checks), and over the previous release.

Two cases, each timed in one process, one thread, interleaved (see ``_bench.py``):

``tiny``
    MLPs (32 → 64 → 10 student, 32 → 128 → 10 teacher, batch 16): the models cost almost nothing, so
    the step time is the fixed per-step cost. Hand-written = torchdistill-style minimal code: forward
    hooks store the outputs in a dict, ``F.kl_div`` KD, CE, backward, SGD step.
``resnet``
    resnet20 → resnet8 on 1×28×28, batch 64, KD + FitNet (1×1 conv + BN connector written inline in
    the hand-written step).

Each case runs the same step through the current ``kdforge.Distiller`` and through the previous
release's (git ``81ddfe3``, extracted with ``git archive``; ``--no-old`` skips it).

    python benchmarks/overhead.py --repeats 200 --cases tiny
    python benchmarks/overhead.py --repeats 20 --cases resnet
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from _bench import PREVIOUS_RELEASE, interleaved, median, previous_release
import kdforge
from kdforge.models import build_model


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def tiny_case(pkgs: dict):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    student, teacher = mlp(64), mlp(128).eval().requires_grad_(False)
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
    s_hand, t_hand = copy.deepcopy(student), copy.deepcopy(teacher)
    io: dict[str, torch.Tensor] = {}
    s_hand.register_forward_hook(lambda m, i, o: io.__setitem__("s", o))
    t_hand.register_forward_hook(lambda m, i, o: io.__setitem__("t", o))
    opt = torch.optim.SGD(s_hand.parameters(), lr=0.01)

    def hand() -> None:
        with torch.no_grad():
            t_hand(x)
        s_hand(x)
        s, t = io["s"], io["t"]
        kd = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
        loss = F.cross_entropy(s, y) + 0.9 * kd
        opt.zero_grad()
        loss.backward()
        opt.step()

    fns = {"hand-written": hand}
    for label, pkg in pkgs.items():
        d = pkg.Distiller(copy.deepcopy(student), copy.deepcopy(teacher),
                          [pkg.DistillJob(loss={"type": "kd", "T": 4}, student="", teacher="", weight=0.9)])
        fns[label] = _distiller_step(d, x, y)
    return "tiny MLPs, batch 16, KD", fns


def resnet_case(pkgs: dict):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    student = build_model("resnet8", in_channels=1)
    teacher = build_model("resnet20", in_channels=1).eval().requires_grad_(False)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    s_hand, t_hand = copy.deepcopy(student), copy.deepcopy(teacher)
    conn = nn.Sequential(nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64))
    feats: dict[str, torch.Tensor] = {}
    s_hand.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("s", o))
    t_hand.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("t", o))
    opt = torch.optim.SGD([*s_hand.parameters(), *conn.parameters()], lr=0.01)

    def hand() -> None:
        out = s_hand(x)
        with torch.no_grad():
            t_out = t_hand(x)
        fs, ft = feats["s"], feats["t"]
        kd = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(t_out / 4, 1), reduction="batchmean") * 16
        loss = F.cross_entropy(out, y) + 0.9 * kd + 100 * F.mse_loss(conn(fs), ft)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fns = {"hand-written": hand}
    for label, pkg in pkgs.items():
        d = pkg.Distiller(copy.deepcopy(student), copy.deepcopy(teacher),
                          [pkg.DistillJob(loss={"type": "kd", "T": 4}, student="fc", teacher="fc", weight=0.9),
                           pkg.DistillJob(loss="fitnet", student="layer3", teacher="layer3", connector="conv1x1_bn",
                                          weight=100)])
        fns[label] = _distiller_step(d, x, y)
    return "resnet20 → resnet8, batch 64, KD + FitNet", fns


def _distiller_step(d, x, y):  # type: ignore[no-untyped-def]
    d.dry_run(x, labels=y)  # lazy connectors
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.01)

    def step() -> None:
        out, kd = d(x, labels=y)
        loss = F.cross_entropy(out, y) + kd
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


CASES = {"tiny": tiny_case, "resnet": resnet_case}


def run(case: str, repeats: int, old: bool) -> dict[str, float]:
    pkgs = {"kdforge": kdforge}
    if old:
        pkgs[f"previous release ({PREVIOUS_RELEASE})"] = previous_release()
    title, fns = CASES[case](pkgs)
    times = interleaved(fns, repeats, warmup=5)
    hand = median(times["hand-written"])
    print(f"\n{title}: {repeats} interleaved repeats, {torch.get_num_threads()} thread(s)")
    out = {}
    for k, ts in times.items():
        m = median(ts)
        extra = "" if k == "hand-written" else f"   over hand-written {(m - hand) * 1e3:+.3f} ms ({m / hand:.2f}×)"
        print(f"  {k:30s} median {m * 1e3:8.3f} ms{extra}")
        out[k] = m * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-old", action="store_true", help="skip the previous release")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for c in a.cases:
        run(c, a.repeats, not a.no_old)


if __name__ == "__main__":
    main()
