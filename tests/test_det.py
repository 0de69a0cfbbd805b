import pytest
import torch

import kdforge.losses  # noqa: F401
import kdforge.models  # noqa: F401
import kdforge.tasks  # noqa: F401
from kdforge.distiller import Distiller
from kdforge.losses.base import ShapeMismatchError
from kdforge.losses.detection import fgd_masks, imitation_mask
from kdforge.models.det import centernet_decode, centernet_targets
from kdforge.registry import LOSSES, MODELS, TASKS


def _targets():
    return [{"boxes": torch.tensor([[4.0, 8.0, 28.0, 30.0], [30.0, 33.0, 60.0, 61.0]]), "labels": torch.tensor([2, 7])},
            {"boxes": torch.tensor([[10.0, 12.0, 40.0, 36.0]]), "labels": torch.tensor([0])}]


@pytest.mark.parametrize("name", ["centernet_t", "centernet_s"])
def test_centernet_shapes_and_taps(name):
    m = MODELS.build(name).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 64, 64))
    assert out["heatmap"].shape == (2, 10, 16, 16)
    assert out["wh"].shape == out["offset"].shape == (2, 2, 16, 16)
    mods = dict(m.named_modules())
    assert all(k in mods for k in ["backbone.stage4", "neck.p2", "neck.p3", "neck.p4", "head.heatmap"])
    with pytest.raises(ValueError, match="multiples of 16"):
        m(torch.rand(1, 1, 60, 64))


def test_a_few_steps_reduce_the_detection_loss():
    task = TASKS.build("detection")
    m = MODELS.build("centernet_s")
    x, y = task.batch_to((torch.rand(2, 1, 64, 64), _targets()), "cpu")
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = task.criterion(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="targets"):
        task.criterion(m(x), y[:1])


def test_decode_recovers_encoded_boxes():
    tg = _targets()
    enc = centernet_targets(tg, 10, (16, 16))
    hm = enc["heatmap"].clamp(1e-4, 1 - 1e-4)
    outputs = {"heatmap": torch.log(hm / (1 - hm)), "wh": enc["wh"], "offset": enc["offset"]}
    dets = MODELS.build("centernet_s").decode(outputs, score_thresh=0.5, topk=10)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    for d, t in zip(dets, tg):
        order = d["labels"].argsort()
        assert torch.equal(d["labels"][order], t["labels"].sort().values)
        assert torch.allclose(d["boxes"][order], t["boxes"][t["labels"].argsort()], atol=1e-4)
        assert d["boxes"].dtype == torch.float32 and d["scores"].shape == d["labels"].shape


