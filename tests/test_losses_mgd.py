import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdforge.losses.base import ShapeMismatchError
from kdforge.losses.mgd import MGDLoss, channel_cost, solve_matching
from kdforge.losses.ofd import ofd_margin
from kdforge.registry import LOSSES


def np_cost(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Σ_n (2 - 2 cos) between channel vectors, with explicit loops."""
    n, cs = s.shape[:2]
    ct = t.shape[1]
    out = np.zeros((cs, ct))
    for k in range(n):
        for i in range(cs):
            a = s[k, i].ravel()
            for j in range(ct):
                b = t[k, j].ravel()
                out[i, j] += 2 - 2 * float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def planted(n: int = 4, cs: int = 3, src: tuple[int, ...] = (2, 0, 1, 1, 2, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher channel j is a noisy, rescaled copy of student channel src[j]."""
    s = torch.randn(n, cs, 4, 4)
    t = torch.stack([(1.0 + j) * s[:, c] + 0.05 * torch.randn(n, 4, 4) for j, c in enumerate(src)], dim=1)
    return s, t


def test_registered() -> None:
    assert isinstance(LOSSES.build("mgd", reducer="rd"), MGDLoss)
    with pytest.raises(ValueError, match="unknown reducer"):
        MGDLoss(reducer="max")


def test_channel_cost_matches_loops() -> None:
    s, t = torch.randn(2, 3, 3, 3), torch.randn(2, 5, 3, 3)
    assert np.allclose(channel_cost(s, t).numpy(), np_cost(s.numpy(), t.numpy()), atol=1e-5)


def test_group_assignment_against_brute_force() -> None:
    src = (2, 0, 1, 1, 2, 0)
    s, t = planted(src=src)
    cost = np_cost(s.numpy(), t.numpy()) / s.shape[0]
    best, best_groups = math.inf, None
    for perm in itertools.permutations(range(6)):  # perm[2i], perm[2i+1] go to student channel i
        total = sum(cost[i, perm[2 * i]] + cost[i, perm[2 * i + 1]] for i in range(3))
        if total < best - 1e-12:
            best, best_groups = total, [{perm[2 * i], perm[2 * i + 1]} for i in range(3)]
    assert best_groups == [{j for j, c in enumerate(src) if c == i} for i in range(3)]  # planted optimum

    loss = MGDLoss(reducer="amp")
    matching = loss.update_matching_from_features([s[:2], s[2:]], [t[:2], t[2:]])  # two batches
    assert matching.shape == (2, 3)
    assert [set(matching[:, i].tolist()) for i in range(3)] == best_groups
    got = sum(cost[i, int(matching[g, i])] for g in range(2) for i in range(3))
    assert got == pytest.approx(best)


def test_sparse_assignment_against_brute_force() -> None:
    s, t = torch.randn(3, 3, 4, 4), torch.randn(3, 6, 4, 4)
    cost = np_cost(s.numpy(), t.numpy())
    best = min(sum(cost[i, p[i]] for i in range(3)) for p in itertools.permutations(range(6), 3))
    matching = MGDLoss(reducer="sm").update_matching_from_features(s, t)
    assert matching.shape == (1, 3) and len(set(matching[0].tolist())) == 3
    assert sum(cost[i, int(matching[0, i])] for i in range(3)) == pytest.approx(best)
    # C_t not a multiple of C_s: each student channel still gets floor(C_t/C_s) distinct channels
    m = solve_matching(np.random.rand(3, 7), groups=2)
    assert m.shape == (2, 3) and len(set(m.flatten().tolist())) == 6


def np_mgd(s: np.ndarray, t: np.ndarray, matching: np.ndarray, margin: np.ndarray, reducer: str) -> float:
    """MGD partial L2 with explicit loops (student BN off)."""
    n, cs, h, w = s.shape
    g = matching.shape[0]
    total = 0.0
    for k in range(n):
        for c in range(cs):
            chans = [int(matching[i, c]) for i in range(g)]
            margins = [margin[j] for j in chans]
            m = {"amp": np.mean(margins), "sp": max(margins), "sm": margins[0]}[reducer]
            for y in range(h):
                for x in range(w):
                    vals = [t[k, j, y, x] for j in chans]
                    tv = {"amp": max(vals, key=abs), "sp": max(vals), "sm": vals[0]}[reducer]
                    tv = max(tv, m)
                    sv = s[k, c, y, x]
                    if sv > tv or tv > 0:
                        total += (sv - tv) ** 2
    return total / n


@pytest.mark.parametrize("reducer", ["amp", "sp", "sm"])
def test_loss_value_matches_loops(reducer: str) -> None:
    loss = MGDLoss(reducer=reducer, student_bn=False)
    s, t = torch.randn(2, 2, 3, 3), torch.randn(2, 4, 3, 3)
    loss.matching = torch.tensor([[3, 0], [1, 2]])[: 1 if reducer == "sm" else 2]
    loss.set_margin(torch.tensor([-0.5, -0.2, -1.0, -0.1]))
    expected = np_mgd(s.numpy(), t.numpy(), loss.matching.numpy(), loss.margin.numpy(), reducer)
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_random_drop_picks_group_members() -> None:
    s, t = torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3)
    t4 = torch.cat([t, t], dim=1)  # teacher channels j and j+2 identical: every draw gives the same value
    rd = MGDLoss(reducer="rd", student_bn=False)
    rd.matching = torch.tensor([[0, 1], [2, 3]])
    rd.set_margin(torch.tensor([-0.3, -0.7, -0.3, -0.7]))
    sm = MGDLoss(reducer="sm", student_bn=False)
    sm.matching = torch.tensor([[0, 1]])
    sm.set_margin(rd.margin)
    assert rd(s, t4).item() == pytest.approx(sm(s, t4).item(), rel=1e-6)


