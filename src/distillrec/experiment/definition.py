"""What an experiment is: datasets × backbones × {plain, + each method (and its controls)}, and the protocol's
knobs. Read from `experiments/<name>.yaml` or built from `distillrec experiment` options; validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distillrec.errors import ConfigError, validation_message

SELECTION_SEED_BASE = 1000  # selection seeds given as a count are 1001, 1002, …: never a report seed


class ExperimentDef(BaseModel):
    """Protocol defaults: every backbone tuned on validation with `budget` trials; each distilled arm then
    gets `budget` trials of its own space (the off point included) on top of the tuned backbone while the
    plain arm gets `budget` more of its own; selection scores are means over `selection_seeds`, never
    reported; the chosen points are reported on `seeds`, disjoint from the selection seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str = "experiment"
    datasets: list[str] = Field(default_factory=lambda: ["scientific"], min_length=1)
    backbones: list[str] = Field(min_length=1)
    methods: list[str] = Field(default_factory=list)
    controls: bool = Field(True, description="add each method's control arms")
    budget: int = Field(8, ge=1, description="trials per search stage and arm")
    selection_seeds: list[int] = Field(default_factory=lambda: [1001, 1002], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=2)
    set: dict[str, Any] = Field(default_factory=dict, description="options applied to every run")
    backbone_set: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options for one backbone's runs, both arms (e.g. its modality input)",
    )
    sampler: Literal["auto", "tpe", "grid"] = "auto"
    sampler_seed: int = 0
    out: str | None = Field(None, description="experiment state folder (default runs/experiments/<name>)")
    results: str | None = Field(None, description="markdown document to write")
    title: str | None = None
    executor: Literal["serial", "local", "ray"] = "serial"
    jobs: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"
    ray_address: str | None = None
    anchors: dict[str, float] = Field(default_factory=dict, description="reference figures per backbone")
    anchor_note: str | None = Field(None, description="where the reference figures come from")
    bootstrap: int = Field(10_000, ge=100)
    alpha: float = Field(0.05, gt=0, lt=1)

    @field_validator("selection_seeds", "seeds", mode="before")
    @classmethod
    def _count_or_list(cls, value: Any, info: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            base = SELECTION_SEED_BASE if info.field_name == "selection_seeds" else 0
            return list(range(base + 1, base + value + 1))
        return value

    @model_validator(mode="after")
    def _check(self) -> ExperimentDef:
        shared = sorted(set(self.selection_seeds) & set(self.seeds))
        if shared:
            raise ValueError(f"selection seeds {shared} are also report seeds; the two sets must be disjoint")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("report seeds repeat")
        return self

    def state_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "experiments" / self.name


def load_definition(path: Path | str, overrides: dict[str, Any] | None = None) -> ExperimentDef:
    from distillrec.experiment.spec import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, "experiment file")
    raw.setdefault("name", path.stem)
    return make_definition({**raw, **(overrides or {})}, where=str(path))


def make_definition(values: dict[str, Any], where: str = "experiment") -> ExperimentDef:
    """A validated definition whose models and methods exist and fit together."""
    try:
        definition = ExperimentDef(**values)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_message(exc)}") from None
    from distillrec.distill.registry import check_distill
    from distillrec.models.registry import model_class

    for backbone in definition.backbones:
        model_class(backbone)
        for method in definition.methods:
            check_distill([method], backbone, {})
    return definition
