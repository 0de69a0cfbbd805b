"""The teacher inference path (kdforge/teacher_exec.py): each default gives the plain path's losses."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from kdforge import Distiller, DistillJob
from kdforge.config.run import load_run_config
from kdforge.models import build_model
from kdforge.teacher_exec import TeacherExec
from toy_models import TinyResNet

X = torch.randn(8, 1, 28, 28)
Y = torch.randint(0, 10, (8,))


def jobs():
    # KD on logits, FitNet on a BN output that an in-place ReLU overwrites, a pre-ReLU tap, a module input
    return [DistillJob(name="kd", loss={"type": "kd", "T": 4}, student="", teacher="", weight=0.9),
            DistillJob(name="fit", loss="fitnet", student="stages.1", teacher="stages.1", connector="conv1x1_bn",
                       weight=10),
            DistillJob(name="pre", loss="fitnet", student="stages.2.bn", teacher="stages.2.bn", connector="conv1x1"),
            DistillJob(name="inp", loss="fitnet", student="fc:input", teacher="fc:input", connector="linear")]


def cnn_pair():
    torch.manual_seed(0)
    s = build_model("cnn", channels=[4, 8, 8])
    t = build_model("cnn", channels=[8, 16, 16])
    with torch.no_grad():  # non-trivial BN statistics in the eval-mode teacher
        for m in t.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return s, t


def train_losses(teacher_exec, steps: int = 3, pair=cnn_pair, job_list=jobs):
    s, t = pair()
    d = Distiller(s, {"t": t}, job_list(), teacher_exec=teacher_exec)
    d.dry_run(X, labels=Y)
    opt = torch.optim.SGD(d.learnable_parameters(), lr=0.05, momentum=0.9)
    out = []
    for _ in range(steps):
        logits, kd = d(X, labels=Y)
        loss = F.cross_entropy(logits, Y) + kd
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append({"total": float(kd.detach()), **{k: float(v) for k, v in d.losses.items()}})
    return out, d


def assert_close(a, b, rtol=1e-4, atol=1e-6):
    for i, (x, y) in enumerate(zip(a, b)):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=rtol, abs=atol), f"step {i}, loss {k}: {x[k]} vs {y[k]}"


def test_defaults_are_channels_last_and_teacher_first():
    cfg = TeacherExec()
    assert cfg.channels_last == "auto" and cfg.teacher_first and not cfg.compile and cfg.autocast is None
    assert cfg.student_channels_last is False  # off by default: a CPU-torch abort in backward, see teacher_exec.py
    plain = TeacherExec.plain()
    assert plain.channels_last is False and not plain.teacher_first and plain.student_channels_last is False


def test_default_path_gives_the_plain_paths_losses():
    fast, d = train_losses(None)
    plain, d_plain = train_losses("plain")
    assert d._runners["t"].channels_last and not d_plain._runners["t"].channels_last
    assert not d._student_format.on and not d_plain._student_format.on  # student channels_last: opt-in
    assert_close(fast, plain)


@pytest.mark.parametrize("switch", [{"channels_last": True, "teacher_first": False, "student_channels_last": False},
                                    {"channels_last": False, "teacher_first": True, "student_channels_last": False},
                                    {"channels_last": False, "teacher_first": False, "student_channels_last": True}])
def test_each_switch_alone_gives_the_plain_paths_losses(switch):
    assert_close(train_losses(switch)[0], train_losses("plain")[0])


def test_channels_last_only_for_conv_teachers_and_taps_come_back_contiguous():
    s, t = cnn_pair()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    d = Distiller(s, {"t": t, "m": mlp}, [DistillJob(loss="fitnet", student="stages.1", teacher="stages.1",
                                                     connector="conv1x1", teachers=["t"]),
                                          DistillJob(loss="kd", student="", teacher="", teachers=["m"])])
    assert d._runners["t"].channels_last and not d._runners["m"].channels_last
    assert t.stages[0].body[0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}
    loss = d.jobs[0].loss
    orig = loss.forward

    def spy(a, b, **ctx):
        seen["t"] = b
        return orig(a, b, **ctx)
    loss.forward = spy
    d(X)
    assert seen["t"].is_contiguous() and seen["t"].dim() == 4
    t_ref = copy.deepcopy(t).to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # the tap is the teacher's pre-pool ReLU output, as in the plain path
        ref = t_ref.stages[1](t_ref.stages[0](X))
    torch.testing.assert_close(seen["t"], ref, rtol=1e-4, atol=1e-5)


def test_teacher_first_order_is_switchable():
    for first, want in [(True, ["t", "s"]), (False, ["s", "t"])]:
        s, t = cnn_pair()
        order: list[str] = []
        s.register_forward_pre_hook(lambda *_: order.append("s"))
        t.register_forward_pre_hook(lambda *_: order.append("t"))
        Distiller(s, t, jobs()[:1], teacher_exec={"teacher_first": first})(X)
        assert order == want


def test_in_place_safety_of_teacher_taps_in_channels_last():
    # TinyResNet's bn2 output is overwritten by an in-place ReLU after the residual add
    def pair():
        torch.manual_seed(0)
        return TinyResNet(4), TinyResNet(8)

    def tiny_jobs():
        return [DistillJob(loss="fitnet", student="layer3.1.bn2", teacher="layer3.1.bn2", connector="conv1x1"),
                DistillJob(loss={"type": "kd", "T": 4}, student="fc", teacher="fc")]
    x = torch.randn(8, 1, 16, 16)
    s, t = pair()
    d = Distiller(s, t, tiny_jobs())
    assert d._runners["t0"].channels_last
    for _ in range(3):  # the first call probes, later calls must keep the pre-ReLU values
        with d._teacher_tappers["t0"].record() as rec, torch.no_grad():
            t(x)
            got = rec["layer3.1.bn2"].clone()
    with torch.no_grad():
        h = {}
        t.layer3[1].bn2.register_forward_hook(lambda m, i, o: h.__setitem__("v", o.clone()))
        t(x)
    torch.testing.assert_close(got, h["v"])
    assert (got < 0).any()  # pre-ReLU values, not the overwritten ones


def test_channels_last_failure_falls_back_with_a_warning():
    class Viewer(nn.Module):  # .view() on a feature map fails in channels_last
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 28 * 28, 10)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(h.view(h.shape[0], -1))

    s, _ = cnn_pair()
    t = Viewer()
    d = Distiller(s, t, jobs()[:1])
    with pytest.warns(UserWarning, match="channels_last.*teacher_exec.channels_last: false"):
        out, kd = d(X)
    assert not d._runners["t0"].channels_last and torch.isfinite(kd)
    d(X)  # no second warning, no second try


def test_errors_unrelated_to_the_memory_format_are_reported_as_they_are():
    s, t = cnn_pair()
    d = Distiller(s, t, jobs()[:1])
    with pytest.raises(RuntimeError, match="channels"):  # 3-channel input into a 1-channel conv
        d(torch.randn(2, 3, 28, 28))
    assert d._runners["t0"].channels_last  # still in the fast format


def test_bf16_autocast_teacher_is_close_and_hands_float32_to_losses():
    fp32, _ = train_losses("plain", steps=1)
    bf16, d = train_losses({"autocast": "bf16"}, steps=1)
    assert_close(bf16, fp32, rtol=5e-2, atol=1e-3)
    with d._teacher_tappers["t"].record():
        pass
    logits, _ = d(X)
    assert logits.dtype == torch.float32


def test_fp16_autocast_needs_cuda():
    s, t = cnn_pair()
    d = Distiller(s, t, jobs()[:1], teacher_exec={"autocast": "fp16"})
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        d(X)


def test_compile_gives_the_plain_paths_losses():
    pytest.importorskip("torch._dynamo")
    torch._dynamo.reset()
    compiled, d = train_losses({"compile": True, "compile_backend": "eager"}, steps=2)
    assert d._runners["t"].fn is not d._runners["t"].model
    assert_close(compiled, train_losses("plain", steps=2)[0])


def test_run_config_field_and_errors():
    data = {"name": "fashion_mnist"}
    cfg = load_run_config({"model": "cnn", "data": data, "teacher_exec": {"channels_last": False, "compile": True}})
    assert cfg.teacher_exec.channels_last is False and cfg.teacher_exec.compile
    assert load_run_config({"model": "cnn", "data": data, "teacher_exec": "plain"}).teacher_exec == TeacherExec.plain()
    with pytest.raises(Exception, match="teacher_exec.*autocast"):
        load_run_config({"model": "cnn", "data": data, "teacher_exec": {"autocast": "fp8"}})
    with pytest.raises(ValidationError, match="channel_last"):
        TeacherExec.model_validate({"channel_last": False})


def test_student_channels_last_gives_the_plain_paths_losses_and_contiguous_taps():
    fast, d = train_losses({"student_channels_last": True})
    assert d._student_format.on
    assert d.student.stages[0].body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert_close(fast, train_losses("plain")[0])


def test_student_channels_last_auto_falls_back_and_restores_bn_statistics():
    class Viewer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 28 * 28, 10)

        def forward(self, x):
            h = self.bn(self.conv(x))
            return self.fc(h.view(h.shape[0], -1))

    torch.manual_seed(0)
    s = Viewer()
    ref = copy.deepcopy(s)
    _, t = cnn_pair()
    d = Distiller(s, t, jobs()[:1], teacher_exec={"student_channels_last": "auto"})
    with pytest.warns(UserWarning, match="student failed in channels_last.*student_channels_last: false"):
        d(X)
    ref(X)  # one training forward in the default format
    assert not d._student_format.on
    torch.testing.assert_close(s.bn.running_mean, ref.bn.running_mean)  # updated once, not twice
    assert int(s.bn.num_batches_tracked) == 1
