import copy
import gc
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge import Distiller, DistillerError, DistillJob, RegistryError, ShapeMismatchError, TapError
from toy_models import TinyResNet


def pair(ws: int = 4, wt: int = 8):
    torch.manual_seed(0)
    return TinyResNet(ws), TinyResNet(wt)


def kd_fitnet_jobs(warmup: int = 0):
    return [DistillJob(loss={"type": "kd", "T": 4}, student=["fc"], teacher=["fc"], weight=0.9),
            DistillJob(loss="fitnet", student=["layer3"], teacher=["layer3"], connector="conv1x1_bn",
                       weight=100, warmup_iters=warmup)]


X = torch.randn(8, 1, 16, 16)
Y = torch.randint(0, 10, (8,))


def test_readme_flow_trains_student_and_connectors_not_teacher():
    s, t = pair()
    t_before = {k: v.clone() for k, v in t.state_dict().items()}
    d = Distiller(student=s, teachers={"t0": t}, jobs=kd_fitnet_jobs())
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.05, momentum=0.9)
    out, kd_loss = d(X, labels=Y)
    assert out.shape == (8, 10) and kd_loss.dim() == 0 and kd_loss > 0
    (F.cross_entropy(out, Y) + kd_loss).backward()
    conn = d.jobs[1].connectors[0]
    assert conn.net[0].weight.grad is not None and conn.net[0].weight.grad.abs().sum() > 0
    assert s.conv1.weight.grad is not None and s.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())
    opt.step()
    d.train()
    d(X, labels=Y)
    for k, v in t.state_dict().items():  # no teacher weight or BN statistic moved
        assert torch.equal(v, t_before[k]), k


def test_learnable_parameters_are_student_connectors_and_loss_params():
    s, t = pair()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, a, b, **ctx):
            return self.scale * F.mse_loss(a, b)

    d = Distiller(s, t, [DistillJob(loss=Scaled(), student="fc", teacher="fc")] + kd_fitnet_jobs())
    ids = {id(p) for p in d.learnable_parameters()}
    assert {id(p) for p in s.parameters()} <= ids
    assert id(d.jobs[0].loss.scale) in ids
    assert {id(p) for p in d.jobs[2].connectors.parameters()} <= ids
    assert not ids & {id(p) for p in t.parameters()}
    assert len(ids) == len(d.learnable_parameters())


def test_teachers_stay_frozen_and_in_eval_mode():
    s, t = pair()
    d = Distiller(s, {"t0": t}, kd_fitnet_jobs())
    d.train()
    assert s.training and not t.training
    assert all(not p.requires_grad for p in t.parameters())
    t.train()  # even if someone flips it, the forward puts it back
    d(X, labels=Y)
    assert not t.training
    assert "t0" in d.teachers and not any(k.startswith("t0") or "teacher" in k for k in d.state_dict())


def test_teacher_activations_are_not_kept_for_backward():
    s, t = pair()
    seen = {}

    def hook(m, i, o):
        seen["grad"] = o.requires_grad or o.grad_fn is not None

    t.layer3.register_forward_hook(hook)
    d = Distiller(s, t, kd_fitnet_jobs())
    d(X)
    assert seen["grad"] is False


def test_precomputed_teacher_outputs_skip_the_teacher():
    s, t = pair()
    calls = []
    t.register_forward_hook(lambda *a: calls.append(1))
    d = Distiller(s, {"t0": t}, kd_fitnet_jobs())
    d.eval()
    _, ref = d(X)
    assert len(calls) == 1
    with torch.no_grad():
        feats = {"fc": t(X), "layer3": t.layer3(t.layer2(t.layer1(t.relu(t.bn1(t.conv1(X))))))}
    calls.clear()
    _, got = d(X, teacher_outputs={"t0": feats})
    assert calls == [] and torch.allclose(got, ref)
    with pytest.raises(DistillerError, match=r"lacks taps \['layer3'\]"):
        d(X, teacher_outputs={"t0": {"fc": feats["fc"]}})


def test_losses_dict_holds_weighted_per_job_values():
    s, t = pair()
    d = Distiller(s, t, kd_fitnet_jobs())
    _, total = d(X)
    assert set(d.losses) == {"job0", "job1"}
    assert math.isclose(sum(v.item() for v in d.losses.values()), total.item(), rel_tol=1e-5)
    with torch.no_grad():
        manual = 0.9 * 16 * F.kl_div(F.log_softmax(s(X) / 4, 1), F.softmax(t(X) / 4, 1), reduction="batchmean")
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-4)


