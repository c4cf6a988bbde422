"""A model's training settings (its YAML's defaults under the caller's overrides, typed) and its search
space with the training keys checked: what needs both the model registry and `TrainConfig`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from distillrec.errors import ConfigError, validation_message
from distillrec.models import registry
from distillrec.models.registry import train_defaults
from distillrec.models.space import Space
from distillrec.training.config import TrainConfig


def resolve_train_config(model: str, overrides: dict[str, Any], seed: int | None = None) -> TrainConfig:
    """The model's training defaults under `overrides` (idempotent on an already resolved dict)."""
    values = {**train_defaults(model), **overrides}
    if seed is not None:
        values["seed"] = seed
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"training options: {validation_message(exc)}") from None


def search_space(model: str) -> Space:
    """The model's declared search space (its YAML's `search:`), `train.` keys checked against
    `TrainConfig`."""
    return registry.search_space(model, TrainConfig.model_fields)