def test_coco_map_perfect_and_hand_cases():
    pytest.importorskip("faster_coco_eval")
    task = TASKS.build("detection")
    tg = _targets()
    meter = task.metrics()
    meter.update([{**t, "scores": torch.ones(len(t["labels"]))} for t in tg], tg)
    assert meter.compute() == pytest.approx({"mAP": 1.0, "mAP50": 1.0, "mAP75": 1.0})
    # one class, two GT boxes, only one found: precision 1 up to recall 0.5 → 51 of COCO's 101 recall points
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), "labels": torch.tensor([1, 1])}]
    pred = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    meter = task.metrics()
    meter.update(pred, gt)
    assert meter.compute()["mAP50"] == pytest.approx(51 / 101, abs=1e-6)
    # a false positive scored above the true positive: precision 1/2 at every recall → AP 0.5
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([3])}]
    pred = [{"boxes": torch.tensor([[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 10.0, 10.0]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([3, 3])}]
    a, b = task.metrics(), task.metrics()
    a.update(pred, gt)
    b.update(pred, gt)
    assert a.compute()["mAP"] == pytest.approx(0.5, abs=1e-6)
    merged = task.metrics()
    merged.load_state(torch.cat([a.state(), b.state()]))  # two ranks' rows: still two distinct images
    assert merged.compute()["mAP"] == pytest.approx(0.5, abs=1e-6)
    raw = task.metrics()  # raw head outputs are decoded by the meter
    raw.update(MODELS.build("centernet_s").eval()(torch.rand(2, 1, 64, 64)), tg)
    assert 0.0 <= raw.compute()["mAP"] <= 1.0


def test_detection_loss_context():
    task = TASKS.build("detection")
    x, y = task.batch_to((torch.rand(2, 1, 64, 64), _targets()), "cpu")
    ctx = task.loss_context(y, (x, y))
    assert ctx["image_size"] == (64, 64) and len(ctx["boxes"]) == 2 and ctx["gt_labels"][1].tolist() == [0]


def test_fine_grained_mask_value_and_gradient():
    box = [torch.tensor([[0.0, 0.0, 16.0, 16.0]])]
    mask = imitation_mask(box, (4, 4), (64, 64), anchor_sizes=(16,), anchor_ratios=(1.0,), thresh=0.5)
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 0] = 1
    assert torch.equal(mask, expected)
    loss = LOSSES.build("fine_grained", anchor_sizes=(16,), anchor_ratios=(1.0,))
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.randn(1, 3, 4, 4)
    val = loss(s, t, boxes=box, image_size=(64, 64))
    assert torch.isclose(val, ((s - t)[0, :, 0, 0] ** 2).sum() / 2)
    val.backward()
    assert s.grad[0, :, 0, 0].abs().sum() > 0 and s.grad[0, :, 1:, :].abs().sum() == 0
    # paper defaults: the mask covers the object's neighbourhood, and an empty image gives 0
    d = LOSSES.build("fine_grained")
    assert d.thresh == 0.5
    m = imitation_mask([_targets()[1]["boxes"], torch.zeros(0, 4)], (16, 16), (64, 64), d.anchor_sizes, d.anchor_ratios, 0.5)
    assert m[0].sum() > 0 and m[1].sum() == 0 and m[0, 6, 6] == 1 and m[0, 15, 15] == 0
    with pytest.raises(ShapeMismatchError):
        loss(torch.randn(1, 3, 4, 4), torch.randn(1, 5, 4, 4), boxes=box, image_size=(64, 64))
    with pytest.raises(ValueError, match="boxes"):
        loss(s, t)


def _fgd_reference(s, t, fg, bg, temp=0.5, a=1e-3, b=5e-4, g=5e-4, lam=5e-6):
    n, c, h, w = s.shape
    def att(x):
        sp = h * w * torch.softmax(x.abs().mean(1).reshape(n, -1) / temp, 1).reshape(n, h, w)
        ch = c * torch.softmax(x.abs().mean((2, 3)) / temp, 1)
        return sp, ch
    (st, ct), (ss, cs) = att(t), att(s)
    fg_l = bg_l = 0.0
    for i in range(n):
        for k in range(c):
            for y in range(h):
                for x in range(w):
                    e = (s[i, k, y, x] - t[i, k, y, x]) ** 2 * st[i, y, x] * ct[i, k]
                    fg_l = fg_l + e * fg[i, y, x]
                    bg_l = bg_l + e * bg[i, y, x]
    at = ((cs - ct).abs().sum() + (ss - st).abs().sum()) / n
    rela = ((s - t) ** 2).sum() / n  # GcBlocks start as identity (last conv zero-initialised)
    return a * fg_l / n + b * bg_l / n + g * at + lam * rela


def test_fgd_masks_value_and_gradient():
    fg, bg = fgd_masks([torch.tensor([[8.0, 8.0, 24.0, 24.0]])], (8, 8), (64, 64))
    exp_fg = torch.zeros(1, 8, 8)
    exp_fg[0, 1:4, 1:4] = 1 / 9  # official code: cells floor(1)..ceil(3) inclusive
    assert torch.allclose(fg, exp_fg)
    assert torch.allclose(bg.sum(), torch.tensor(1.0)) and bg[0, 0, 0] == pytest.approx(1 / 55)
    loss = LOSSES.build("fgd")
    assert (loss.temp, loss.alpha, loss.beta, loss.gamma, loss.lambda_) == (0.5, 1e-3, 5e-4, 5e-4, 5e-6)
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 4, 8, 8)
    boxes = [torch.tensor([[8.0, 8.0, 24.0, 24.0]]), torch.zeros(0, 4)]
    val = loss(s, t, boxes=boxes, image_size=(64, 64))
    fg2, bg2 = fgd_masks(boxes, (8, 8), (64, 64))
    assert torch.isclose(val, _fgd_reference(s, t, fg2, bg2), rtol=1e-5)
    val.backward()
    assert s.grad.abs().sum() > 0
    assert loss.gc_student.transform[3].weight.grad.abs().sum() > 0  # learnable GcBlock trains
    assert len(list(loss.parameters())) > 0
    with pytest.raises(ValueError, match="image_size"):
        loss(s, t, boxes=boxes)
    with pytest.raises(ShapeMismatchError):
        loss(s, torch.randn(2, 4, 4, 4), boxes=boxes, image_size=(64, 64))