def test_warmup_ramps_linearly_and_resumes_from_state_dict():
    s, t = pair()
    d = Distiller(s, t, [DistillJob(loss="fitnet", student="layer3", teacher="layer3",
                                    connector="conv1x1", weight=2.0, warm_up_iters=4)])
    raw = []
    for _ in range(3):
        _, v = d(X)
        raw.append(v.item())
    d.eval()
    _, full = d(X)  # eval forward: factor at step 3, step does not advance
    assert int(d.step) == 3
    assert raw[0] == 0.0
    ratio = full.item() / (d.jobs[0](  # unweighted value now
        [d._student_tapper._slots["layer3"].value], [[d._teacher_tappers["t0"]._slots["layer3"].value]], {}).item())
    assert math.isclose(ratio, 2.0 * 3 / 4, rel_tol=1e-5)
    state = d.state_dict()
    assert int(state["step"]) == 3
    s2, t2 = pair()
    d2 = Distiller(s2, t2, [DistillJob(loss="fitnet", student="layer3", teacher="layer3",
                                       connector="conv1x1", weight=2.0, warmup_iters=4)])
    d2.load_state_dict(state)
    assert int(d2.step) == 3
    assert d2.jobs[0].spec.warmup_factor(int(d2.step)) == 0.75
    d2.eval()
    assert torch.allclose(d2(X)[1], full)


def test_summary_marks_taps():
    s, t = pair()
    text = Distiller(s, {"big": t}, kd_fitnet_jobs()).summary()
    assert "student: TinyResNet" in text and "teacher 'big'" in text
    assert "layer3: Sequential   ◀── tap layer3" in text and "fc: Linear   ◀── tap fc" in text
    assert "job1: FitNetLoss × 100" in text


def test_hooks_removed_on_close_and_gc():
    s, t = pair()

    def n_hooks(m):
        return sum(len(x._forward_hooks) for x in m.modules())

    with Distiller(s, t, kd_fitnet_jobs()):
        assert n_hooks(s) == 2 and n_hooks(t) == 2
    assert n_hooks(s) == 0 and n_hooks(t) == 0
    Distiller(s, t, kd_fitnet_jobs())
    gc.collect()
    assert n_hooks(s) == 0 and n_hooks(t) == 0


def test_several_jobs_each_with_own_teachers_and_multi_teacher_kd():
    s, t1 = pair()
    t2 = TinyResNet(6)
    d = Distiller(s, {"a": t1, "b": t2}, [
        DistillJob(loss="kd", student="fc", teacher="fc", teachers=["a", "b"], name="ens"),
        DistillJob(loss="fitnet", student="layer2", teacher="layer2", teachers=["b"], connector="conv1x1",
                   mimic_name="feat_b")])
    _, total = d(X)
    with torch.no_grad():
        p = (F.softmax(t1(X) / 4, 1) + F.softmax(t2(X) / 4, 1)) / 2
        manual = 16 * (p * (p.log() - F.log_softmax(s(X) / 4, 1))).sum(1).mean()
    assert math.isclose(d.losses["ens"].item(), manual.item(), rel_tol=1e-4)
    assert set(d.losses) == {"ens", "feat_b"}
    assert d._teacher_taps == {"a": ["fc"], "b": ["fc", "layer2"]}


