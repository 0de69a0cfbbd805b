"""Language modelling and Hugging Face models: text data, the LM task, hf: specs, tiny training runs."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdforge import Distiller, DistillJob
from kdforge.data.text import ByteTokenizer, file_hash, list_files, split_files, text_splits
import kdforge.tasks  # noqa: F401  (registers the tasks)
from kdforge.registry import TASKS

transformers = pytest.importorskip("transformers")

GPT2 = {"vocab_size": 256, "n_positions": 32, "n_layer": 2, "n_head": 2, "bos_token_id": 0, "eos_token_id": 0}


@pytest.fixture
def corpus(tmp_path):
    """A small directory of text files (the stdlib default is tested separately)."""
    for i in range(12):
        (tmp_path / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i}  # number {i}\n" * 12)
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "skip.py").write_text("x = 1\n")
    return tmp_path


def test_text_split_by_file_is_deterministic(corpus):
    base, files = list_files(corpus)
    assert "site-packages/skip.py" not in files and len(files) == 12
    train, val = split_files(files, 0.3)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(files)
    assert all(file_hash(f) < 0.3 for f in val) and (train, val) == split_files(list(reversed(files)), 0.3)
    tr, va = text_splits(corpus, seq_len=16, val_fraction=0.3)
    item = tr[0]
    assert set(item) == {"input_ids", "attention_mask", "labels"} and item["input_ids"].shape == (16,)
    assert torch.equal(item["labels"], item["input_ids"]) and int(item["input_ids"].max()) < 256
    assert ByteTokenizer().decode(item["input_ids"]).startswith(("def f", "\0"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        text_splits(corpus / "nope")
    with pytest.raises(ValueError, match="shorter than one window"):
        text_splits(corpus, seq_len=100_000, val_fraction=0.3)


def test_stdlib_corpus_default():
    tr, va = text_splits(seq_len=64, val_fraction=0.1, max_train_bytes=4096, max_val_bytes=2048)
    assert (len(tr), len(va)) == (64, 32) and tr.n_files >= 1


def test_lm_task_loss_and_metrics():
    task = TASKS.build("language_modeling")
    ids = torch.randint(0, 10, (2, 6))
    att = torch.ones(2, 6, dtype=torch.long)
    att[1, 4:] = 0
    inputs, labels = task.batch_to({"input_ids": ids, "attention_mask": att}, "cpu")
    assert set(inputs) == {"input_ids", "attention_mask"} and (labels[1, 4:] == -100).all()
    logits = torch.randn(2, 6, 10)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 10), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(task.criterion({"logits": logits}, labels), want)
    meter = task.metrics()
    meter.update(logits, labels)
    m = meter.compute()
    assert math.isclose(m["loss"], want.item(), rel_tol=1e-5) and math.isclose(m["bpb"], m["loss"] / math.log(2))
    assert math.isclose(m["ppl"], math.exp(m["loss"]))
    with pytest.raises(TypeError, match="language-modelling batch"):
        task.batch_to([ids], "cpu")


def test_hf_specs():
    from kdforge.models import build_model

    m = build_model("hf:GPT2LMHeadModel", config={**GPT2, "n_embd": 16})
    assert m.config.n_layer == 2
    llama = build_model("hf:AutoModelForCausalLM", config={"model_type": "llama", "vocab_size": 64, "hidden_size": 16,
                                                           "intermediate_size": 32, "num_hidden_layers": 1,
                                                           "num_attention_heads": 2, "num_key_value_heads": 2})
    assert type(llama).__name__ == "LlamaForCausalLM"
    with pytest.raises(ValueError, match="did you mean 'GPT2LMHeadModel'"):
        build_model("hf:GPT2LMHeadModle", config={})
    with pytest.raises(ValueError, match="exactly one of kwargs.config"):
        build_model("hf:GPT2LMHeadModel")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_model("hf:GPT2LMHeadModel", pretrained="/no/such/dir")


def test_hf_pretrained_dir_roundtrip(tmp_path):
    from kdforge.models import build_model

    m = build_model("hf:GPT2LMHeadModel", config={**GPT2, "n_embd": 16})
    m.save_pretrained(tmp_path)
    m2 = build_model("hf:GPT2LMHeadModel", pretrained=str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def _lm_cfg(name, tmp_path, corpus, n_embd, jobs=None, teacher=None):
    cfg = {"name": name, "task": "language_modeling", "output_dir": str(tmp_path / name), "device": "cpu",
           "model": {"name": "hf:GPT2LMHeadModel", "kwargs": {"config": {**GPT2, "n_embd": n_embd}}},
           "data": {"name": "text", "root": str(corpus), "val_fraction": 0.3, "batch_size": 8,
                    "kwargs": {"seq_len": 32}},
           "train": {"epochs": 1, "optimizer": {"name": "adamw", "lr": 3e-3}, "log_every": 5}}
    if jobs:
        cfg["teachers"] = {"t": teacher}
        cfg["jobs"] = jobs
    return cfg


def test_tiny_lm_distillation_with_the_trainer(tmp_path, corpus):
    """Teacher (n_embd 32) → student (n_embd 16): token-level KD with masks and a hidden-state job
    across widths, through `kdforge train` and resumed."""
    from kdforge.cli import main

    tcfg = _lm_cfg("teacher", tmp_path, corpus, 32)
    (tmp_path / "teacher.yaml").write_text(json.dumps(tcfg))
    assert main(["train", str(tmp_path / "teacher.yaml")]) == 0
    teacher = json.loads((tmp_path / "teacher" / "summary.json").read_text())
    assert teacher["main_metric"] == "bpb" and math.isfinite(teacher["final"]["bpb"])
    jobs = [{"name": "kl", "loss": {"type": "jsd", "beta": 0.5}, "student": ":output.logits",
             "teacher": ":output.logits", "weight": 0.5},
            {"name": "hid", "loss": "hidden_mse", "student": ["transformer.h.0", "transformer.h.1"],
             "teacher": ["transformer.h.0", "transformer.h.1"], "connector": "token_linear"}]
    scfg = _lm_cfg("student", tmp_path, corpus, 16, jobs, {"name": "hf:GPT2LMHeadModel", "weights": str(
        tmp_path / "teacher" / "best.pt"), "kwargs": {"config": {**GPT2, "n_embd": 32}}})
    scfg["train"]["epochs"] = 2
    (tmp_path / "student.yaml").write_text(json.dumps(scfg))
    assert main(["train", str(tmp_path / "student.yaml"), "--set", "train.epochs=1"]) == 0
    assert main(["train", str(tmp_path / "student.yaml"), "--resume"]) == 0
    s = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert s["jobs"] == ["kl", "hid"] and s["resumed_from"] and math.isfinite(s["final"]["bpb"])
    rows = (tmp_path / "student" / "metrics.csv").read_text().splitlines()
    assert "loss_kl" in rows[0] and "loss_hid" in rows[0] and len(rows) == 3
    col = rows[0].split(",").index("eval_bpb")
    bpbs = [float(r.split(",")[col]) for r in rows[1:]]
    assert s["best"]["value"] == pytest.approx(min(bpbs), abs=1e-4)  # lower is better
    assert s["best"]["epoch"] == 1 + bpbs.index(min(bpbs))


def test_hf_encoder_classifier_distillation_python_api():
    """BERT classifier teacher (hidden 32) → student (hidden 16) from configs, dict batches with padding,
    logit KD + hidden-state MSE across widths + MiniLM-v2 relations from q/k/v projections."""
    from kdforge.layermap import hidden_state_job
    from kdforge.models import build_model

    def bert(hidden, layers):
        return build_model("hf:BertForSequenceClassification", num_labels=3, config={
            "vocab_size": 50, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
            "intermediate_size": 2 * hidden, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0})

    teacher, student = bert(32, 2), bert(16, 1)
    qkv = "bert.encoder.layer.{}.attention.self.{}"
    jobs = [DistillJob(name="kd", loss={"type": "kd", "T": 2}, student=":output.logits", teacher=":output.logits"),
            hidden_state_job("bert.encoder.layer.{}", "bert.encoder.layer.{}", 1, 2, name="hidden"),
            DistillJob(name="minilm", loss={"type": "minilm_v2", "num_relation_heads": 4},
                       student=[qkv.format(0, p) for p in ("query", "key", "value")],
                       teacher=[qkv.format(1, p) for p in ("query", "key", "value")])]
    d = Distiller(student, teacher, jobs)
    ids = torch.randint(1, 50, (6, 10))
    att = torch.ones(6, 10, dtype=torch.long)
    att[:3, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": att, "labels": torch.randint(0, 3, (6,))}
    d.dry_run(batch)
    opt = torch.optim.AdamW(d.learnable_parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out, kd = d(batch)
        loss = F.cross_entropy(out.logits, batch["labels"]) + kd
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(kd.item())
    assert out.loss is None                      # labels stayed loss context: the model computed no loss
    assert set(d.losses) == {"kd", "hidden", "minilm"} and losses[-1] < losses[0]
    assert not any(p.grad is not None for p in teacher.parameters())


def test_flops_count_gpt2():
    from kdforge.models import build_model, count_macs

    m = build_model("hf:GPT2LMHeadModel", config={**GPT2, "n_embd": 16})
    L, D = 8, 16   # per token: 12·D² in each block's projections + the LM head D·V; attention adds 2·L·D per block
    macs = count_macs(m, {"input_ids": torch.zeros(1, L, dtype=torch.long)})
    assert macs >= L * (2 * 12 * D * D + D * 256)
