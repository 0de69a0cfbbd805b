"""Several teachers per job (mean / fixed weights / confidence) and MEAL-V2 (meal_disc); training smoke tests."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge import Distiller, DistillJob
from kdforge.losses.adversarial import LogitDiscriminator, MealDiscriminatorLoss
from kdforge.losses.response import DKDLoss
from kdforge.losses.selfdistill import self_distillation_job
from toy_models import TinyResNet

X = torch.randn(8, 1, 16, 16)
Y = torch.randint(0, 10, (8,))


def three():
    torch.manual_seed(0)
    return TinyResNet(4), {"a": TinyResNet(4), "b": TinyResNet(6), "c": TinyResNet(8)}


def logits_of(s, ts):
    with torch.no_grad():
        return s(X), [t.eval()(X) for t in ts.values()]


# ------------------------------------------------------------------ kd: soft-label mean
def test_kd_fixed_weights_average_soft_labels():
    s, ts = three()
    d = Distiller(s, ts, [DistillJob(loss={"type": "kd", "T": 2}, student="fc", teacher="fc",
                                     teacher_weights=[0.5, 0.3, 0.2])])
    d(X)
    so, tl = logits_of(s, ts)
    p = sum(w * np.exp(t.numpy() / 2) / np.exp(t.numpy() / 2).sum(1, keepdims=True) for w, t in zip([.5, .3, .2], tl))
    log_q = F.log_softmax(so / 2, 1).numpy()
    manual = 4 * (p * (np.log(p) - log_q)).sum(1).mean()
    assert math.isclose(d.losses["job0"].item(), manual, rel_tol=1e-5)


def test_kd_confidence_picks_per_sample_the_lowest_ce_teacher():
    s, ts = three()
    d = Distiller(s, ts, [DistillJob(loss="kd", student="fc", teacher="fc", combine="confidence")])
    d(X, labels=Y)
    so, tl = logits_of(s, ts)
    ce = np.stack([F.cross_entropy(t, Y, reduction="none").numpy() for t in tl])  # (3, N)
    best = ce.argmin(0)
    assert len(set(best.tolist())) > 1  # the case mixes teachers
    target = torch.stack([tl[k][n] for n, k in enumerate(best)])
    manual = 16 * F.kl_div(F.log_softmax(so / 4, 1), F.softmax(target / 4, 1), reduction="batchmean")
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-5)


# ------------------------------------------------------------------ losses without multi_teacher
def dist_np(s, t, beta=1.0, gamma=1.0, tau=1.0):
    def sm(z):
        e = np.exp(z / tau - (z / tau).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def rho(a, b):
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)

    ys, yt = sm(s.astype(np.float64)), sm(t.astype(np.float64))
    return tau ** 2 * (beta * (1 - rho(ys, yt).mean()) + gamma * (1 - rho(ys.T, yt.T).mean()))


@pytest.mark.parametrize("weights", [None, [0.6, 0.1, 0.3]])
def test_dist_averages_per_teacher_losses(weights):
    s, ts = three()
    d = Distiller(s, ts, [DistillJob(loss={"type": "dist", "tau": 2.0}, student="fc", teacher="fc",
                                     teacher_weights=weights)])
    d(X)
    so, tl = logits_of(s, ts)
    w = weights or [1 / 3] * 3
    manual = sum(wk * dist_np(so.numpy(), t.numpy(), tau=2.0) for wk, t in zip(w, tl))
    assert math.isclose(d.losses["job0"].item(), manual, rel_tol=1e-5)
    # not the loss against the averaged soft labels: DIST is no multi-teacher loss
    assert d.jobs[0].multi_teacher is False


def test_dkd_averages_per_teacher_losses_and_confidence_selects():
    s, ts = three()
    d = Distiller(s, ts, [DistillJob(loss="dkd", student="fc", teacher="fc", teacher_weights=[0.2, 0.5, 0.3])])
    d(X, labels=Y)
    so, tl = logits_of(s, ts)
    one = DKDLoss()
    manual = sum(w * one(so, t, labels=Y) for w, t in zip([0.2, 0.5, 0.3], tl))
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-5)

    d = Distiller(s, ts, [DistillJob(loss="dkd", student="fc", teacher="fc", combine="confidence")])
    d(X, labels=Y)
    ce = torch.stack([F.cross_entropy(t, Y, reduction="none") for t in tl])
    target = torch.stack(tl).gather(0, ce.argmin(0).view(1, -1, 1).expand(1, 8, 10)).squeeze(0)
    assert math.isclose(d.losses["job0"].item(), one(so, target, labels=Y).item(), rel_tol=1e-5)


# ------------------------------------------------------------------ MEAL-V2 discriminator
def bce(z, y):
    return -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()


def mlp(disc, x):
    h = F.relu(x @ disc.fc1.weight.T + disc.fc1.bias)
    h = F.relu(h @ disc.fc2.weight.T + disc.fc2.bias)
    return h @ disc.fc3.weight.T + disc.fc3.bias


def test_discriminator_layers_follow_meal_v2():
    d = LogitDiscriminator()
    d(torch.randn(2, 1000))
    assert [m.weight.shape for m in (d.fc1, d.fc2, d.fc3)] == [(125, 1000), (15, 125), (2, 15)]  # K=8
    d = LogitDiscriminator()
    d(torch.randn(2, 10))
    assert [m.weight.shape for m in (d.fc1, d.fc2, d.fc3)] == [(8, 10), (8, 8), (2, 8)]  # floored widths


def test_meal_disc_value_with_weighted_ensemble_through_distiller():
    s, ts = three()
    ts = {"a": ts["a"], "b": ts["b"]}
    d = Distiller(s, ts, [DistillJob(loss="meal_disc", student="fc", teacher="fc", teacher_weights=[0.25, 0.75])])
    d(X)
    disc = d.jobs[0].loss.discriminator
    so, (ta, tb) = logits_of(s, ts)
    ens = 0.25 * ta + 0.75 * tb
    stu, tea = torch.tensor([[1.0, 0.0]]).expand(8, 2), torch.tensor([[0.0, 1.0]]).expand(8, 2)
    with torch.no_grad():
        manual = 0.5 * (bce(mlp(disc, so), stu) + bce(mlp(disc, ens), tea)) + bce(mlp(disc, so), tea)
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-5)
    loss = d.jobs[0].loss
    assert math.isclose((loss.d_loss + loss.g_loss).item(), manual.item(), rel_tol=1e-5)
    assert {id(p) for p in disc.parameters()} <= {id(p) for p in d.learnable_parameters()}


def fixed_batches():
    g = torch.Generator().manual_seed(0)
    s = (0.5 * torch.randn(64, 10, generator=g)).requires_grad_()  # flat "student" logits
    t = torch.randn(64, 10, generator=g) + 6 * F.one_hot(torch.randint(0, 10, (64,), generator=g), 10)  # peaked
    return s, t


def soft_accuracy(loss, s, t):
    """Expected accuracy of D on [student rows; teacher rows] (its softmax probability of the right side)."""
    f = (lambda z: F.softmax(z, 1)) if loss.input == "probs" else (lambda z: z)
    with torch.no_grad():
        return 0.5 * (F.softmax(loss.discriminator(f(s)), 1)[:, 0].mean()
                      + F.softmax(loss.discriminator(f(t)), 1)[:, 1].mean()).item()


@pytest.mark.parametrize("input,lr", [("logits", 0.5), ("probs", 5.0)])
def test_one_backward_trains_discriminator_to_separate_and_student_to_fool(input, lr):
    torch.manual_seed(3)
    s, t = fixed_batches()
    loss = MealDiscriminatorLoss(input=input)
    loss(s, t)  # materialise
    params = list(loss.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    acc0 = soft_accuracy(loss, s, t)
    v = loss(s, t)
    d0 = loss.d_loss
    d_grads = torch.autograd.grad(_d_term(loss, s, t, input), params)
    g_grad_s = torch.autograd.grad(_g_term(loss, s, input), s)[0]
    v.backward()
    # the discriminator learns only from its own term, the student only from the generator term
    for p, g in zip(params, d_grads):
        assert torch.allclose(p.grad, g, atol=1e-7)
    assert torch.allclose(s.grad, g_grad_s, atol=1e-7) and s.grad.abs().sum() > 0
    # a step of the student along -grad makes D more likely to call it a teacher
    with torch.no_grad():
        p_teacher = lambda z: F.softmax(loss.discriminator(F.softmax(z, 1) if input == "probs" else z), 1)[:, 1].mean()
        assert p_teacher(s - 1.0 * s.grad) > p_teacher(s)
    opt.step()  # one SGD step on the discriminator separates the fixed batches better
    assert soft_accuracy(loss, s, t) > acc0
    loss(s.detach(), t)
    assert loss.d_loss < d0
    if input == "logits":
        for _ in range(40):
            opt.zero_grad()
            loss(s.detach(), t).backward()
            opt.step()
        assert loss.accuracy(s.detach(), t) > 0.9


def _d_term(loss, s, t, input):
    f = (lambda z: F.softmax(z, 1)) if input == "probs" else (lambda z: z)
    n = s.shape[0]
    stu, tea = torch.tensor([[1.0, 0.0]]).expand(n, 2), torch.tensor([[0.0, 1.0]]).expand(n, 2)
    return 0.5 * (bce(mlp(loss.discriminator, f(s).detach()), stu) + bce(mlp(loss.discriminator, f(t)), tea))


def _g_term(loss, s, input):
    disc = loss.discriminator
    z = F.softmax(s, 1) if input == "probs" else s
    h = F.relu(z @ disc.fc1.weight.detach().T + disc.fc1.bias.detach())
    h = F.relu(h @ disc.fc2.weight.detach().T + disc.fc2.bias.detach())
    out = h @ disc.fc3.weight.detach().T + disc.fc3.bias.detach()
    return bce(out, torch.tensor([[0.0, 1.0]]).expand(s.shape[0], 2))


def test_meal_disc_errors():
    with pytest.raises(ValueError, match="input must be 'logits' or 'probs'"):
        MealDiscriminatorLoss(input="features")
    with pytest.raises(ValueError, match="shape mismatch"):
        MealDiscriminatorLoss()(torch.randn(4, 10), [torch.randn(4, 10), torch.randn(4, 9)])


# ------------------------------------------------------------------ a few SGD steps on a tiny CNN
class TinyCNN(nn.Module):
    """Stages layer1 (w,16,16), layer2 (2w,8,8), layer3 (4w,4,4), then pooling and fc."""

    def __init__(self, w: int = 4, num_classes: int = 10) -> None:
        super().__init__()

        def stage(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.layer1, self.layer2, self.layer3 = stage(1, w, 1), stage(w, 2 * w, 2), stage(2 * w, 4 * w, 2)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.layer3(self.layer2(self.layer1(x))).mean((2, 3)))


def kd_job(**kw):
    return DistillJob(loss={"type": "kd", "T": 4}, student="fc", teacher="fc", name="kd", **kw)


MODES = {  # name: (jobs, task-loss weight, the job whose loss must go down)
    "byot": (lambda: [self_distillation_job(["layer1", "layer2"], "layer3", "fc")], 0.9, "byot"),
    "kd_mean": (lambda: [kd_job()], 0.1, "kd"),
    "confidence": (lambda: [kd_job(combine="confidence")], 0.1, "kd"),
    "fixed_weights": (lambda: [kd_job(teacher_weights=[0.2, 0.8])], 0.1, "kd"),
    "meal_v2": (lambda: [DistillJob(loss={"type": "kd", "T": 1}, student="fc", teacher="fc", name="kd"),
                         DistillJob(loss="meal_disc", student="fc", teacher="fc", name="disc")], 0.0, "kd"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_distillation_loss_goes_down_on_a_tiny_cnn(mode):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    student = TinyCNN(4)
    teachers = None if mode == "byot" else {"t0": TinyCNN(8), "t1": TinyCNN(6)}
    for t in (teachers or {}).values():  # confident (untrained) teachers: soft labels far from uniform
        t.fc.weight.data.mul_(30)
    jobs, ce_weight, watched = MODES[mode]
    d = Distiller(student, teachers, jobs())
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.05, momentum=0.9)
    history = []
    for i in range(12):
        out, kd_loss = d(x, labels=y)
        if i == 0 and mode == "meal_v2":
            disc_w0 = d.jobs[1].loss.discriminator.fc1.weight.detach().clone()
        (ce_weight * F.cross_entropy(out, y) + kd_loss).backward()
        opt.step()
        opt.zero_grad()
        history.append(d.losses[watched].item())
        assert math.isfinite(kd_loss.item())
    assert history[-1] < 0.8 * history[0], history
    if mode == "meal_v2":  # the discriminator trained alongside (its parameters come from learnable_parameters)
        assert not torch.equal(disc_w0, d.jobs[1].loss.discriminator.fc1.weight)
        assert math.isfinite(d.jobs[1].loss.d_loss.item()) and math.isfinite(d.jobs[1].loss.g_loss.item())
