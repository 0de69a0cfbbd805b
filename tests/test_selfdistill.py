"""byot (Be Your Own Teacher) self-distillation: heads, value, gradients, the exported student, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge import Distiller, DistillJob, ShapeMismatchError
from kdforge.losses.selfdistill import AuxHead, SelfDistillLoss, self_distillation_job
from toy_models import TinyResNet

X = torch.randn(8, 1, 16, 16)
Y = torch.randint(0, 10, (8,))


def byot_distiller(**kw):
    net = TinyResNet(4)  # layer1 (4,16,16), layer2 (8,8,8), layer3 (16,4,4), fc 10 classes
    job = DistillJob(loss={"type": "byot", **kw}, student=["layer1", "layer2"], teacher=["layer3", "fc"],
                     teachers=["self"])
    return net, Distiller(net, None, [job])


def taps(net, x):
    """The stage outputs, computed by hand (independent of the Distiller's taps)."""
    h = net.relu(net.bn1(net.conv1(x)))
    l1 = net.layer1(h)
    l2 = net.layer2(l1)
    l3 = net.layer3(l2)
    return l1, l2, l3, net(x)  # TinyResNet's head scales the pooled feature before fc


def test_heads_are_shaped_as_the_bottleneck_of_the_paper_code():
    net, d = byot_distiller()
    d(X, labels=Y)
    loss = d.jobs[0].loss
    assert len(loss.heads) == 2
    for head, cin, k in zip(loss.heads, (4, 8), (4, 2)):  # 16x16 → 4x4 and 8x8 → 4x4
        c1, c2, c3 = head.bottleneck[0], head.bottleneck[3], head.bottleneck[6]
        assert c1.weight.shape == (4, cin, 1, 1)  # deepest channels 16 → middle 16 // 4
        assert c2.weight.shape == (4, 4, k, k) and c2.stride == (k, k)
        assert c3.weight.shape == (16, 4, 1, 1)
        assert [type(m) for m in head.bottleneck] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 3
        assert head.fc.weight.shape == (10, 16)


def test_value_matches_independent_computation():
    torch.manual_seed(1)
    net, d = byot_distiller(T=3.0, alpha=0.3, lam=0.01)
    d.eval()  # BN on running stats, so the hand computation below sees the same numbers
    d(X, labels=Y)  # materialise the heads
    with torch.no_grad():
        _, total = d(X, labels=Y)
        l1, l2, l3, logits = taps(net, X)
        f_c = l3.mean((2, 3))
        p_t = F.softmax(logits / 3, 1)
        manual = 0.0
        for x, head in zip((l1, l2), d.jobs[0].loss.heads):
            f_i = head.bottleneck(x).mean((2, 3))
            q_i = head.fc(f_i)
            ce = F.cross_entropy(q_i, Y)
            kl = (p_t * (p_t.log() - F.log_softmax(q_i / 3, 1))).sum(1).mean() * 9
            manual += 0.7 * ce + 0.3 * kl + 0.01 * ((f_i - f_c) ** 2).sum()
    assert math.isclose(total.item(), float(manual), rel_tol=1e-5)


def test_defaults_documented():
    loss = SelfDistillLoss()
    assert (loss.T, loss.alpha, loss.lam) == (3.0, 0.1, 1e-6)


def test_gradients_reach_shallow_stages_and_heads_not_the_deep_teacher():
    net, d = byot_distiller(lam=1.0)
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.1)  # built before the heads are materialised
    _, loss = d(X, labels=Y)
    loss.backward()
    heads = d.jobs[0].loss.heads
    for p in heads.parameters():
        assert p.grad is not None
    assert net.layer1[0].conv1.weight.grad.abs().sum() > 0 and net.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert net.layer3[0].conv1.weight.grad is None and net.fc.weight.grad is None  # detached "self" teacher
    before = heads[0].fc.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, heads[0].fc.weight)  # the optimiser holds the (now materialised) heads


def test_student_is_the_plain_network_without_heads():
    ref_keys = list(TinyResNet(4).state_dict())
    net, d = byot_distiller()
    d(X, labels=Y)
    head_ids = {id(p) for p in d.jobs[0].loss.heads.parameters()}
    assert d.student is net and not head_ids & {id(p) for p in d.student.parameters()}
    assert list(d.student.state_dict()) == ref_keys
    assert head_ids <= {id(p) for p in d.learnable_parameters()}
    assert any(k.startswith("jobs.0.loss.heads.") for k in d.state_dict())  # checkpoints keep the heads


def test_aux_logits_give_each_exits_accuracy():
    net, d = byot_distiller()
    d(X, labels=Y)
    d.eval()
    with torch.no_grad():
        out, _ = d(X, labels=Y)
    aux = d.jobs[0].loss.aux_logits
    assert len(aux) == 2 and all(a.shape == (8, 10) and not a.requires_grad for a in aux)
    accs = [(a.argmax(1) == Y).float().mean().item() for a in aux + [out]]
    assert all(0.0 <= a <= 1.0 for a in accs)


def test_self_distillation_job_helper():
    job = self_distillation_job(["layer1", "layer2"], "layer3", "fc", alpha=0.3)
    assert job.student == ["layer1", "layer2"] and job.teacher == ["layer3", "fc"] and job.teachers == ["self"]
    d = Distiller(TinyResNet(4), None, [job])
    assert d.jobs[0].loss.alpha == 0.3 and len(d.jobs[0].loss.heads) == 2
    _, v = d(X, labels=Y)
    assert v > 0 and set(d.losses) == {"byot"}


def test_standalone_call_builds_heads():
    loss = SelfDistillLoss()
    s = [torch.randn(4, 3, 8, 8)]
    t = [torch.randn(4, 6, 2, 2), torch.randn(4, 5)]
    v = loss(s, t, labels=torch.tensor([0, 1, 2, 3]))
    assert v.dim() == 0 and isinstance(loss.heads[0], AuxHead) and loss.heads[0].fc.weight.shape == (5, 6)


def test_errors():
    net, d = byot_distiller()
    with pytest.raises(ValueError, match=r"byot needs the ground-truth labels.*labels=y"):
        d(X)
    with pytest.raises(ValueError, match=r"\[deepest stage feature, final logits\]"):
        Distiller(TinyResNet(4), None, [DistillJob(loss="byot", student=["layer1"], teacher=["fc"], teachers=["self"])])
    with pytest.raises(ValueError, match="alpha"):
        SelfDistillLoss(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        SelfDistillLoss(T=0)
    loss = SelfDistillLoss()
    with pytest.raises(ShapeMismatchError, match="final logits"):
        loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 6, 2, 2), torch.randn(2, 5, 1, 1)], labels=torch.zeros(2))
    with pytest.raises(ShapeMismatchError, match="shallow stage feature 0 must be 4-D"):
        loss([torch.randn(2, 3)], [torch.randn(2, 6, 2, 2), torch.randn(2, 5)], labels=torch.zeros(2))
    with pytest.raises(ValueError, match="teacher=\\[deepest feature, final logits\\]"):
        loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 5)], labels=torch.zeros(2))


def test_state_dict_round_trip_restores_the_heads():
    torch.manual_seed(0)
    _, d = byot_distiller()
    d(X, labels=Y)
    d.eval()
    with torch.no_grad():
        _, ref = d(X, labels=Y)
    _, d2 = byot_distiller()  # fresh, heads still unmaterialised
    d2.load_state_dict(d.state_dict())
    d2.eval()
    with torch.no_grad():
        _, got = d2(X, labels=Y)
    assert torch.allclose(got, ref)
