"""Search spaces: what a model's YAML (`search:`) or a distiller (`search_space`) declares may be tuned.

One format for both, readable in YAML:

    search:
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float range (log-uniform)
      n_layers: {low: 1, high: 3}                          # an integer range (both ends integers)
      reg_weight: [1.0e-5, 1.0e-4, 1.0e-3]                 # a categorical choice

A key `train.<field>` is a training option; any other key is a model hyperparameter (or, in a distiller's
space, one of its options). A space whose dimensions are all categorical is *finite*: the experiment engine
walks it with a grid sampler when the budget covers it, and samples it with TPE otherwise.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from distillrec.errors import ConfigError, validation_message


class Dimension(BaseModel):
    """One tunable option: either `choices`, or a `low`..`high` range (log-scaled with `log`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("an empty list of choices")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def finite(self) -> bool:
        return self.choices is not None

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in self.choices) + "}"
        scale = " (log)" if self.log else ""
        return f"[{self.low:g}, {self.high:g}]{scale}"


Space = dict[str, Dimension]


def parse_space(raw: dict[str, Any] | None, where: str) -> Space:
    """A validated space from its YAML / dict form; `where` names the source in error messages."""
    space: Space = {}
    for name, spec in (raw or {}).items():
        try:
            if isinstance(spec, list | tuple):
                space[name] = Dimension(choices=tuple(spec))
            elif isinstance(spec, dict):
                values = dict(spec)
                integer = all(
                    isinstance(values.get(k), int) and not isinstance(values.get(k), bool)
                    for k in ("low", "high")
                ) and not values.get("log", False)
                space[name] = Dimension(**values, integer=values.pop("integer", integer))
            else:
                raise ConfigError(
                    f"{where}: search dimension {name!r} must be a list of choices or "
                    f"{{low, high[, log]}}, got {spec!r}"
                )
        except ValidationError as exc:
            raise ConfigError(f"{where}: search dimension {name!r}: {validation_message(exc)}") from None
    return space


def is_finite(space: Space) -> bool:
    return all(d.finite for d in space.values())


def grid_size(space: Space) -> float:
    """Number of points of a finite space (1 for an empty one), infinity otherwise."""
    if not is_finite(space):
        return math.inf
    return math.prod(len(d.choices or ()) for d in space.values())


def grid(space: Space) -> list[dict[str, Any]]:
    """Every point of a finite space, in declaration order."""
    names = list(space)
    values = [list(space[n].choices or ()) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def suggest(trial: Any, space: Space, prefix: str = "") -> dict[str, Any]:
    """Ask an Optuna trial for one point of `space`; parameter names carry `prefix` in the study."""
    point: dict[str, Any] = {}
    for name, dim in space.items():
        key = prefix + name
        if dim.choices is not None:
            point[name] = trial.suggest_categorical(key, list(dim.choices))
            continue
        assert dim.low is not None and dim.high is not None  # a range (validated)
        if dim.integer:
            point[name] = trial.suggest_int(key, int(dim.low), int(dim.high))
        else:
            point[name] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log)
    return point


def within(point: dict[str, Any], space: Space) -> bool:
    """Whether every value of `point` is one `space` can propose (a choice, or inside the range)."""
    for name, value in point.items():
        dim = space.get(name)
        if dim is None:
            return False
        if dim.choices is not None:
            if value not in dim.choices:
                return False
        elif not (dim.low is not None and dim.high is not None and dim.low <= value <= dim.high):
            return False
    return True


def distributions(space: Space) -> dict[str, Any]:
    """The Optuna distributions `suggest` asks for, by parameter name (to tell whether a stored study
    searched this very space)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.choices is not None:
            out[name] = CategoricalDistribution(list(dim.choices))
        elif dim.integer:
            out[name] = IntDistribution(int(dim.low or 0), int(dim.high or 0))
        else:
            out[name] = FloatDistribution(float(dim.low or 0), float(dim.high or 0), log=dim.log)
    return out


def space_key(space: Space) -> str:
    """A short hash of a space's dimensions (names, choices, ranges), for naming what searches it."""
    import hashlib
    import json

    text = json.dumps({n: d.model_dump() for n, d in sorted(space.items())}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def describe(space: Space) -> str:
    return ", ".join(f"{n} ∈ {d.describe()}" for n, d in space.items()) or "nothing to tune"
