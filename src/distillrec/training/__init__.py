"""Training: the epoch loop, early stopping, checkpoints and resume."""

from distillrec.training.config import TrainConfig
from distillrec.training.trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
