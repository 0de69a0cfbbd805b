"""``hf:`` model specs: Hugging Face ``transformers`` models from a config dict or a local directory.

Nothing is downloaded: a model is either built from a configuration (random initialisation) or loaded
from a directory on disk written by ``save_pretrained`` (``local_files_only=True``; weights are read
from safetensors, or ``pytorch_model.bin`` with ``weights_only`` loading, as ``transformers`` does).

.. code-block:: yaml

    model:                                   # a byte-level GPT-2 from its config, random init
      name: hf:GPT2LMHeadModel
      kwargs: {config: {vocab_size: 256, n_positions: 256, n_embd: 128, n_layer: 4, n_head: 4}}
    teachers:
      t0:                                    # any Auto class: the config names the architecture
        name: hf:AutoModelForCausalLM
        kwargs: {config: {model_type: llama, vocab_size: 256, hidden_size: 128, ...}}
      t1: {name: hf:AutoModelForSequenceClassification, kwargs: {pretrained: /models/my-bert, num_labels: 3}}

The class is any model class exported by ``transformers`` (``GPT2LMHeadModel``,
``BertForSequenceClassification``, ``AutoModelForCausalLM``, …). Other keyword arguments go to the
configuration (``num_labels``, ``attn_implementation``, …) or to ``from_pretrained``. The models
return a ``ModelOutput``: tap ``":output.logits"`` for the logits, ``"transformer.h.3"`` or
``":output.hidden_states[4]"`` (with ``output_hidden_states=True`` as a model input) for hidden states.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..registry import closest


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError("hf: models need the transformers package: pip install transformers "
                          "(or pip install 'kdforge[hf]')") from None
    return transformers


def build_hf_model(cls_name: str, config: dict[str, Any] | None = None, pretrained: str | None = None,
                   **kwargs: Any) -> nn.Module:
    """A ``transformers`` model: ``cls_name`` from ``config`` (random init) or from the local directory
    ``pretrained``; exactly one of the two must be given."""
    tf = _transformers()
    cls = getattr(tf, cls_name, None)
    if cls is None or not isinstance(cls, type):
        names = [n for n in dir(tf) if n.startswith(("Auto", cls_name[:3])) and (n.startswith("Auto") or "For" in n
                                                                                 or n.endswith("Model"))]
        hint = closest(cls_name, names, n=5)
        raise ValueError(f"hf:{cls_name}: transformers has no model class {cls_name!r}"
                         + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                         + " Use a class such as GPT2LMHeadModel, BertForSequenceClassification or AutoModelForCausalLM")
    if (config is None) == (pretrained is None):
        raise ValueError(f"hf:{cls_name} needs exactly one of kwargs.config (a dict: build with random weights) or "
                         f"kwargs.pretrained (a local directory written by save_pretrained); got "
                         f"{'both' if config is not None else 'neither'}")
    auto = cls_name.startswith("AutoModel")
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"hf:{cls_name}: pretrained={str(pretrained)!r} is not a directory; kdforge loads "
                                    f"only local models (a directory with config.json and the weights), nothing is "
                                    f"downloaded")
        return cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    assert config is not None
    cfg = dict(config)
    try:
        if auto:
            model_type = cfg.pop("model_type", None)
            if model_type is None:
                raise ValueError(f"hf:{cls_name} builds from a config only with config.model_type set (e.g. 'gpt2', "
                                 f"'llama', 'bert'), or name the class itself (hf:GPT2LMHeadModel)")
            conf = tf.AutoConfig.for_model(model_type, **cfg, **kwargs)
            return cls.from_config(conf)
        conf_cls = getattr(cls, "config_class", None)
        if conf_cls is None:
            raise ValueError(f"hf:{cls_name} has no config_class; name a model class (…Model, …For…)")
        conf = conf_cls(**cfg, **kwargs)
        return cls(conf)
    except TypeError as e:
        raise TypeError(f"hf:{cls_name}: cannot build from config {cfg}: {e}") from e


__all__ = ["build_hf_model"]