def test_fixed_teacher_weights_and_confidence_combination():
    s, t1 = pair()
    t2 = TinyResNet(6)
    d = Distiller(s, {"a": t1, "b": t2}, [DistillJob(loss="fitnet", student="fc", teacher="fc",
                                                     teacher_weights=[0.25, 0.75])])
    d(X)
    with torch.no_grad():
        so = s(X)
        manual = 0.25 * F.mse_loss(so, t1(X)) + 0.75 * F.mse_loss(so, t2(X))
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-5)

    d = Distiller(s, {"a": t1, "b": t2}, [DistillJob(loss="fitnet", student="fc", teacher="fc", combine="confidence")])
    d(X, labels=Y)
    with torch.no_grad():
        la, lb = t1(X), t2(X)
        pick_a = F.cross_entropy(la, Y, reduction="none") <= F.cross_entropy(lb, Y, reduction="none")
        target = torch.where(pick_a[:, None], la, lb)
        manual = F.mse_loss(s(X), target)
    assert math.isclose(d.losses["job0"].item(), manual.item(), rel_tol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        d(X)


def test_self_teacher_uses_detached_student_taps():
    s = TinyResNet()
    d = Distiller(s, None, [DistillJob(loss="fitnet", student="layer2.0", teacher="layer2.1", teachers=["self"])])
    _, v = d(X)
    v.backward()
    assert v > 0 and s.layer2[0].conv1.weight.grad is not None
    assert s.layer2[1].conv2.weight.grad is None  # the deep side is a detached target
    with pytest.raises(DistillerError, match="is the student itself"):
        Distiller(s, {"t": s}, [])


# ------------------------------------------------------------------ errors a user gets
def test_error_unknown_tap_lists_closest():
    s, t = pair()
    with pytest.raises(TapError, match=r"no module 'layer3\.1\.bn'.*Closest: 'layer3\.1\.bn2', 'layer3\.1\.bn1'"):
        Distiller(s, t, [DistillJob(loss="fitnet", student="layer3.1.bn", teacher="layer3.1.bn2")])


def test_error_shape_mismatch_names_shapes_and_connector():
    s, t = pair()
    d = Distiller(s, t, [DistillJob(loss="fitnet", student="layer3", teacher="layer3")])
    with pytest.raises(ShapeMismatchError, match=r"student \(8, 16, 4, 4\) vs teacher \(8, 32, 4, 4\).*conv1x1_bn"):
        d(X)
    d = Distiller(s, t, [DistillJob(loss="fitnet", student="layer2", teacher="layer3")])
    with pytest.raises(ShapeMismatchError, match="resize"):
        d(X)
    d = Distiller(s, t, [DistillJob(loss="fitnet", student="fc:input", teacher="fc:input")])
    with pytest.raises(ShapeMismatchError, match="connector='linear'"):
        d(X)


def test_error_unknown_loss_and_connector_list_registry():
    s, t = pair()
    # the job spec itself is checked against the registries, before any Distiller is built
    with pytest.raises(ValueError, match=r"unknown loss 'fitnett'\. Did you mean 'fitnet'.*Registered losses: .*kd"):
        DistillJob(loss="fitnett", student="fc", teacher="fc")
    with pytest.raises(RegistryError, match=r"unknown loss 'fitnett'"):
        Distiller(s, t, [DistillJob.model_construct(loss="fitnett", student=["fc"], teacher=["fc"])])
    with pytest.raises(ValueError, match=r"unknown connector 'conv1x1bn'.*'conv1x1_bn'"):
        Distiller(s, t, [DistillJob(loss="fitnet", student="fc", teacher="fc", connector="conv1x1bn")])


def test_error_unknown_teacher_in_job():
    s, t = pair()
    with pytest.raises(DistillerError, match=r"unknown teacher\(s\) \['t9'\]; teachers given: \['t0'\]"):
        Distiller(s, {"t0": t}, [DistillJob(loss="kd", student="fc", teacher="fc", teachers=["t9"])])


def test_error_teacher_on_meta_and_inputs_off_the_student_device():
    # a teacher on another device is supported (tests/test_placement.py); one that was never materialised is not
    s, t = pair()
    t.to("meta")
    with pytest.raises(DistillerError, match=r"teacher 't0' is on the meta device.*load_state_dict"):
        Distiller(s, {"t0": t}, kd_fitnet_jobs())
    s, t = pair()
    d = Distiller(s, {"t0": t}, kd_fitnet_jobs())
    with pytest.raises(DistillerError, match="inputs are on meta but the student is on cpu"):
        d(X.to("meta"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_teacher_with_float32_student(dtype):
    """A bf16/fp16 teacher beside an fp32 student: inputs are cast to the teacher's dtype, its taps back."""
    s, t = pair()
    t_low = copy.deepcopy(t).to(dtype)
    seen = []
    d = Distiller(s, {"t0": t_low}, kd_fitnet_jobs())
    for job in d.jobs:
        job.loss.register_forward_pre_hook(lambda m, args: seen.append([a.dtype for a in args[:2]]))
    try:
        out, loss = d(X)
    except RuntimeError as e:  # some CPU builds have no float16 conv
        if dtype is torch.float16 and "not implemented" in str(e).lower():
            pytest.skip(f"this torch has no CPU float16 kernels for the teacher: {e}")
        raise
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert seen and all(dt == [torch.float32, torch.float32] for dt in seen)
    loss.backward()
    assert all(p.grad is None for p in t_low.parameters())
    assert any(p.grad is not None for p in s.parameters())
    assert any(p.grad is not None for p in d.learnable_parameters() if not any(p is q for q in s.parameters()))
    # the taps are the teacher's own (low-precision) values, cast back: close to an fp32 teacher's
    d32 = Distiller(copy.deepcopy(s), {"t0": t}, [DistillJob(loss="kd", student="fc", teacher="fc")])
    d16 = Distiller(copy.deepcopy(s), {"t0": t_low}, [DistillJob(loss="kd", student="fc", teacher="fc")])
    tol = 5e-2 if dtype is torch.bfloat16 else 5e-3
    assert torch.allclose(d32(X)[1], d16(X)[1], atol=tol, rtol=tol)


def test_to_moves_teachers_too():
    s, t = pair()
    d = Distiller(s, {"t0": t}, kd_fitnet_jobs())
    d.to(torch.float64)
    assert t.fc.weight.dtype == torch.float64 and s.fc.weight.dtype == torch.float64
    d(X.double())


def test_pairwise_job_needs_matching_tap_counts():
    s, t = pair()
    with pytest.raises(ValueError, match="2 student taps"):
        Distiller(s, t, [DistillJob(loss="fitnet", student=["layer2", "layer3"], teacher=["layer3"])])


def test_summary_marks_root_and_method_taps():
    s, t = pair()
    text = Distiller(s, t, [DistillJob(loss="fitnet", student="forward_features:return", teacher="layer3",
                                       connector="conv1x1"),
                            DistillJob(loss="kd", student="", teacher="fc")]).summary(depth=1)
    assert text.splitlines()[0].endswith("params)   ◀── tap (output), forward_features:return")
