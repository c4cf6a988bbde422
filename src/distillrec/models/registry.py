"""The model registry: names to classes, defaults from the YAML beside each model, strict validation."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from distillrec.data.dataset import Dataset
from distillrec.errors import ConfigError, validation_message
from distillrec.models.base import Recommender
from distillrec.models.space import Space, parse_space

R = TypeVar("R", bound=Recommender)
_REGISTRY: dict[str, type[Recommender]] = {}


class ModelParams(BaseModel):
    """Base of every model's hyperparameters: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def register(cls: type[R]) -> type[R]:
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} has no registry name")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    import distillrec.models as pkg

    for sub in ("general", "sequential"):
        try:
            subpkg = importlib.import_module(f"{pkg.__name__}.{sub}")
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(subpkg.__path__):
            importlib.import_module(f"{subpkg.__name__}.{info.name}")


def model_names(task: str | None = None) -> list[str]:
    _discover()
    return sorted(n for n, c in _REGISTRY.items() if task is None or c.task == task)


def canonical_name(name: str) -> str:
    """The registered name of a model, whatever its case (`LightGCN` is `lightgcn`)."""
    _discover()
    if name in _REGISTRY:
        return name
    folded = {n.lower(): n for n in _REGISTRY}
    if name.lower() not in folded:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return folded[name.lower()]


def model_class(name: str) -> type[Recommender]:
    return _REGISTRY[canonical_name(name)]


def _yaml_path(name: str) -> Path:
    """The YAML file beside the model's module."""
    return Path(inspect.getfile(model_class(name))).with_suffix(".yaml")


def _yaml_defaults(name: str) -> dict[str, Any]:
    path = _yaml_path(name)
    if not path.parent.is_dir():  # never read as "no defaults": the run would silently use other settings
        raise ConfigError(
            f"model {name!r}: its package folder {path.parent} is gone (was distillrec reinstalled or moved "
            "while this process ran?)"
        )
    if not path.exists():  # a model without settings of its own (e.g. mostpop)
        return {}
    return yaml.safe_load(path.read_text()) or {}


def default_params(name: str) -> dict[str, Any]:
    """The model's hyperparameter defaults from the YAML file beside its module."""
    return {k: v for k, v in _yaml_defaults(name).items() if k not in ("train", "grid", "search")}


def search_grid(name: str) -> dict[str, list[Any]]:
    """The small hyperparameter grid (its `grid:` block) that `bench` searches on validation."""
    return dict(_yaml_defaults(name).get("grid") or {})


def search_space(name: str, train_options: Collection[str]) -> Space:
    """What the experiment engine may tune for the model (its YAML's `search:` block), keys checked: a
    model key against its `Params`, a `train.<option>` key against `train_options`, the trainer's fields,
    which the caller names because the training layer sits above the models
    (`distillrec.training.defaults.search_space` passes `TrainConfig`'s)."""
    where = str(_yaml_path(name))
    space = parse_space(_yaml_defaults(name).get("search"), where=where)
    for key in space:
        train = key.startswith("train.")
        fields = train_options if train else model_class(name).Params.model_fields
        if key.removeprefix("train.") not in fields:
            kind = "a TrainConfig field" if train else f"a hyperparameter of {name!r}"
            raise ConfigError(f"{where}: search key {key!r} is not {kind}")
    return space


def train_defaults(name: str) -> dict[str, Any]:
    """Training settings the model's YAML overrides (its `train:` block), e.g. a paper's learning rate."""
    return dict(_yaml_defaults(name).get("train") or {})


def resolve_params(name: str, overrides: dict[str, Any] | None = None) -> ModelParams:
    """Defaults overlaid with `overrides`, validated by the model's Params class."""
    cls = model_class(name)
    values = {**default_params(name), **(overrides or {})}
    try:
        return cls.Params(**values)
    except ValidationError as exc:
        raise ConfigError(f"model {name!r}: {validation_message(exc)}") from None


def build_model(name: str, dataset: Dataset, overrides: dict[str, Any] | None = None) -> Recommender:
    """A fresh model for `dataset` with validated hyperparameters."""
    cls = model_class(name)
    params = resolve_params(name, overrides)
    if cls.uses_features and not dataset.features:
        raise ConfigError(
            f"model {name!r} needs item features; dataset {dataset.name!r} has no <modality>_feat.npy files"
        )
    model = cls(dataset, params)
    model.params = params
    return model
