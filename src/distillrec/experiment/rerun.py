"""Train a finished run again from its own folder and set the new metrics beside the stored ones.

A reviewer's check that a reported number comes from the code as committed: the run's `config.yaml` is
resolved again (so options the code has gained since take their defaults, and a changed specification
shows as a different key), trained on the dataset the run names with the split it recorded, with the number
of torch threads its `env.json` recorded (on CPU, the same seed and thread count give the same numbers on the
same kind of processor; on another, whose vector unit rounds otherwise, a training path drifts), and every
validation and test metric is compared with the run's `metrics.json`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distillrec.errors import DistillrecError
from distillrec.experiment.spec import RunSpec, read_run_config, resolve_spec
from distillrec.training.checkpoint import read_json
from distillrec.training.env import torch_threads
from distillrec.training.rundir import recorded_compute

RETRAIN = "the run folder is damaged; it cannot be trained again from it"


@dataclass
class Rerun:
    """The stored and the new metrics of one run, side by side."""

    original: Path
    rerun: Path | None
    spec_key: str
    original_key: str | None
    rows: list[tuple[str, float, float]] = field(default_factory=list)  # (split/metric, stored, new)
    tolerance: float = 0.0
    compute: tuple[str | None, str | None] = (None, None)  # the processor kind the run recorded, and this one

    @property
    def other_processor(self) -> bool:
        """The run was trained on another kind of processor (or did not record one): bit-exact agreement is
        then not to be expected, since a model's training path follows its processor's rounding."""
        return self.compute[0] != self.compute[1]

    @property
    def largest_difference(self) -> float:
        return max((abs(a - b) for _, a, b in self.rows), default=0.0)

    @property
    def reproduced(self) -> bool:
        return bool(self.rows) and all(
            math.isclose(a, b, rel_tol=0.0, abs_tol=self.tolerance) for _, a, b in self.rows
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "original": str(self.original),
            "rerun": str(self.rerun) if self.rerun else None,
            "spec_key": self.spec_key,
            "original_spec_key": self.original_key,
            "tolerance": self.tolerance,
            "compute": {"stored": self.compute[0], "rerun": self.compute[1]},
            "reproduced": self.reproduced,
            "largest_difference": self.largest_difference,
            "metrics": [{"metric": m, "stored": a, "rerun": b} for m, a, b in self.rows],
        }


def run_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.yaml, refused in one line unless it has the shape `RunSpec.as_config` writes."""
    return read_run_config(run_dir / "config.yaml", RETRAIN)


def spec_of_run(run_dir: Path, cfg: dict[str, Any] | None = None) -> RunSpec:
    """The specification a run folder's config.yaml (`cfg`, when already read) resolves to with the code as
    it is now."""
    cfg = run_config(run_dir) if cfg is None else cfg
    distill = cfg.get("distill") or {}
    if len(distill) > 1:
        raise DistillrecError(
            f"{run_dir / 'config.yaml'}: names {len(distill)} distillers; a run has at most one"
        )
    method = next(iter(distill), None)
    data = cfg["dataset"]
    assignments: dict[str, Any] = {
        **{f"model.{k}": v for k, v in cfg["params"].items()},
        **{f"train.{k}": v for k, v in cfg["train"].items() if k != "seed"},
        **({f"{method}.{k}": v for k, v in distill[method].items()} if method else {}),
        "data.split": data.get("split", "auto"),
        "data.split_seed": data.get("split_seed", 0),
    }
    seed = int(cfg.get("seed", cfg["train"].get("seed", 999)))
    return resolve_spec(cfg["model"], data["name"], assignments, method, seed, source=data.get("source", ""))


def rerun(
    run_dir: Path | str,
    out: Path | str = "runs/rerun",
    device: str = "auto",
    threads: int | None = None,
    tolerance: float = 0.0,
) -> Rerun:
    """Train `run_dir`'s run again under `out` and compare; `threads` None: the count the run recorded."""
    from distillrec.experiment.api import dataset_for, train_one

    run_dir = Path(run_dir)
    stored = read_json(run_dir / "metrics.json", "the run has not finished: nothing to compare with")
    cfg = run_config(run_dir)
    spec = spec_of_run(run_dir, cfg)
    if spec.run_dir(out).resolve() == run_dir.resolve():
        raise DistillrecError(f"{run_dir} is the run itself; train the rerun under another --out")
    ds = dataset_for(spec)
    recorded = cfg["dataset"].get("split_hash")
    if recorded and ds.split_hash != recorded:
        raise DistillrecError(
            f"{run_dir}: the dataset {spec.data.name!r} now splits differently (hash {ds.split_hash}, the run's "
            f"{recorded}); the numbers cannot be compared"
        )
    env = read_json(run_dir / "env.json", RETRAIN) if (run_dir / "env.json").exists() else {}
    with torch_threads(int(threads or env.get("threads") or torch.get_num_threads())):
        result = train_one(spec, ds, out, device, resume=False, quiet=True)
    rows = [
        (f"{split}/{name}", float(value), float(result.metrics[split][name]))
        for split in ("valid", "test")
        for name, value in stored.get(split, {}).items()
        if name in result.metrics.get(split, {})
    ]
    rows.append(("best_epoch", float(stored["best_epoch"]), float(result.metrics["best_epoch"])))
    compute = (env.get("compute"), recorded_compute(result.run_dir) if result.run_dir else None)
    return Rerun(run_dir, result.run_dir, spec.key(), stored.get("spec_key"), rows, tolerance, compute)
