"""The CUDA paths: fp16 AMP with its GradScaler (saved and resumed), an fp16-autocast teacher, the teacher
cache built and read on the GPU. Skipped without a CUDA device (CI has none); `benchmarks/gpu_check.sh`
runs them on a GPU machine, with the NCCL torchrun and the epoch timings (docs/gpu.md)."""
from __future__ import annotations

import math

import pytest
import torch
from test_engine_support import TinyNet, run_config

from kdforge import Distiller, DistillJob
from kdforge.engine import Trainer, train
from kdforge.engine import trainer as trainer_mod
from kdforge.models import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_config(out, **kw):
    cfg = run_config(str(out), **kw)
    cfg["device"] = "cuda"
    return cfg


class _Crash(Exception):
    pass


def test_fp16_amp_scales_the_loss_and_resumes_the_scaler(tmp_path, monkeypatch):
    model = TinyNet()
    dtypes = []
    model.conv1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
    res = train(cuda_config(tmp_path / "a", epochs=2, amp="fp16"), model=model, verbose=False)
    assert res["device"].startswith("cuda")
    assert dtypes and all(d == torch.float16 for d in dtypes)
    assert math.isfinite(res["final"]["loss"]) and res["final"]["top1"] > 50.0
    scaler = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["scaler"]
    assert scaler is not None and scaler["scale"] > 0  # GradScaler state is checkpointed

    def crash(ctx):  # the end-of-epoch barrier comes after the checkpoint is written
        raise _Crash("simulated crash")

    real = trainer_mod.barrier
    monkeypatch.setattr(trainer_mod, "barrier", crash)
    with pytest.raises(_Crash):
        Trainer(cuda_config(tmp_path / "b", epochs=2, amp="fp16"), verbose=False).fit()
    monkeypatch.setattr(trainer_mod, "barrier", real)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["scaler"]
    loaded = []
    real_load = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict",
                        lambda self, sd: (loaded.append(sd["scale"]), real_load(self, sd))[1])
    resumed = Trainer(cuda_config(tmp_path / "b", epochs=2, amp="fp16"), verbose=False)
    res_b = resumed.fit(resume=True)
    assert loaded == [saved["scale"]]
    assert int(resumed.distiller.step) == 16 and math.isfinite(res_b["final"]["loss"])


def test_fp16_autocast_teacher_on_cuda_hands_float32_to_the_losses():
    torch.manual_seed(0)
    s = build_model("cnn", channels=[4, 8, 8]).cuda()
    t = build_model("cnn", channels=[8, 16, 16]).cuda()
    jobs = [DistillJob(name="kd", loss={"type": "kd", "T": 4}, student="", teacher="", weight=0.9),
            DistillJob(name="fit", loss="fitnet", student="stages.1", teacher="stages.1", connector="conv1x1")]
    seen = []
    t.stages[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = torch.randn(8, 1, 28, 28, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    plain = Distiller(s, {"t": t}, jobs)  # never moved: its lazy connector follows the features to the GPU
    plain.dry_run(x, labels=y)
    assert all(p.is_cuda for p in plain.learnable_parameters())
    _, ref = plain(x, labels=y)
    half = Distiller(s, {"t": t}, jobs, teacher_exec={"autocast": "fp16"})
    half.dry_run(x, labels=y)
    half.load_state_dict(plain.state_dict())
    logits, kd = half(x, labels=y)
    assert seen[-1] == torch.float16  # the teacher ran in fp16
    assert logits.dtype == torch.float32 and kd.dtype == torch.float32
    assert torch.allclose(kd, ref, rtol=2e-2, atol=1e-3)
    kd.backward()  # the student side stays float32 and differentiable


def test_teacher_cache_built_and_read_on_cuda(tmp_path):
    from test_cache import TEACHER, kd_config
    from test_data import fake_dataset

    from kdforge.cache import build_cache

    data = fake_dataset(tmp_path / "data", n_train=40, n_test=10)
    torch.manual_seed(0)
    torch.save(build_model(TEACHER["name"], **TEACHER["kwargs"]).state_dict(), tmp_path / "teacher.pt")
    cfg = kd_config(tmp_path, data, device="cuda")  # augmented views, replayed from the cache
    cache = build_cache(cfg, views=2, out=tmp_path / "cache", verbose=False)
    live = train({**cfg, "output_dir": str(tmp_path / "live")}, verbose=False)
    cached = train({**cfg, "teacher_cache": str(cache), "output_dir": str(tmp_path / "cached")}, verbose=False)
    assert live["device"].startswith("cuda") and cached["device"].startswith("cuda")
    assert cached["teacher_cache"] == str(cache) and math.isfinite(cached["final"]["loss"])
