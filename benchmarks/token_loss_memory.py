"""Peak memory and time of the chunked token-level losses vs a direct (TRL/DistiLLM-style) implementation.

Each measurement runs in a fresh subprocess (one CPU thread): it builds student logits (B, L, V)
(requiring grad) and teacher logits, records the peak resident memory (``ru_maxrss``), then runs
loss + backward and reports how much the peak rose — the memory the loss itself needs — and the
time. Variants are interleaved over repeats; medians are reported.

    python benchmarks/token_loss_memory.py                     # B=4, L=256, V=32000 (1024 tokens)
    python benchmarks/token_loss_memory.py --vocab 151936 --length 64
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
torch.set_num_threads(1)
kind, loss_name, B, L, V = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
g = torch.Generator().manual_seed(0)
s = torch.randn(B, L, V, generator=g).requires_grad_(True)
t = torch.randn(B, L, V, generator=g)
labels = torch.randint(0, V, (B, L), generator=g)
labels[:, : L // 8] = -100

def naive(s, t):  # the direct implementation: full-size log-softmaxes, probabilities, mixtures
    mask = torch.cat([labels[:, 1:] != -100, torch.zeros(B, 1, dtype=torch.bool)], 1)
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    if loss_name == "forward_kl":
        per = F.kl_div(ls, lt, reduction="none", log_target=True)
    elif loss_name == "jsd":
        m = torch.logsumexp(torch.stack([ls + torch.log(torch.tensor(0.5)), lt + torch.log(torch.tensor(0.5))]), 0)
        per = 0.5 * F.kl_div(m, lt, reduction="none", log_target=True) + 0.5 * F.kl_div(m, ls, reduction="none", log_target=True)
    elif loss_name == "tvd":
        per = 0.5 * (lt.exp() - ls.exp()).abs()
    return per[mask].sum() / mask.sum()

if kind == "chunked":
    from kdforge import LOSSES
    loss_fn = LOSSES.build(loss_name)
    fn = lambda s, t: loss_fn(s, t, labels=labels)
else:
    fn = naive
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
val = fn(s, t)
val.backward()
dt = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mib": (after - before) / 1024, "seconds": dt, "value": float(val)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--losses", default="forward_kl,jsd,tvd")
    a = ap.parse_args()
    full = a.batch * a.length * a.vocab * 4 / 2**20
    print(f"B={a.batch} L={a.length} V={a.vocab}: one float32 copy of the logits = {full:.0f} MiB")
    print("| loss | direct: extra peak MiB | chunked: extra peak MiB | ratio | direct s | chunked s | same value |")
    print("|---|---|---|---|---|---|---|")
    for name in a.losses.split(","):
        res: dict[str, list[dict]] = {"naive": [], "chunked": []}
        for _ in range(a.repeats):
            for kind in res:  # interleaved
                out = subprocess.run([sys.executable, "-c", CHILD, kind, name, str(a.batch), str(a.length), str(a.vocab)],
                                     capture_output=True, text=True, check=True)
                res[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("extra_mib", "seconds")} for k, v in res.items()}
        same = abs(res["naive"][0]["value"] - res["chunked"][0]["value"]) < 1e-4 * max(1.0, abs(res["naive"][0]["value"]))
        print(f"| {name} | {med['naive']['extra_mib']:.0f} | {med['chunked']['extra_mib']:.0f} | "
              f"{med['naive']['extra_mib'] / max(med['chunked']['extra_mib'], 1):.1f}× | {med['naive']['seconds']:.2f} | "
              f"{med['chunked']['seconds']:.2f} | {same} |")


if __name__ == "__main__":
    main()
