"""Teachers in another dtype or on another device (issue 11; kdforge/placement.py).

A bfloat16/float16 teacher beside a float32 student gets its inputs in its dtype and its taps reach the
jobs in the student's; a teacher on another device gets its inputs there and its taps back. This task
has no GPU: the cross-*device* path is covered by the move helper (to the ``meta`` device), by the
Distiller's device bookkeeping (``teacher_devices``, ``.to()`` keeping a teacher's own device) and by
the same code path that the dtype tests run end to end; a real CPU↔GPU run needs a GPU.
"""
from __future__ import annotations

import copy
import math
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from test_engine_support import TinyNet, run_config
from torch import nn

from kdforge import Distiller, DistillerError, DistillJob, build_distiller
from kdforge.config import ModelSpec
from kdforge.config.run import load_run_config
from kdforge.engine import train
from kdforge.engine.logging import read_csv
from kdforge.models import count_macs
from kdforge.placement import Placement, placement_of, to_placement
from toy_models import TinyResNet

X = torch.randn(8, 1, 16, 16)
Y = torch.randint(0, 10, (8,))


def _fp16_conv_works() -> bool:
    try:
        nn.Conv2d(1, 2, 3).half()(torch.zeros(1, 1, 4, 4, dtype=torch.half))
        return True
    except RuntimeError:
        return False


LOW = [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.skipif(
    not _fp16_conv_works(), reason="this torch build has no float16 convolution on CPU"))]


def jobs():
    return [DistillJob(name="kd", loss={"type": "kd", "T": 4}, student="fc", teacher="fc"),
            DistillJob(name="fit", loss="fitnet", student="layer3", teacher="layer3", connector="conv1x1_bn",
                       weight=10),
            DistillJob(name="at", loss="at", student=["layer2", "layer3"], teacher=["layer2", "layer3"])]


def seen_dtypes(d: Distiller) -> dict[str, list[torch.dtype]]:
    """The dtypes of the teacher tensors each job's loss receives (its second argument)."""
    seen: dict[str, list[torch.dtype]] = {}

    def hook(name):
        def pre(module, args, kwargs):
            t = args[1]
            seen.setdefault(name, []).extend(x.dtype for x in (t if isinstance(t, (list, tuple)) else [t]))
        return pre
    for j in d.jobs:
        j.loss.register_forward_pre_hook(hook(j.name), with_kwargs=True)
    return seen


# ------------------------------------------------------------------------------ the move helper
def test_to_placement_casts_floats_moves_everything_and_copies_nothing_in_place():
    Pair = namedtuple("Pair", "a b")
    f, ids, mask = torch.randn(2, 3), torch.arange(3), torch.ones(3, dtype=torch.bool)
    out = to_placement({"x": (f, ids), "p": Pair(f, "text"), "m": [mask]}, "cpu", torch.bfloat16)
    assert out["x"][0].dtype == torch.bfloat16 and out["x"][1] is ids and out["m"][0] is mask
    assert isinstance(out["p"], Pair) and out["p"].b == "text" and out["p"].a.dtype == torch.bfloat16
    assert to_placement(f, "cpu", torch.float32) is f and to_placement(f, None, None) is f  # in place: no copy
    moved = to_placement({"x": f, "ids": ids}, "meta", torch.float16)  # another device: ids moved, not cast
    assert moved["x"].device.type == "meta" and moved["x"].dtype == torch.float16
    assert moved["ids"].device.type == "meta" and moved["ids"].dtype == torch.int64


def test_to_placement_keeps_the_gradient_path():
    s = torch.randn(3, requires_grad=True)
    to_placement(s, None, torch.float64).sum().backward()
    assert s.grad is not None and torch.equal(s.grad, torch.ones(3))


def test_placement_of_first_float_parameter_then_buffer_then_none():
    m = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 2).to(torch.bfloat16))
    assert placement_of(m) == Placement(torch.device("cpu"), torch.float32)  # the embedding's float weight
    bufs = nn.Module()
    bufs.register_buffer("idx", torch.arange(2))
    bufs.register_buffer("scale", torch.ones(2, dtype=torch.float16))
    assert placement_of(bufs) == Placement(torch.device("cpu"), torch.float16)
    assert placement_of(nn.ReLU()) is None and str(Placement(torch.device("cpu"), torch.bfloat16)) == "bfloat16 on cpu"


