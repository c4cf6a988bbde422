"""Results across runs: mean ± std over seeds, relative change and a paired t-test between two configs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from distillrec.errors import DistillrecError
from distillrec.training.checkpoint import read_json


@dataclass
class ConfigRuns:
    """The finished seeds of one configuration (a folder of seed<k> runs)."""

    label: str
    metrics: dict[int, dict]  # seed -> metrics.json

    def values(self, metric: str, split: str = "test") -> dict[int, float]:
        return {s: m[split][metric] for s, m in self.metrics.items() if metric in m[split]}


def collect(paths: Sequence[Path | str]) -> list[ConfigRuns]:
    """Group run folders by configuration; a folder holding seed<k>/ sub-folders counts as one config."""
    groups: dict[str, dict[int, dict]] = {}
    for raw in paths:
        path = Path(raw)
        found = [path] if (path / "metrics.json").exists() else sorted(path.glob("**/metrics.json"))
        found = [p.parent if p.name == "metrics.json" else p for p in found]
        if not found:
            raise DistillrecError(f"{path}: no finished run (metrics.json) found there")
        for run in found:
            m = read_json(run / "metrics.json", "leave this run out, or retrain it")
            label = str(run.parent) if run.name.startswith("seed") else str(run)
            groups.setdefault(label, {})[int(m.get("seed", 0))] = m
    return [ConfigRuns(label, runs) for label, runs in groups.items()]


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_test(a: dict[int, float], b: dict[int, float]) -> tuple[float, float | None, int]:
    """(relative change of mean b over mean a, paired t-test p-value over shared seeds, n shared)."""
    shared = sorted(set(a) & set(b))
    ma = float(np.mean(list(a.values())))
    mb = float(np.mean(list(b.values())))
    rel = (mb - ma) / ma if ma else float("nan")
    if len(shared) < 2:
        return rel, None, len(shared)
    xa = np.array([a[s] for s in shared])
    xb = np.array([b[s] for s in shared])
    if np.allclose(xa - xb, 0):
        return rel, 1.0, len(shared)
    return rel, float(stats.ttest_rel(xb, xa).pvalue), len(shared)


def format_p(p: float | None) -> str:
    """A p-value as a table shows it: three decimals, scientific below 0.001, 'n/a' without a test."""
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"