def test_group_sizes_follow_the_official_reducers() -> None:
    """``sp`` pools groups of C_t // C_s (official MGDistiller); only ``sm`` is one-to-one (SMDistiller)."""
    s, t = torch.randn(4, 2, 3, 3), torch.randn(4, 6, 3, 3)
    for reducer, groups in (("amp", 3), ("rd", 3), ("sp", 3), ("sm", 1)):
        assert MGDLoss(reducer=reducer).update_matching_from_features(s, t).shape == (groups, 2), reducer


def test_gradients_reach_student_and_bn() -> None:
    loss = MGDLoss()
    s, t = planted()
    loss.update_matching_from_features(s, t)
    x = s.clone().requires_grad_(True)
    loss(x, t).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = list(loss.parameters())
    assert len(params) == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_shape_errors() -> None:
    loss = MGDLoss()
    with pytest.raises(ShapeMismatchError, match=r"more channels \(6\) than the teacher \(3\)"):
        loss(torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4))
    with pytest.raises(ShapeMismatchError, match="equal resolution"):
        loss(torch.randn(2, 3, 8, 8), torch.randn(2, 6, 4, 4))
    with pytest.raises(ShapeMismatchError, match="mgd: student feature must be 4-D"):
        loss(torch.randn(2, 3), torch.randn(2, 6, 4, 4))
    s, t = planted()
    loss.update_matching_from_features(s, t)
    with pytest.raises(ShapeMismatchError, match="call update_matching again"):
        loss(torch.randn(4, 2, 4, 4), t)
    with pytest.raises(RuntimeError, match=r"update_matching\(loader\)"):
        MGDLoss(auto_init=False)(s, t)
    with pytest.warns(UserWarning, match="initialising it from this batch"):
        MGDLoss()(s, t)


def test_state_dict_round_trip() -> None:
    loss = MGDLoss(reducer="amp")
    s, t = planted()
    loss.update_matching_from_features(s, t)
    value = loss(s, t)
    fresh = MGDLoss(reducer="amp", auto_init=False)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.matching, loss.matching) and torch.equal(fresh.margin, loss.margin)
    assert torch.allclose(fresh(s, t), value)


def test_update_matching_with_models_via_setup() -> None:
    src = [2, 0, 1, 1, 2, 0]
    student = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True))
    teacher = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
    with torch.no_grad():  # teacher channel j = (j+1) × student channel src[j] before the ReLU
        teacher[0].weight.copy_(student[0].weight[src] * torch.arange(1.0, 7.0).view(6, 1, 1, 1))
        teacher[0].bias.zero_()
        student[0].bias.zero_()
        teacher[1].weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5, 1.0]))
        teacher[1].bias.copy_(torch.tensor([0.0, -1.0, 0.5, 2.0, -3.0, 0.1]))
    student.train()
    teacher.eval()
    loss = MGDLoss()
    with pytest.raises(RuntimeError, match="setup"):
        loss.update_matching([torch.randn(2, 3, 5, 5)])
    with pytest.raises(ValueError, match="one mgd job per stage"):
        loss.setup(student, [teacher, teacher], ["1"], ["1"])
    loss.setup(student, [teacher], ["1"], ["1"])
    assert torch.allclose(loss.margin, ofd_margin(teacher[1]))
    # teacher BN in eval with unit running stats is affine: (w·x + b); bias breaks exact copies, so
    # compare against the brute-force optimum of the cost measured on the same data
    loader = [(torch.randn(4, 3, 5, 5), torch.zeros(4)) for _ in range(2)]
    matching = loss.update_matching(loader)
    assert student.training and not teacher.training  # modes restored
    assert not student[1]._forward_hooks and not teacher[1]._forward_hooks  # tappers closed
    with torch.no_grad():
        s_feats = [student.eval()[1](student[0](x)) for x, _ in loader]
        t_feats = [teacher[1](teacher[0](x)) for x, _ in loader]
    student.train()
    cost = sum(np_cost(a.numpy(), b.numpy()) for a, b in zip(s_feats, t_feats)) / 8
    best = min(sum(cost[i, p[2 * i]] + cost[i, p[2 * i + 1]] for i in range(3))
               for p in itertools.permutations(range(6)))
    got = sum(cost[i, int(matching[g, i])] for g in range(2) for i in range(3))
    assert matching.shape == (2, 3) and got == pytest.approx(best, rel=1e-6)
    loss(torch.randn(2, 3, 5, 5), torch.randn(2, 6, 5, 5)).backward()  # usable after the pass
