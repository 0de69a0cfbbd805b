"""The Distiller's per-step shortcuts keep its behaviour: the cached step count follows every write."""
import torch

from kdforge import Distiller, DistillJob
from kdforge.models import build_model


def make():
    torch.manual_seed(0)
    return Distiller(build_model("cnn", channels=[4, 8, 8]), build_model("cnn", channels=[4, 8, 8]),
                     [DistillJob(loss="kd", student="", teacher="", warmup_iters=10)])


def test_step_count_follows_load_state_dict_assignment_and_in_place_writes():
    x = torch.randn(4, 1, 28, 28)
    d = make()
    d(x)
    d(x)
    assert int(d.step) == 2 and d._step_int() == 2
    other = make()
    other.load_state_dict(d.state_dict())
    other(x)
    assert other._step_int() == 3
    kd5 = float(other.losses["job0"])
    d.step.fill_(7)
    assert d._step_int() == 7
    d.step = torch.tensor(9)
    assert d._step_int() == 9
    d.eval()
    d(x)
    assert int(d.step) == 9  # eval does not advance
    d.step = torch.tensor(0)
    d(x)
    assert float(d.losses["job0"]) == 0.0 and kd5 > 0  # warm-up factor from the new step


def test_kd_loss_value_unchanged_by_the_fused_kl():
    from kdforge.losses.response import kl_div_logits

    s, t = torch.randn(6, 5), torch.randn(6, 5)
    p_t = torch.softmax(t / 3, 1)
    ref = (p_t * (p_t.log() - torch.log_softmax(s / 3, 1))).sum(1).mean() * 9
    torch.testing.assert_close(kl_div_logits(s, t, 3.0), ref)
