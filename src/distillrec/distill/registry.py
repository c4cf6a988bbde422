"""Distiller registry: names to classes, with typed options and a rule for composing several."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Distiller
from distillrec.errors import ConfigError, validation_message
from distillrec.models.base import Recommender

D = TypeVar("D", bound=Distiller)
_DISTILLERS: dict[str, type[Distiller]] = {}


def register_distiller(cls: type[D]) -> type[D]:
    _DISTILLERS[cls.name] = cls
    return cls


def _discover() -> None:
    import importlib
    import pkgutil

    import distillrec.distill as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "registry"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def distiller_names() -> list[str]:
    _discover()
    return sorted(_DISTILLERS)


def distiller_class(name: str) -> type[Distiller]:
    _discover()
    if name not in _DISTILLERS:
        raise ConfigError(f"unknown distillation method {name!r}; known: {', '.join(sorted(_DISTILLERS))}")
    return _DISTILLERS[name]


TASK_WORDS = {"topk": "top-K (general)", "next-item": "next-item"}


def check_distill(
    names: list[str], model: str, groups: dict[str, dict[str, Any]]
) -> tuple[type[Distiller], BaseModel]:
    """The distiller class and its typed options for `names` on `model`, or one ConfigError saying why not.

    Runs before any run folder is made or teacher trained, so a refused method leaves nothing behind. Besides
    the task and the options, the backbone's capabilities (`Distiller.check_backbone`) are checked against
    the model's class and its hyperparameters: `groups["model"]` (overrides, or a specification's complete
    params) resolved over the model's defaults; without a "model" group (an experiment definition, whose
    runs set the model options later), against what some configuration of the model provides.
    """
    from distillrec.models.registry import model_class, resolve_params

    _discover()
    unknown = [n for n in names if n not in _DISTILLERS]
    if unknown:
        raise ConfigError(
            f"unknown distillation method {unknown[0]!r}; known: {', '.join(sorted(_DISTILLERS)) or 'none'}"
        )
    if len(names) > 1:
        raise ConfigError(
            f"composing {'+'.join(names)} is refused: each method's teachers are trained against the plain "
            "backbone (CKD's uni-modal teachers, SGFD's feature teachers), so stacking them would distil from "
            "teachers of another model; give one --distill method per run"
        )
    cls = _DISTILLERS[names[0]]
    task = model_class(model).task
    if task not in cls.tasks:
        works_on = " and ".join(TASK_WORDS.get(t, t) for t in sorted(cls.tasks))
        raise ConfigError(
            f"{names[0]} works on {works_on} models; {model!r} is a {TASK_WORDS.get(task, task)} model"
        )
    try:
        options = cls.Options(**groups.get(names[0], {}))
    except ValidationError as exc:
        raise ConfigError(f"{names[0]} options: {validation_message(exc)}") from None
    params = resolve_params(model, groups["model"]) if "model" in groups else None
    refusal = cls.check_backbone(model_class(model), params, options)
    if refusal is not None:
        raise ConfigError(refusal)
    if not model_class(model).trainable:
        raise ConfigError(
            f"{names[0]} cannot act on {model!r}: it learns nothing (its scores are computed from the data), so "
            "there is no student to distil into"
        )
    return cls, options


def build_distiller(
    names: list[str],
    dataset: Dataset,
    model: str,
    groups: dict[str, dict[str, Any]],
    device: torch.device,
    out: Path | str | None,
    backbone_factory: Callable[[], Recommender] | None = None,
    seed: int | None = None,
) -> Distiller:
    """The prepared distiller for `names` (one method per run; composition is refused with the reason)."""
    cls, options = check_distill(names, model, groups)
    distiller = cls(options)
    distiller.prepare(
        dataset, backbone_factory, model=model, groups=groups, device=device, out=out, seed=seed
    )
    return distiller
