"""`--set key=value` parsing: values typed like YAML, keys routed to the training or the model config."""

from __future__ import annotations

from typing import Any

import yaml

from distillrec.errors import ConfigError
from distillrec.train.config import TrainConfig

DATA_KEYS = {"split", "split_seed"}


def parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            return value
    return value


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def route(assignments: dict[str, Any], distill_names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Split flat assignments into {"train", "model", "data", <distiller>} groups.

    `train.lr=…`, `model.reg_weight=…`, `ckd.lambda_kd=…` name their group; a bare key goes to the training
    config when it is one of its fields, to the dataset options for split/split_seed, else to the model.
    """
    groups: dict[str, dict[str, Any]] = {"train": {}, "model": {}, "data": {}}
    for name in distill_names or []:
        groups[name] = {}
    for key, value in assignments.items():
        if "." in key:
            group, sub = key.split(".", 1)
            if group not in groups:
                raise ConfigError(f"unknown option group {group!r} in {key!r}; use one of {sorted(groups)}")
            groups[group][sub] = value
        elif key in TrainConfig.model_fields:
            groups["train"][key] = value
        elif key in DATA_KEYS:
            groups["data"][key] = value
        else:
            groups["model"][key] = value
    return groups
