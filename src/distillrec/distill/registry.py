"""Distiller registry: names to classes, with typed options and a rule for composing several."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from distillrec.errors import ConfigError, validation_message

_DISTILLERS: dict[str, type] = {}


def register_distiller(cls: type) -> type:
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


def build_distiller(
    names: list[str],
    dataset,  # noqa: ANN001
    model: str,
    groups: dict[str, dict[str, Any]],
    device: torch.device,
    out: Path | str | None,
    backbone_factory: Callable | None = None,
    seed: int | None = None,
):  # noqa: ANN201
    """The distiller for `names` (one for now; composition is refused with the reason by each class)."""
    _discover()
    unknown = [n for n in names if n not in _DISTILLERS]
    if unknown:
        raise ConfigError(f"unknown distillation method {unknown[0]!r}; known: {', '.join(sorted(_DISTILLERS)) or 'none'}")
    if len(names) > 1:
        raise ConfigError(
            f"composing {'+'.join(names)} is refused: each method's teachers are trained against the plain "
            "backbone (CKD's uni-modal teachers, SGFD's feature teachers), so stacking them would distil from "
            "teachers of another model; give one --distill method per run"
        )
    cls = _DISTILLERS[names[0]]
    try:
        options = cls.Options(**groups.get(names[0], {}))
    except ValidationError as exc:
        raise ConfigError(f"{names[0]} options: {validation_message(exc)}") from None
    distiller = cls(options)
    distiller.prepare(dataset, backbone_factory, model=model, groups=groups, device=device, out=out, seed=seed)
    return distiller
