"""Every model's `search:` block: finite, small, valid keys, the default point inside, every point valid."""

from __future__ import annotations

import pytest

from distillrec.errors import ConfigError
from distillrec.models import registry
from distillrec.models.registry import (
    model_class,
    model_names,
    resolve_params,
    search_grid,
    train_defaults,
)
from distillrec.models.space import grid, grid_size, is_finite
from distillrec.training.config import TrainConfig
from distillrec.training.defaults import search_space


@pytest.mark.parametrize("name", model_names())
def test_search_space_is_valid_and_holds_the_defaults(name: str) -> None:
    space = search_space(name)
    cls = model_class(name)
    params = resolve_params(name).model_dump()
    train = TrainConfig(**train_defaults(name)).model_dump()
    if cls.trainable:
        assert "train.lr" in space, f"{name} does not tune train.lr"
    if space:
        assert is_finite(space) and 8 <= grid_size(space) <= 24, f"{name}: {grid_size(space)} points"
    for key, values in search_grid(name).items():  # the older `grid:` block, while it exists
        assert set(values) <= set(space[key].choices), f"{name}: grid {key}={values} not in the space"
    for key, dim in space.items():
        if key.startswith("train."):
            field = key.removeprefix("train.")
            assert field in TrainConfig.model_fields
            default = train[field]
        else:
            assert key in cls.Params.model_fields
            default = params[key]
        assert default in dim.choices, f"{name}: default {key}={default!r} not in {dim.choices}"
    for point in grid(space):
        model_point = {k: v for k, v in point.items() if not k.startswith("train.")}
        resolve_params(name, model_point)
        TrainConfig(
            **{**train_defaults(name), **{k[6:]: v for k, v in point.items() if k.startswith("train.")}}
        )


def test_trainable_models_have_a_space() -> None:
    assert [n for n in model_names() if model_class(n).trainable and not search_space(n)] == []


def test_maml_space_is_at_most_eight_points() -> None:
    assert grid_size(search_space("maml")) <= 8


@pytest.mark.parametrize("key", ["no_such_param", "train.no_such_option"])
def test_unknown_search_key_names_the_yaml(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    real = registry._yaml_defaults
    monkeypatch.setattr(registry, "_yaml_defaults", lambda name: {**real(name), "search": {key: [1, 2]}})
    with pytest.raises(ConfigError, match=rf"bprmf\.yaml.*{key}"):
        search_space("bprmf")
