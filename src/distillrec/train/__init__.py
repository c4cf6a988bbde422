"""Training: the epoch loop, early stopping, checkpoints and resume."""

from distillrec.train.config import TrainConfig
from distillrec.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
