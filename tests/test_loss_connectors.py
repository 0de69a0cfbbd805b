"""Connectors that losses need are registered like any other (issue: loss zoo I)."""
import pytest
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
    # sp: simple pooling = max over the group (the official adaptive_max_pool3d), margin = the group's max
    sp, m = build_connector({"type": "mgd_reducer", "reducer": "sp"})(t, matching, margin)
    assert sp.flatten().tolist() == [1.0, 3.0] and m.tolist() == [-1.0, -2.0]
    # sm: sparse matching, one teacher channel per student channel
    sm, m = build_connector({"type": "mgd_reducer", "reducer": "sm"})(t, matching[:1], margin)
    assert sm.flatten().tolist() == [1.0, 2.0] and m.tolist() == [-1.0, -2.0]
    with pytest.raises(ValueError, match="one-to-one matching"):
        build_connector({"type": "mgd_reducer", "reducer": "sm"})(t, matching, margin)
    # rd: every draw is a group member; margins are drawn per channel among the group's
    rd = build_connector({"type": "mgd_reducer", "reducer": "rd"})
    t2 = torch.tensor([1.0, -5.0, 2.0, 3.0]).view(1, 4, 1, 1).expand(64, 4, 1, 1)
    seen0, seen1, seen_m = set(), set(), set()
    for _ in range(20):
        out, m = rd(t2, matching, margin)
        seen0 |= set(out[:, 0].flatten().tolist())
        seen1 |= set(out[:, 1].flatten().tolist())
        seen_m.add(tuple(m.tolist()))
    assert seen0 == {1.0, -5.0} and seen1 == {2.0, 3.0}
    assert {a for a, _ in seen_m} == {-1.0, -3.0} and {b for _, b in seen_m} == {-2.0, -4.0}


def test_mgd_reducer_names_are_the_official_ones():
    """A recipe ported from the official ``--mgd-reducer`` gets the same reducer: no aliases, no surprise."""
    from kdforge.connectors.mgd import ONE_TO_ONE, REDUCERS

    assert set(REDUCERS) == {"amp", "rd", "sp", "sm"} and ONE_TO_ONE == {"sm"}
    with pytest.raises(ValueError, match=r"unknown reducer 'sparse'.*sp \(simple pooling.*sm \(sparse matching"):
        build_connector({"type": "mgd_reducer", "reducer": "sparse"})