def test_objectness_kd_value_and_gradient():
    loss = LOSSES.build("objectness_kd")
    ht = torch.tensor([[[[20.0, -20.0], [-20.0, -20.0]]]])  # teacher sees an object at (0, 0) only
    hs = torch.zeros(1, 1, 2, 2, requires_grad=True)
    wh_t, off_t = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    wh_s = torch.ones(1, 2, 2, 2, requires_grad=True)
    off_s = torch.full((1, 2, 2, 2), 0.5, requires_grad=True)
    val = loss([hs, wh_s, off_s], [ht, wh_t, off_t])
    p = torch.sigmoid(ht)
    obj = p[0, 0]
    hm = ((0.5 - p) ** 2).mean()
    box = (obj * (0.1 * 2 * 1.0 + 1.0 * 2 * 0.5)).sum() / obj.sum()  # 2 channels each
    assert torch.isclose(val, hm + box, atol=1e-6)
    val.backward()
    assert hs.grad.abs().sum() > 0 and wh_s.grad[0, :, 0, 0].abs().sum() > 0
    assert wh_s.grad[0, :, 1, 1].abs().max() < 1e-6  # no box imitation where the teacher sees nothing
    with pytest.raises(ValueError, match="heatmap, wh, offset"):
        loss([hs, wh_s], [ht, wh_t])
    with pytest.raises(ShapeMismatchError):
        loss([hs, wh_s, off_s], [ht, wh_t, torch.zeros(1, 2, 3, 3)])


def test_fgd_and_objectness_through_the_distiller():
    task = TASKS.build("detection")
    student, teacher = MODELS.build("centernet_s"), MODELS.build("centernet_t")
    jobs = [{"loss": "fgd", "student": "neck.p2", "teacher": "neck.p2", "connector": "conv1x1"},
            {"loss": "objectness_kd", "student": ["head.heatmap", "head.wh", "head.offset"],
             "teacher": ["head.heatmap", "head.wh", "head.offset"]}]
    batch = (torch.rand(2, 1, 64, 64), _targets())
    x, y = task.batch_to(batch, "cpu")
    with Distiller(student, teacher, jobs) as d:
        out, kd = d(x, **task.loss_context(y, batch))
        (task.criterion(out, y) + kd).backward()
        assert set(d.losses) == {"job0", "job1"} and torch.isfinite(kd)
        assert student.neck.p2[0].weight.grad is not None


# ------------------------------------------------------------------ PKD and heatmap KD (issue 15)
def test_pkd_is_half_of_one_minus_the_per_channel_pearson_correlation():
    from scipy.stats import pearsonr

    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5, 6, dtype=torch.float64), torch.randn(3, 4, 5, 6, dtype=torch.float64)
    t = t + 0.7 * s  # correlated
    loss = LOSSES.build("pkd")(s.float(), t.float())
    m = s[:, 0].numel()
    # per channel: mean((ŝ - t̂)²)/2 = (M-1)/M · (1 - r) with the unbiased std (up to the 1e-6 guard)
    want = sum((m - 1) / m * (1 - pearsonr(s[:, c].flatten().numpy(), t[:, c].flatten().numpy())[0])
               for c in range(4)) / 4
    assert loss.item() == pytest.approx(want, rel=1e-4)
    # invariant to per-channel affine changes of either side (what makes PKD work across detectors)
    scale = torch.tensor([0.1, 3.0, 7.0, 0.5]).view(1, 4, 1, 1)
    assert LOSSES.build("pkd")(s.float() * scale + 5, t.float()).item() == pytest.approx(loss.item(), rel=1e-4)
    assert LOSSES.build("pkd")(t.float(), t.float()).item() == pytest.approx(0.0, abs=1e-6)


def test_pkd_resizes_the_student_and_asks_for_a_connector_on_channel_mismatch():
    s, t = torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 16, 16)
    loss = LOSSES.build("pkd")(s, t)
    up = torch.nn.functional.interpolate(s.detach(), size=(16, 16), mode="bilinear", align_corners=False)
    assert loss.item() == pytest.approx(LOSSES.build("pkd")(up, t).item(), rel=1e-5)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    down = torch.nn.functional.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False)
    assert LOSSES.build("pkd", resize_stu=False)(s, t).item() == pytest.approx(LOSSES.build("pkd")(s, down).item(), rel=1e-5)
    with pytest.raises(ShapeMismatchError, match="connector: conv1x1"):
        LOSSES.build("pkd")(torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8))


