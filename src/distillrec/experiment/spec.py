"""The run specification: every option of one run, resolved once and then only read.

Layers, later wins: the model's YAML defaults (its hyperparameters and its `train:` block over the
training defaults) ← an optional configuration file ← `--set key=value`. The result is validated by the
typed configs (model Params, TrainConfig, the distiller's Options) in one place; no later layer resolves
anything again. The run folder's name hashes the *resolved* specification (the seed and the dataset's
location on disk left out), so two requests that resolve to the same run share one folder.

A configuration file is YAML with the same keys as `--set`, flat or grouped:

    train: {lr: 5.0e-4, epochs: 200}
    model: {reg_weight: 1.0e-3}
    data: {split: random, split_seed: 1}
    ckd: {lambda_kd: 0.1}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillrec.errors import ConfigError, validation_message
from distillrec.training.checkpoint import RunFileError, read_yaml
from distillrec.training.config import TrainConfig

DATA_KEYS = {"split", "split_seed"}
GROUPS = ("train", "model", "data")


class DataSpec(BaseModel):
    """Which dataset and which split; `source` is where it was read from (not part of the identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str = ""
    split: str = Field(
        "auto", description="auto (x_label if present, else random 8:1:1), x_label, random or loo"
    )
    split_seed: int = Field(0, description="seed of a random or leave-one-out split")


class RunSpec(BaseModel):
    """One run: model, its hyperparameters, training, the distiller and its options, data, seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    data: DataSpec
    params: dict[str, Any]
    train: dict[str, Any]  # a resolved TrainConfig without its seed
    distill: str | None = None
    distill_options: dict[str, Any] = {}
    seed: int = 999

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train, seed=self.seed)

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run, seed apart."""
        return {
            "model": self.model,
            "params": self.params,
            "train": self.train,
            "distill": self.distill,
            "distill_options": self.distill_options,
            "data": {"name": self.data.name, "split": self.data.split, "split_seed": self.data.split_seed},
        }

    def key(self) -> str:
        """A short hash of `identity()`: the run folder's name and the experiment ledger's key."""
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def label(self) -> str:
        return self.model + (f"+{self.distill}" if self.distill else "")

    def run_dir(self, out: Path | str) -> Path:
        return Path(out) / self.data.name / f"{self.label}@{self.key()}" / f"seed{self.seed}"

    def with_seed(self, seed: int) -> RunSpec:
        return self.model_copy(update={"seed": seed})

    def as_config(self, split_hash: str) -> dict[str, Any]:
        """The `config.yaml` a run folder keeps: the whole specification and the split it ran on."""
        return {
            "model": self.model,
            "params": self.params,
            "train": self.train_config().model_dump(),
            "distill": {self.distill: self.distill_options} if self.distill else {},
            "dataset": {**self.data.model_dump(), "split_hash": split_hash},
            "seed": self.seed,
        }


def read_run_config(path: Path, remedy: str) -> dict[str, Any]:
    """A run folder's config.yaml, refused in one line (naming `remedy`) unless it has the shape
    `RunSpec.as_config` writes."""
    cfg = read_yaml(path, remedy)
    if not isinstance(cfg, dict) or not {"model", "params", "train", "dataset"} <= set(cfg):
        raise RunFileError(f"{path}: not a distillrec run configuration; {remedy}")
    return cfg


def parse_value(text: str) -> Any:
    """A `--set` value typed as YAML would type it (1e-3 is a float, not a string)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
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


def read_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; any problem is one line naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of options")
    return raw


def read_config_file(path: Path | str) -> dict[str, Any]:
    """A configuration file as flat `group.key` assignments (see the module docstring)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "configuration file")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in GROUPS and not isinstance(value, dict):
            raise ConfigError(f"{path}: {key!r} must be a mapping of options, got {value!r}")
        if isinstance(value, dict) and key not in DATA_KEYS:
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


def route(assignments: dict[str, Any], distill: str | None = None) -> dict[str, dict[str, Any]]:
    """Flat assignments into {"train", "model", "data", <distiller>} groups.

    `train.lr`, `model.reg_weight`, `ckd.lambda_kd` name their group; a bare key goes to the training
    options when it is one of them, to the data options for split/split_seed, else to the model.
    """
    groups: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    if distill:
        groups[distill] = {}
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


def resolve_spec(
    model: str,
    dataset: str,
    assignments: dict[str, Any] | None = None,
    distill: str | None = None,
    seed: int = 999,
    source: str = "",
) -> RunSpec:
    """The one place options are resolved and validated; errors name the group and the key."""
    from distillrec.models.registry import canonical_name, resolve_params, train_defaults

    model = canonical_name(model)  # an unknown model is reported before anything else
    groups = route(assignments or {}, distill)
    if "seed" in groups["train"]:
        seed = int(groups["train"].pop("seed"))
    params = resolve_params(model, groups["model"]).model_dump()
    try:
        train = TrainConfig(**{**train_defaults(model), **groups["train"], "seed": seed})
    except ValidationError as exc:
        raise ConfigError(f"training options: {validation_message(exc)}") from None
    options: dict[str, Any] = {}
    if distill:
        from distillrec.distill.registry import check_distill

        _, typed = check_distill([distill], model, groups)
        options = typed.model_dump()
    try:
        data = DataSpec(name=dataset, source=source, **groups["data"])
    except ValidationError as exc:
        raise ConfigError(f"data options: {validation_message(exc)}") from None
    return RunSpec(
        model=model,
        data=data,
        params=params,
        train=train.model_dump(exclude={"seed"}),
        distill=distill,
        distill_options=options,
        seed=seed,
    )


def groups_of(spec: RunSpec) -> dict[str, dict[str, Any]]:
    """The resolved specification in the option-group shape distillers read (complete, not overrides)."""
    groups: dict[str, dict[str, Any]] = {
        "train": dict(spec.train),
        "model": dict(spec.params),
        "data": {"split": spec.data.split, "split_seed": spec.data.split_seed},
    }
    if spec.distill:
        groups[spec.distill] = dict(spec.distill_options)
    return groups