# ------------------------------------------------------------------------------ through the Distiller
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_teacher_with_float32_student(dtype):
    torch.manual_seed(0)
    s, t = TinyResNet(4), TinyResNet(8)
    ref = Distiller(copy.deepcopy(s), copy.deepcopy(t), jobs())
    torch.manual_seed(1)  # the same lazy connector
    _, ref_loss = ref(X, labels=Y)
    t.to(dtype)
    d = Distiller(s, {"t0": t}, jobs())
    seen = seen_dtypes(d)
    torch.manual_seed(1)
    out, kd = d(X, labels=Y)
    assert torch.isfinite(kd) and out.dtype == kd.dtype == torch.float32
    assert seen == {"kd": [torch.float32], "fit": [torch.float32], "at": [torch.float32, torch.float32]}
    assert torch.allclose(kd, ref_loss, rtol=5e-2)  # the same distillation, up to the teacher's rounding
    (F.cross_entropy(out, Y) + kd).backward()
    conn = d.jobs[1].connectors[0]
    assert conn.net[0].weight.grad.abs().sum() > 0 and s.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad and p.dtype == dtype for p in t.parameters())
    assert d.placements() == [f"teacher 't0' runs in {str(dtype)[6:]} on cpu; its inputs are moved there and its "
                              f"taps cast to the student's float32 on cpu"]


