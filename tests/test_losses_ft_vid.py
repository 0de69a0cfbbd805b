import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from kdforge.losses.base import ShapeMismatchError
from kdforge.losses.ft import FTLoss, Paraphraser, Translator, pretrain_paraphraser
from kdforge.losses.vid import VIDLoss
from kdforge.registry import CONNECTORS, LOSSES


# ---------------------------------------------------------------- helpers (independent numpy code)
def np_conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' 3x3 convolution with explicit loops over offsets: x (N,C,H,W), w (O,C,3,3)."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for di in range(3):
        for dj in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, di:di + h, dj:dj + wd], w[:, :, di, dj])
    return out + b[None, :, None, None]


def np_leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.1 * x)


def np_encoder(x: np.ndarray, seq: nn.Sequential) -> np.ndarray:
    for conv in seq[0::2]:
        x = np_leaky(np_conv3x3(x, conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()))
    return x


def np_unit(v: np.ndarray) -> np.ndarray:
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        out[i] = v[i] / max(math.sqrt(sum(float(a) ** 2 for a in v[i])), 1e-12)
    return out


# ---------------------------------------------------------------------------------------------- FT
def test_ft_registered_and_shapes() -> None:
    assert isinstance(LOSSES.build("ft"), FTLoss)
    para = CONNECTORS.build("paraphraser")
    trans = CONNECTORS.build("translator", k=0.5)
    assert isinstance(para, Paraphraser) and isinstance(trans, Translator)
    t, s = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4)
    trans.bind_once(s.shape, t.shape)
    assert para(t).shape == (2, 3, 4, 4)  # k * C_t = 3 factor channels
    assert para.reconstruct(t).shape == t.shape
    assert trans(s).shape == (2, 3, 4, 4)


def test_ft_value_matches_numpy() -> None:
    loss = FTLoss()
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss(s, t)
    f_s = np_encoder(s.double().numpy(), loss.translator.encoder).reshape(2, -1)
    f_t = np_encoder(t.double().numpy(), loss.paraphraser.encoder).reshape(2, -1)
    expected = np.abs(np_unit(f_s) - np_unit(f_t)).mean()
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_ft_gradients_and_frozen_paraphraser() -> None:
    loss = FTLoss()
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 6, 4, 4)
    with pytest.warns(UserWarning, match="pre-trained"):
        loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    trainable = [p for p in loss.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in loss.translator.parameters()}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.translator.parameters())
    assert all(not p.requires_grad and p.grad is None for p in loss.paraphraser.parameters())
    loss.train()
    assert loss.training and loss.translator.training and not loss.paraphraser.training


