"""Results across runs: the finished seeds of each configuration, with their test metrics and per-user values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from distillrec.errors import DistillrecError
from distillrec.training.checkpoint import read_json


@dataclass
class ConfigRuns:
    """The finished seeds of one configuration (a folder of seed<k> runs)."""

    label: str
    metrics: dict[int, dict]  # seed -> metrics.json
    folders: dict[int, Path] = field(default_factory=dict)  # seed -> run folder
    left_out: list[int] = field(default_factory=list)  # an experiment's selection seeds, never reported

    def values(self, metric: str, split: str = "test") -> dict[int, float]:
        return {s: m[split][metric] for s, m in self.metrics.items() if metric in m[split]}

    @cached_property
    def _per_user_files(self) -> list[tuple[Path, np.ndarray, dict[str, np.ndarray]]] | str:
        """Each seed's per-user file, read once (every metric compared comes from it), or why there is none."""
        from distillrec.experiment.api import PER_USER_FILE, read_per_user

        files = []
        for seed in sorted(self.metrics):
            path = self.folders.get(seed, Path()) / PER_USER_FILE
            if seed not in self.folders or not path.exists():
                return f"{self.label}: seed {seed} has no {PER_USER_FILE}"
            files.append((path, *read_per_user(path)))
        return files

    def per_user(self, metric: str) -> tuple[np.ndarray, np.ndarray] | str:
        """[seeds, users] per-user test values of `metric` and the user ids, or why there are none (a run
        without its per-user file, or seeds evaluated on different users)."""
        files = self._per_user_files
        if isinstance(files, str):
            return files
        rows, users = [], None
        for path, u, values in files:
            if metric not in values:
                return f"{path}: no per-user {metric}"
            if users is not None and not np.array_equal(u, users):
                return f"{self.label}: its seeds were evaluated on different test users"
            users = u
            rows.append(values[metric])
        if users is None:
            return f"{self.label}: no finished seed"
        return np.asarray(rows), users


def in_experiment(run: Path) -> bool:
    """Whether a run folder lies inside an experiment's folder (an ancestor holds the engine's ledger)."""
    return any((a / "ledger.jsonl").is_file() for a in run.resolve().parents)


def collect(paths: Sequence[Path | str]) -> list[ConfigRuns]:
    """Group run folders by configuration; a folder holding seed<k>/ sub-folders counts as one config.

    Inside an experiment's folder, the seeds the engine used only for selection (above SELECTION_SEED_BASE)
    are left out and listed in `left_out`: an experiment never reports them, and neither does this."""
    from distillrec.experiment.definition import SELECTION_SEED_BASE

    groups: dict[str, dict[int, dict]] = {}
    folders: dict[str, dict[int, Path]] = {}
    left_out: dict[str, list[int]] = {}
    for raw in paths:
        path = Path(raw)
        found = [path] if (path / "metrics.json").exists() else sorted(path.glob("**/metrics.json"))
        found = [p.parent if p.name == "metrics.json" else p for p in found]
        if not found:
            raise DistillrecError(f"{path}: no finished run (metrics.json) found there")
        for run in found:
            m = read_json(run / "metrics.json", "leave this run out, or retrain it")
            label = str(run.parent) if run.name.startswith("seed") else str(run)
            seed = int(m.get("seed", 0))
            if seed > SELECTION_SEED_BASE and in_experiment(run):
                left_out.setdefault(label, []).append(seed)
                continue
            groups.setdefault(label, {})[seed] = m
            folders.setdefault(label, {})[seed] = run
    for label, seeds in left_out.items():
        if label not in groups:
            raise DistillrecError(
                f"{label}: only the selection seeds {', '.join(map(str, sorted(seeds)))} of an experiment, "
                "which are never reported; give its report seeds"
            )
    return [
        ConfigRuns(label, runs, folders[label], sorted(left_out.get(label, [])))
        for label, runs in groups.items()
    ]


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def format_p(p: float | None) -> str:
    """A p-value as a table shows it: three decimals, scientific below 0.001, 'n/a' without a test."""
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"
