import pytest
import torch
import torch.nn.functional as F

from kdforge.losses.base import ShapeMismatchError
from kdforge.registry import LOSSES, MODELS, TASKS
import kdforge.losses  # noqa: F401
import kdforge.models  # noqa: F401
import kdforge.tasks  # noqa: F401

SEG_MODELS = ["deeplabv3p_res_t", "deeplabv3p_res_s", "deeplabv3p_mbv2_s", "unet_tiny"]


@pytest.mark.parametrize("name", SEG_MODELS)
def test_seg_model_shapes_and_taps(name):
    m = MODELS.build(name).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 1, 32, 32))
    assert y.shape == (2, 11, 32, 32)
    mods = dict(m.named_modules())
    for tap in ["backbone.stage1", "backbone.stage4", "decoder", "classifier"]:
        assert tap in mods
    assert ("aspp" in mods) == name.startswith("deeplab")


@pytest.mark.parametrize("name", ["deeplabv3p_res_s", "unet_tiny"])
def test_a_few_steps_reduce_the_task_loss(name):
    task = TASKS.build("segmentation")
    m = MODELS.build(name, num_classes=3)
    x = torch.rand(4, 1, 32, 32)
    y = (x > 0.5).long() + (x > 0.8).long()
    x, y = task.batch_to((x, y[:, 0]), "cpu")
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        loss = task.criterion(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_criterion_ignores_and_rejects_bad_shapes():
    task = TASKS.build("segmentation")
    logits = torch.randn(2, 11, 4, 4)
    target = torch.randint(0, 11, (2, 4, 4))
    full = task.criterion(logits, target)
    target2 = target.clone()
    target2[0] = 255
    assert torch.isclose(task.criterion(logits, target2), F.cross_entropy(logits[1:], target[1:]))
    assert torch.isclose(full, F.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="masks"):
        task.criterion(logits, target[:, :2])
    assert task.loss_context(target)["labels"] is target


def test_miou_perfect_and_hand_case():
    task = TASKS.build("segmentation", num_classes=3)
    meter = task.metrics()
    t = torch.tensor([[[0, 0, 1, 1]]])
    meter.update(F.one_hot(t, 3).permute(0, 3, 1, 2).float(), t)  # logits → argmax
    assert meter.compute() == {"mIoU": 1.0, "mIoU_fg": 1.0, "pixel_acc": 1.0}
    meter = task.metrics()
    pred = torch.tensor([[[0, 1, 1, 1]]])
    meter.update(pred[:, :, :2], t[:, :, :2])  # class predictions accepted too; two batches accumulate
    meter.update(pred[:, :, 2:], t[:, :, 2:])
    out = meter.compute()
    # class 0: I=1, U=2 → 1/2; class 1: I=2, U=3 → 2/3; class 2 absent everywhere → not averaged
    assert out["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["mIoU_fg"] == pytest.approx(2 / 3)
    assert out["pixel_acc"] == pytest.approx(3 / 4)
    other = task.metrics()
    other.load_state(meter.state() * 2)  # summed across two ranks: same ratios
    assert other.compute() == pytest.approx(out)
    t_ign = t.clone()
    t_ign[..., 0] = 255
    m2 = task.metrics()
    m2.update(pred, t_ign)
    assert m2.compute()["pixel_acc"] == pytest.approx(2 / 3)


def _kl_reference(s, t, T):
    c = s.shape[1]
    s2, t2 = s.permute(0, 2, 3, 1).reshape(-1, c), t.permute(0, 2, 3, 1).reshape(-1, c)
    return F.kl_div(F.log_softmax(s2 / T, 1), F.softmax(t2 / T, 1), reduction="batchmean") * T * T


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_seg_kl_value_and_gradient(T):
    loss = LOSSES.build("seg_kl", T=T)
    s = torch.randn(2, 5, 3, 4, requires_grad=True)
    t = torch.randn(2, 5, 3, 4)
    val = loss(s, t)
    assert torch.isclose(val, _kl_reference(s, t, T), atol=1e-6)
    val.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss(t, t).abs() < 1e-6


def test_seg_kl_defaults_and_errors():
    assert LOSSES.build("seg_kl").T == 1.0
    loss = LOSSES.build("seg_kl")
    with pytest.raises(ShapeMismatchError, match="4-D"):
        loss(torch.randn(2, 5), torch.randn(2, 5))
    with pytest.raises(ShapeMismatchError, match="shape mismatch"):
        loss(torch.randn(2, 5, 4, 4), torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="T"):
        LOSSES.build("seg_kl", T=0)
