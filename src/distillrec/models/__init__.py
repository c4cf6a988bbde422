"""Backbones on one contract (`base.Recommender`), found by name through the registry."""

from distillrec.models.base import Batch, Recommender, Representation, mean_ablate
from distillrec.models.registry import build_model, model_class, model_names, resolve_params

__all__ = [
    "Batch",
    "Recommender",
    "Representation",
    "build_model",
    "mean_ablate",
    "model_class",
    "model_names",
    "resolve_params",
]
