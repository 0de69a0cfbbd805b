"""Training engine: the trainer loop, AMP, DDP, checkpoints/resume, LR schedules, logging.

``train(config)`` runs a :class:`~kdforge.config.run.RunConfig`; ``DATASETS`` maps data names to
builders (register your own dataset there).
"""
from .checkpoint import CheckpointError, read_checkpoint
from .data import DATASETS, build_datasets
from . import dense_data, optim  # noqa: F401  (registers scenes datasets and torch.optim optimisers)
from . import user_data  # noqa: F401  (registers image_folder, cifar10, cifar100)
from .distributed import DeviceError
from .loop import TrainingError, evaluate
from .schedule import LRFactor, build_scheduler
from .trainer import Trainer, train
from .amp import AmpError
from .evaluate import evaluate_weights

__all__ = ["AmpError", "CheckpointError", "DATASETS", "DeviceError", "LRFactor", "Trainer", "TrainingError",
           "build_datasets", "build_scheduler", "evaluate", "evaluate_weights", "read_checkpoint", "train"]
