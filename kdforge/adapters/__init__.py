"""Use a :class:`~kdforge.Distiller` inside the trainers people already run (optional dependencies).

* :mod:`kdforge.adapters.hf` — ``DistillationTrainer``, a Hugging Face ``transformers.Trainer`` whose
  ``compute_loss`` is ``ce_weight · task loss + distillation loss`` (``pip install kdforge[hf]``);
* :mod:`kdforge.adapters.lightning` — ``DistillationModule``, a PyTorch Lightning ``LightningModule``
  whose ``training_step`` does the same (``pip install kdforge[lightning]``);
* :mod:`kdforge.adapters.common` — the shared pieces (batch → Distiller call, task loss, saving the
  plain student), usable in any hand-written loop.

Nothing here is imported by ``import kdforge``; each module imports its trainer library on use.
"""
