"""Tap selectors for structured outputs, and model-input vs loss-context routing in the Distiller."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from kdforge import Distiller, DistillerError, DistillJob
from kdforge.capture import TapError, Tapper, TapSpec, format_selector, parse_selector


class Block(nn.Module):
    """Returns a tuple (hidden, extra), as transformer blocks do."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        h = self.fc(x)
        return h, h.sum(-1)


class DictNet(nn.Module):
    """Returns a dict with a list inside, like a ModelOutput with hidden states."""

    def __init__(self, d: int = 4, n_cls: int = 3) -> None:
        super().__init__()
        self.b0, self.b1 = Block(d), Block(d)
        self.head = nn.Linear(d, n_cls)

    def forward(self, x, attention_mask=None, labels=None):
        h0, _ = self.b0(x)
        h1, _ = self.b1(h0)
        out = OrderedDict(logits=self.head(h1), hidden_states=(x, h0, h1))
        if attention_mask is not None:
            out["mask_seen"] = attention_mask.float()
        if labels is not None:
            out["loss_computed"] = torch.zeros(())
        return out


def test_parse_selectors():
    assert TapSpec.parse("transformer.h.3:output[0]") == TapSpec("transformer.h.3:output[0]", "transformer.h.3", "output", (0,))
    assert TapSpec.parse(":output.logits").select == ("logits",)
    assert TapSpec.parse(":output.logits").path == ""
    assert TapSpec.parse("encoder:output['hidden_states'][4]").select == ("hidden_states", 4)
    assert TapSpec.parse('encoder:output["hidden_states"][-1]').select == ("hidden_states", -1)
    assert TapSpec.parse("attn:return[1]").kind == "return"
    assert TapSpec.parse("@feats[0]") == TapSpec("@feats[0]", "feats", "emit", (0,))
    assert TapSpec.parse("fc:input") == TapSpec("fc:input", "fc", "input", ())
    assert format_selector(parse_selector("['hidden_states'][4].x['a b']")) == ".hidden_states[4].x['a b']"
    with pytest.raises(TapError, match="a selector follows the kind"):
        TapSpec.parse("transformer.h.3[0]")
    with pytest.raises(TapError, match="cannot read the selector"):
        TapSpec.parse("h.3:output[0")
    with pytest.raises(TapError, match="unknown kind 'outptu'"):
        TapSpec.parse("h.3:outptu[0]")


def test_selectors_pick_elements_keys_and_fields():
    m = DictNet().eval()
    x = torch.randn(2, 5, 4)
    taps = ["b0:output[0]", "b1:output[-1]", ":output.logits", ":output['hidden_states'][2]", "b1.fc:input"]
    with Tapper(m, taps) as t, t.record() as rec:
        out = m(x)
        assert torch.equal(rec[":output.logits"], out["logits"])
        assert torch.equal(rec[":output['hidden_states'][2]"], out["hidden_states"][2])
        assert torch.equal(rec["b0:output[0]"], out["hidden_states"][1])
        assert torch.equal(rec["b1:output[-1]"], out["hidden_states"][2].sum(-1))
        assert torch.equal(rec["b1.fc:input"], out["hidden_states"][1])


@pytest.mark.parametrize("spec, pattern", [
    ("b0", r"recorded a tuple of 2, not a tensor; add a selector.*\[0\] \(2, 5, 4\).*'b0:output\[0\]'"),
    ("", r"recorded a OrderedDict.*\.logits \(2, 5, 3\).*\.hidden_states\[0\]"),
    (":output.hidden", r"no key 'hidden'.*\.logits \(2, 5, 3\)"),
    ("b0:output[5]", r"index \[5\] is out of range.*2 elements"),
    ("b0:output[0][1]", r"\[1\] needs a tuple or list at \[0\], got a Tensor \(2, 5, 4\)"),
    ("b0:output.logits", r"has no field 'logits'.*\[0\] \(2, 5, 4\)"),
])
def test_structured_tap_errors_list_valid_selectors(spec, pattern):
    m = DictNet().eval()
    with Tapper(m, [spec]) as t, pytest.raises(TapError, match=pattern), t.record():
        m(torch.randn(2, 5, 4))


