"""Connectors that losses need are registered like any other (issue: loss zoo I)."""
import torch

from kdforge import CONNECTORS, build_connector


def test_loss_connectors_are_registered():
    for name in ("conv1x1_bn", "paraphraser", "translator", "vid_regressor", "mgd_reducer"):
        assert name in CONNECTORS, name


def test_vid_regressor_maps_to_teacher_channels():
    reg = build_connector({"type": "vid_regressor", "mid_channels": 5})
    reg.bind_once((2, 3, 4, 4), (2, 7, 4, 4))
    out = reg(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 7, 4, 4) and reg[0].weight.shape == (5, 3, 1, 1)


def test_mgd_reducer_by_hand():
    t = torch.tensor([1.0, -5.0, 2.0, 3.0]).view(1, 4, 1, 1)  # teacher channels 0..3
    matching = torch.tensor([[0, 2], [1, 3]])  # student ch 0 ← {0, 1}, student ch 1 ← {2, 3}
    margin = torch.tensor([-1.0, -3.0, -2.0, -4.0])
    amp, m = build_connector({"type": "mgd_reducer", "reducer": "amp"})(t, matching, margin)
    assert amp.flatten().tolist() == [-5.0, 3.0] and m.tolist() == [-2.0, -3.0]  # |−5| > |1|, |3| > |2|
    sp, m = build_connector({"type": "mgd_reducer", "reducer": "sp"})(t, matching, margin)
    assert sp.flatten().tolist() == [1.0, 2.0] and m.tolist() == [-1.0, -2.0]