def _heatmap_kd_reference(hs, ht, whs, wht, offs, offt, n_obj, beta=2.0, thresh=0.3, w_wh=0.1, w_off=1.0):
    """Loop-by-loop reference of heatmap_kd (independent of the vectorised code)."""
    import math

    n, k, h, w = hs.shape
    hm = 0.0
    for idx in range(hs.numel()):
        p, q = 1 / (1 + math.exp(-hs.flatten()[idx].item())), 1 / (1 + math.exp(-ht.flatten()[idx].item()))
        hm += abs(q - p) ** beta * -(q * math.log(p) + (1 - q) * math.log(1 - p))
    hm /= max(n_obj, 1)
    num = den = 0.0
    qt = torch.sigmoid(ht).amax(1)  # (n,h,w)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                v = qt[b, i, j].item()
                nb = qt[b, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
                if v >= thresh and v >= nb.max().item():
                    l1 = w_wh * (whs[b, :, i, j] - wht[b, :, i, j]).abs().sum() + w_off * (offs[b, :, i, j] - offt[b, :, i, j]).abs().sum()
                    num += v * l1.item()
                    den += v
    return hm + (num / den if den else 0.0)


def test_heatmap_kd_value_against_a_loop_reference():
    torch.manual_seed(1)
    hs, ht = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5) * 2
    whs, wht, offs, offt = (torch.randn(2, 2, 5, 5) for _ in range(4))
    boxes = [torch.rand(2, 4), torch.rand(1, 4)]  # 3 objects: only their count is read
    loss = LOSSES.build("heatmap_kd")([hs, whs, offs], [ht, wht, offt], boxes=boxes)
    assert loss.item() == pytest.approx(_heatmap_kd_reference(hs, ht, whs, wht, offs, offt, 3), rel=1e-4)
    only = LOSSES.build("heatmap_kd")(hs, ht, boxes=boxes)  # heatmap tap alone: the heatmap term
    assert only.item() == pytest.approx(_heatmap_kd_reference(hs, ht, whs, whs, offs, offs, 3), rel=1e-4)
    # the student matching the teacher everywhere gives zero loss (focal factor |q-p|^β = 0)
    assert LOSSES.build("heatmap_kd")([ht, wht, offt], [ht, wht, offt], boxes=boxes).item() == pytest.approx(0.0, abs=1e-7)


def test_heatmap_kd_trains_a_centernet_student_through_the_distiller():
    task = TASKS.build("detection")
    teacher, student = MODELS.build("centernet_t").eval(), MODELS.build("centernet_s")
    job = {"name": "hm", "loss": "heatmap_kd", "student": ["head.heatmap", "head.wh", "head.offset"],
           "teacher": ["head.heatmap", "head.wh", "head.offset"]}
    pkd = {"name": "pkd", "loss": "pkd", "student": "neck.p2", "teacher": "neck.p2", "connector": "conv1x1", "weight": 6.0}
    batch = (torch.rand(2, 1, 64, 64), _targets())
    x, y = task.batch_to(batch, "cpu")
    with Distiller(student, teacher, [job, pkd]) as d:
        out, kd = d(x, **task.loss_context(y, batch))
        (task.criterion(out, y) + kd).backward()
        assert set(d.losses) == {"hm", "pkd"} and torch.isfinite(kd)
    assert all(p.grad is None for p in teacher.parameters())
    assert student.head.heatmap[-1].weight.grad.abs().sum() > 0


def test_heatmap_kd_rejects_mismatched_taps():
    h = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="3 taps each"):
        LOSSES.build("heatmap_kd")([h, h], [h, h])
    with pytest.raises(ValueError, match="beta"):
        LOSSES.build("heatmap_kd", beta=-1)


def test_with_index_survives_the_detection_collate_and_reaches_the_losses():
    from kdforge.data import WithIndex
    from kdforge.data.scenes import det_collate

    class Two(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.rand(1, 64, 64), _targets()[i]

    batch = det_collate([WithIndex(Two())[i] for i in (1, 0)])
    assert batch[2].tolist() == [1, 0] and len(batch[1]) == 2
    task = TASKS.build("detection")
    x, y = task.batch_to(batch, "cpu")
    assert task.loss_context(y, batch)["index"].tolist() == [1, 0]
    assert "index" not in task.loss_context(y, batch[:2])
    seg = TASKS.build("segmentation")
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    assert seg.loss_context(masks, (x, masks, torch.tensor([4, 5])))["index"].tolist() == [4, 5]