def test_model_output_selectors():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 64, (2, 7))
    with Tapper(m, [":output.logits", "transformer:output.last_hidden_state", "transformer.h.1.attn:output[0]"]) as t:
        with t.record() as rec:
            out = m(ids)
        assert torch.equal(rec[":output.logits"], out.logits)
        assert rec["transformer:output.last_hidden_state"].shape == (2, 7, 16)
        assert rec["transformer.h.1.attn:output[0]"].shape == (2, 7, 16)
    with Tapper(m, ["transformer:output.hidden_states"]) as t, t.record():
        with pytest.raises(TapError, match="only fields the model computed.*output_hidden_states=True"):
            m(ids)
    with Tapper(m, [""]) as t, t.record():
        with pytest.raises(TapError, match=r"CausalLMOutput.*':output.logits'"):
            m(ids)


# ---------------------------------------------------------------------------------------- routing
def _distiller(**kw):
    return Distiller(DictNet(), DictNet(), [DistillJob(loss="mse_ctx", student=":output.logits",
                                                       teacher=":output.logits")], **kw)


@pytest.fixture
def ctx_loss():
    from kdforge import LOSSES

    seen = {}

    class MSECtx(nn.Module):
        def forward(self, s, t, **ctx):
            seen.clear()
            seen.update(ctx)
            return ((s - t) ** 2).mean()

    LOSSES.register("mse_ctx")(MSECtx)
    yield seen
    LOSSES._items.pop("mse_ctx")


def test_keyword_inputs_go_to_models_and_context(ctx_loss):
    d = _distiller()
    x, mask, labels = torch.randn(2, 5, 4), torch.ones(2, 5), torch.randint(0, 3, (2,))
    out, kd = d(x, attention_mask=mask, labels=labels, index=torch.arange(2))
    assert "mask_seen" in out                      # the student got attention_mask
    assert "loss_computed" not in out              # ... but not labels (HF models would compute a loss)
    assert set(ctx_loss) >= {"attention_mask", "labels", "index", "step", "student_output"}
    assert kd.requires_grad


def test_dict_batch_is_spread(ctx_loss):
    d = _distiller()
    x, mask, labels = torch.randn(2, 5, 4), torch.ones(2, 5), torch.randint(0, 3, (2,))
    out1, kd1 = d({"x": x, "attention_mask": mask, "labels": labels})
    out2, kd2 = d(x=x, attention_mask=mask, labels=labels)
    assert torch.equal(out1["logits"], out2["logits"]) and torch.equal(kd1, kd2)
    assert torch.equal(ctx_loss["labels"], labels)
    with pytest.raises(DistillerError, match=r"\['labels'\] given both"):
        d({"x": x, "labels": labels}, labels=labels)


def test_positional_with_labels_is_backward_compatible(ctx_loss):
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    d = Distiller(student, teacher, [DistillJob(loss={"type": "kd", "T": 2}, student="", teacher="")])
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    out, kd = d(x, labels=y)
    assert out.shape == (6, 3) and kd.item() >= 0


def test_explicit_model_inputs_and_errors(ctx_loss):
    d = _distiller(model_inputs=["x"])
    out, _ = d(x=torch.randn(2, 5, 4), attention_mask=torch.ones(2, 5))
    assert "mask_seen" not in out                  # attention_mask is context only now
    with pytest.raises(DistillerError, match="no model inputs"):
        _distiller()(labels=torch.zeros(2))

    class NoMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = DictNet()

        def forward(self, x):
            return self.inner(x)

    bad = Distiller(DictNet(), NoMask(), [DistillJob(loss="mse_ctx", student=":output.logits",
                                                     teacher=":output.logits")])
    with pytest.raises(DistillerError, match=r"teacher 't0' \(NoMask\) does not take the model input\(s\) \['attention_mask'\]"):
        bad(torch.randn(2, 5, 4), attention_mask=torch.ones(2, 5))


def test_dict_without_model_inputs_stays_positional(ctx_loss):
    class DictIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, batch):
            return self.fc(batch["feats"])

    d = Distiller(DictIn(), DictIn(), [DistillJob(loss="mse_ctx", student="", teacher="")])
    out, kd = d({"feats": torch.randn(2, 4)}, labels=torch.zeros(2))
    assert out.shape == (2, 3) and "labels" in ctx_loss
