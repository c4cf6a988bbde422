"""A run folder's files besides the trainer's own: starting it (resolved configuration, environment, split)
and the metrics record written when it finishes. Shared by the Python API and by distillers that train
teachers as ordinary runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distillrec.data.dataset import Dataset
from distillrec.errors import ConfigError
from distillrec.training.checkpoint import read_yaml, write_json, write_npz, write_yaml
from distillrec.training.config import TrainConfig
from distillrec.training.env import environment

if TYPE_CHECKING:
    from distillrec.training.trainer import TrainResult


def refuse_other_configuration(run_dir: Path, config: dict[str, Any]) -> None:
    """A folder that already holds a run of another configuration is never continued, reused or overwritten."""
    if (run_dir / "config.yaml").exists():
        old = read_yaml(
            run_dir / "config.yaml", "the folder's configuration is unreadable: train into another --out"
        )
        if without_location(old) != without_location(config):
            raise ConfigError(f"{run_dir} holds a run with another configuration; choose another --out")


def without_location(config: Any) -> Any:
    """The configuration less where the dataset lies on disk, which (like the folder's name) a run does not depend on."""
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), dict):
        return config
    return {**config, "dataset": {k: v for k, v in config["dataset"].items() if k != "source"}}


def _recorded(run_dir: Path, key: str) -> str | None:
    """One field of the environment a run folder was started on; None where the folder predates the
    record or holds no run."""
    env = run_dir / "env.json"
    if not env.exists():
        return None
    try:
        value = json.loads(env.read_text()).get(key)
    except (OSError, ValueError):
        return None
    return str(value) if value else None


def recorded_content_hash(run_dir: Path) -> str | None:
    """The dataset contents (split, features, labels) a run folder was started on."""
    return _recorded(run_dir, "content_hash")


def recorded_compute(run_dir: Path) -> str | None:
    """The processor kind a run folder was started on (`env.json` is kept on resume, so a finished run read
    again elsewhere keeps where it was made)."""
    return _recorded(run_dir, "compute")


def refuse_other_contents(run_dir: Path, ds: Dataset) -> None:
    """A run is never continued or reused on other contents of its dataset (features or labels regenerated
    under the same name): its configuration and split alone cannot tell."""
    recorded = recorded_content_hash(run_dir)
    if recorded is not None and recorded != ds.content_hash:
        raise ConfigError(
            f"{run_dir} was trained on other contents of dataset {ds.name!r} (hash {recorded}, now "
            f"{ds.content_hash}); remove it or train into another --out"
        )


def start_run_dir(run_dir: Path, config: dict[str, Any], ds: Dataset, device: torch.device) -> None:
    """Create a run folder with its resolved config, environment and split; refuse to mix configurations."""
    refuse_other_configuration(run_dir, config)
    refuse_other_contents(run_dir, ds)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", config)
    write_json(
        run_dir / "env.json",
        {**environment(device), "split_hash": ds.split_hash, "content_hash": ds.content_hash},
    )
    write_npz(run_dir / "split.npz", **ds.split_arrays())


def run_metrics(
    model: str, distill: list[str], ds: Dataset, seed: int, cfg: TrainConfig, result: TrainResult
) -> dict[str, Any]:
    """The record a finished run's `metrics.json` starts from: what ran, on what, and its best-valid results."""
    return {
        "model": model,
        "distill": distill,
        "dataset": ds.name,
        "seed": seed,
        "preset": cfg.preset,
        "split_hash": ds.split_hash,
        "valid_metric": cfg.valid_metric,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 2),
        "valid": result.valid,
        "test": result.test,
    }