@pytest.mark.filterwarnings("ignore:ft. the paraphraser")
def test_ft_shape_errors() -> None:
    loss = FTLoss(resize=False)
    with pytest.raises(ShapeMismatchError, match="ft: student feature must be 4-D"):
        loss(torch.randn(2, 3), torch.randn(2, 6, 4, 4))
    with pytest.raises(ShapeMismatchError, match=r"spatial sizes differ.*resize=True"):
        loss(torch.randn(2, 3, 8, 8), torch.randn(2, 6, 4, 4))
    with pytest.raises(ShapeMismatchError, match="batch sizes differ"):
        loss(torch.randn(3, 3, 4, 4), torch.randn(2, 6, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert FTLoss()(torch.randn(2, 3, 8, 8), torch.randn(2, 6, 4, 4)).shape == ()  # pooled


def test_pretrain_paraphraser_reduces_reconstruction_loss() -> None:
    base = torch.rand(1, 6, 1, 1) + 0.5
    feats = [base * (1 + 0.3 * torch.randn(4, 1, 5, 5)) for _ in range(4)]  # low-rank teacher features
    para = Paraphraser()
    history = pretrain_paraphraser(para, feats, epochs=8, lr=0.05)
    assert len(history) == 8 and history[-1] < 0.8 * history[0]
    with torch.no_grad():  # measured independently of the training loop
        err = np.mean([(para.reconstruct(f) - f).abs().mean().item() for f in feats])
    assert err < 0.8 * history[0]
    assert bool(para.trained) and not para.training
    with pytest.raises(ValueError, match="no features"):
        pretrain_paraphraser(Paraphraser(), iter(feats), epochs=2)  # a one-shot iterator is exhausted


def test_ft_pretrain_with_teacher_tap_and_loader() -> None:
    teacher = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    with torch.no_grad():
        teacher[1].bias.fill_(1.0)  # dense positive features after the ReLU
    teacher.train()
    loader = [(torch.randn(4, 3, 5, 5), torch.zeros(4)) for _ in range(3)]
    loss = FTLoss()
    history = loss.pretrain(teacher, "2", loader, epochs=6, lr=0.05)
    assert history[-1] < history[0]
    assert teacher.training  # mode restored
    assert not teacher[2]._forward_hooks  # tapper closed
    assert loss.pretrained and all(not p.requires_grad for p in loss.paraphraser.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not pre-trained" warning any more
        loss(torch.randn(2, 3, 5, 5), torch.randn(2, 6, 5, 5))
    restored = FTLoss()
    restored.load_state_dict(loss.state_dict())
    assert restored.pretrained


# --------------------------------------------------------------------------------------------- VID
def test_vid_hand_numbers() -> None:
    # zero student → zero mean (bias-free regressor); σ² = init_pred_var = 5 at start
    loss = VIDLoss()
    t = torch.tensor([[[[1.0, -2.0]], [[0.0, 3.0]]]])  # (1, 2, 1, 2)
    value = loss(torch.zeros(1, 3, 1, 2), t)
    expected = np.mean([0.5 * (v * v / 5.0 + math.log(5.0)) for v in (1.0, -2.0, 0.0, 3.0)])
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(loss.pred_var(), torch.full((2,), 5.0))


def test_vid_value_matches_numpy_loops() -> None:
    loss = VIDLoss(mid_channels=4)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2)
    loss(s, t)
    with torch.no_grad():
        loss.log_scale.copy_(torch.linspace(-1.0, 2.0, 5))
    value = loss(s, t).item()
    w = [loss.regressor[i].weight.detach().double().numpy()[:, :, 0, 0] for i in (0, 2, 4)]
    x, tt = s.double().numpy(), t.double().numpy()
    var = [math.log1p(math.exp(a)) + 1e-5 for a in loss.log_scale.tolist()]
    total, count = 0.0, 0
    for n in range(2):
        for i in range(2):
            for j in range(2):
                h = x[n, :, i, j]
                h = np.maximum(w[0] @ h, 0)
                h = np.maximum(w[1] @ h, 0)
                mu = w[2] @ h
                for c in range(5):
                    total += 0.5 * ((mu[c] - tt[n, c, i, j]) ** 2 / var[c] + math.log(var[c]))
                    count += 1
    assert value == pytest.approx(total / count, rel=1e-5)


def test_vid_gradients_and_early_optimizer() -> None:
    loss = VIDLoss()
    opt = torch.optim.SGD(loss.parameters(), lr=0.1)  # built before the lazy params are materialised
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 4, 4)
    loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.regressor.parameters())
    before = loss.log_scale.detach().clone()
    opt.step()
    assert not torch.equal(before, loss.log_scale.detach())


def test_vid_shape_handling_and_errors() -> None:
    assert VIDLoss()(torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)).shape == ()  # pooled
    assert VIDLoss()(torch.randn(2, 7), torch.randn(2, 4)).shape == ()  # vectors
    with pytest.raises(ShapeMismatchError, match="vid: student feature must be 2-D or 4-D"):
        VIDLoss()(torch.randn(2, 3, 4), torch.randn(2, 5, 4, 4))
    with pytest.raises(ShapeMismatchError, match=r"spatial sizes differ.*resize=True"):
        VIDLoss(resize=False)(torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4))
    loss = VIDLoss()
    loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    with pytest.raises(ShapeMismatchError, match="one vid loss"):
        loss(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4))


def test_vid_state_dict_round_trip() -> None:
    loss = VIDLoss()
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    with torch.no_grad():
        loss(s, t)
        loss.log_scale.add_(0.3)
    fresh = VIDLoss()
    fresh.load_state_dict(loss.state_dict())
    assert torch.allclose(fresh(s, t), loss(s, t))