def test_taps_come_in_the_students_dtype_both_ways_and_under_autocast():
    torch.manual_seed(0)
    s, t = TinyResNet(4).double(), TinyResNet(8)  # float64 student, float32 teacher: taps cast up
    d = Distiller(s, t, [jobs()[0], jobs()[2]])
    seen = seen_dtypes(d)
    out, kd = d(X.double(), labels=Y)
    assert kd.dtype == torch.float64 and set(seen["kd"] + seen["at"]) == {torch.float64}
    s, t = TinyResNet(4), TinyResNet(8).to(torch.bfloat16)  # AMP: the student's dtype is its parameters'
    d = Distiller(s, t, jobs()[:2], teacher_exec={"autocast": "bf16"})
    seen = seen_dtypes(d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, kd = d(X, labels=Y)
    assert out.dtype == torch.bfloat16 and torch.isfinite(kd) and set(seen["kd"] + seen["fit"]) == {torch.float32}


def test_teacher_gets_float_inputs_in_its_dtype_and_integer_inputs_unchanged():
    class Tagger(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, width), nn.Linear(width, 5)
            self.got: list[tuple[torch.dtype, torch.dtype]] = []

        def forward(self, feats, ids):
            self.got.append((feats.dtype, ids.dtype))
            return self.fc(self.emb(ids).mean(1) * feats)

    s, t = Tagger(6), Tagger(6).to(torch.bfloat16)
    d = Distiller(s, t, [DistillJob(loss="kd", student="", teacher="")])
    out, kd = d(feats=torch.randn(3, 6), ids=torch.randint(0, 10, (3, 4)))
    assert t.got == [(torch.bfloat16, torch.int64)] and s.got == [(torch.float32, torch.int64)]


def test_given_teacher_outputs_reach_the_jobs_in_the_students_dtype():
    torch.manual_seed(0)
    s, t = TinyResNet(4), TinyResNet(8)
    d = Distiller(s, t, jobs()[:1])
    seen = seen_dtypes(d)
    d(X, labels=Y, teacher_outputs={"t0": {"fc": torch.randn(8, 10, dtype=torch.float16)}})
    assert seen["kd"] == [torch.float32]


# ------------------------------------------------------------------------------ devices
def test_teacher_devices_keep_their_device_when_the_distiller_moves():
    torch.manual_seed(0)
    s, t, other = TinyResNet(4), TinyResNet(8), TinyResNet(8)
    d = Distiller(s, {"t0": t, "t1": other}, [DistillJob(loss="kd", student="fc", teacher="fc")],
                  teacher_devices={"t0": "cpu"})
    d.double()  # a dtype cast still applies to a teacher with a device of its own
    assert t.fc.weight.dtype == torch.float64 and other.fc.weight.dtype == torch.float64
    d.to("meta")  # a device move does not
    assert s.fc.weight.device.type == "meta" and other.fc.weight.device.type == "meta"
    assert t.fc.weight.device.type == "cpu" and t.fc.weight.dtype == torch.float64


def test_teacher_already_on_another_device_stays_there_and_is_reported():
    torch.manual_seed(0)
    s, t = TinyResNet(4).to("meta"), TinyResNet(8)  # built with the student elsewhere (as on a GPU)
    d = Distiller(s, {"t0": t}, jobs()[:2])
    assert d.placements() == ["teacher 't0' runs in float32 on cpu; its inputs are moved there and its taps cast "
                              "to the student's float32 on meta"]
    assert d._own_device == {"t0"}  # it keeps its own device when the Distiller moves (as with teacher_devices)
    s.to_empty(device="cpu").load_state_dict(TinyResNet(4).state_dict())  # the student comes back
    out, kd = d(X, labels=Y)
    assert torch.isfinite(kd) and d.placements() == []


def test_teacher_devices_errors():
    s, t = TinyResNet(4), TinyResNet(8)
    with pytest.raises(DistillerError, match=r"teacher_devices names unknown teacher\(s\) \['t9'\]"):
        Distiller(s, t, jobs()[:1], teacher_devices={"t9": "cpu"})
    with pytest.raises(DistillerError, match=r"teacher_devices\['t0'\] = 'nowhere'"):
        Distiller(s, t, jobs()[:1], teacher_devices={"t0": "nowhere"})


def test_macs_of_a_bfloat16_model_from_a_float32_example():
    m = TinyNet()
    assert count_macs(m.to(torch.bfloat16), torch.zeros(1, 1, 8, 8)) == count_macs(TinyNet(), torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------------------------ config
def test_model_spec_dtype_and_device_are_validated():
    assert ModelSpec(name="tiny_net", dtype="bf16").dtype == "bfloat16"
    assert ModelSpec(name="tiny_net", dtype="torch.float16", device="cpu").dtype == "float16"
    with pytest.raises(ValidationError, match=r"dtype 'int8' is not one of \['bfloat16', 'float16', 'float32'\]"):
        ModelSpec(name="tiny_net", dtype="int8")
    with pytest.raises(ValidationError, match=r"device 'gpu9' is not a torch device; use e.g. cpu, cuda, cuda:1"):
        ModelSpec(name="tiny_net", device="gpu9")
    cfg = run_config("unused", epochs=1)
    cfg["model"]["dtype"] = "bfloat16"
    with pytest.raises(Exception, match=r"dtype and device are teacher settings"):
        load_run_config(cfg)


def test_config_teacher_dtype_is_honoured_by_build_and_training(tmp_path):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    cfg["teachers"]["t0"]["dtype"] = "bfloat16"
    cfg["teachers"]["t0"]["device"] = "cpu"
    d = build_distiller(cfg, warn=lambda m: None)
    assert all(p.dtype == torch.bfloat16 for p in d.teachers["t0"].parameters()) and d._own_device == {"t0"}
    train(cfg, verbose=False)
    rows = read_csv(tmp_path / "r" / "metrics.csv")
    assert rows and all(math.isfinite(float(r[k])) for r in rows for k in ("kd_loss", "loss_kd", "loss_fit"))
    assert float(rows[-1]["loss_fit"]) > 0


# ------------------------------------------------------------------------------ losses that run the teacher
def test_losses_that_run_the_teacher_themselves_take_a_bfloat16_teacher():
    from kdforge.losses.ft import FTLoss
    from kdforge.losses.mgd import MGDLoss

    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
    teacher = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()).eval().to(torch.bfloat16)
    loader = [(torch.randn(4, 3, 5, 5), torch.zeros(4)) for _ in range(2)]
    mgd = MGDLoss()
    mgd.setup(student, [teacher], ["1"], ["1"])  # margins from the bfloat16 BN, on the student's side
    assert mgd.margin.dtype == torch.float32
    assert mgd.update_matching(loader).shape == (2, 3)  # the matching pass feeds the teacher bfloat16 inputs
    ft = FTLoss()
    history = ft.pretrain(teacher, "2", loader, epochs=1)  # bfloat16 features reach a float32 paraphraser
    assert len(history) == 1 and math.isfinite(history[0])
