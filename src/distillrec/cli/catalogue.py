"""Commands that list what can be set: the models with their defaults, and every other option group."""

from __future__ import annotations

from typing import Any

import typer

from distillrec.cli import render


def models() -> None:
    """The registered models and their default hyperparameters."""
    from distillrec.models.registry import default_params, model_class, model_names

    rows = []
    for name in model_names():
        cls = model_class(name)
        rows.append((name, cls.task, cls.uses_features, default_params(name)))
    render.show_models(rows)


def options(
    method: str = typer.Argument(None, help="only this distillation method's options (ckd, sgfd, cdl)"),
) -> None:
    """Every option `--set` and `--config` accept besides model hyperparameters (`distillrec models`):
    training, data, and each distillation method's, with defaults."""
    from distillrec.distill.registry import distiller_class, distiller_names
    from distillrec.experiment.spec import DataSpec
    from distillrec.training.config import TrainConfig

    groups: list[tuple[str, Any]] = (
        []
        if method
        else [
            ("training (--set lr=1e-3; a model's YAML may change its defaults)", TrainConfig),
            ("data (--set split=random)", DataSpec),
        ]
    )
    for name in [method] if method else distiller_names():
        cls = distiller_class(name)
        groups.append((f"{name} (--distill {name} --set {name}.KEY=VALUE)", cls.Options))
    render.show_options(groups)
