"""Backbone vs backbone + distillation, over seeds, with the distiller's weights chosen on validation.

For each backbone: the plain backbone (its YAML defaults) is run for every seed; each point of the
distiller's grid is run with the first seed and the point with the best validation score is kept
(test metrics play no part); that point is then run for every seed. Reported: test metrics, mean ± std,
relative change and a paired t-test over seeds.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillrec.data.dataset import Dataset
from distillrec.experiment.api import train_one
from distillrec.experiment.results import fmt, format_p, mean_std, paired_test

log = logging.getLogger("distillrec.report")


@dataclass
class Comparison:
    backbone: str
    distill: str
    chosen: dict[str, Any]
    grid_valid: list[tuple[dict[str, Any], float]]
    base: dict[int, dict] = field(default_factory=dict)  # seed -> metrics.json
    distilled: dict[int, dict] = field(default_factory=dict)
    base_dirs: dict[int, Path] = field(default_factory=dict)
    distilled_dirs: dict[int, Path] = field(default_factory=dict)

    def values(self, which: str, metric: str) -> dict[int, float]:
        runs = self.base if which == "base" else self.distilled
        return {s: m["test"][metric] for s, m in runs.items()}


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, v, strict=True)) for v in itertools.product(*(grid[k] for k in keys))] or [{}]


def compare_backbone(
    backbone: str,
    distill: str,
    dataset: Dataset,
    seeds: list[int],
    grid: dict[str, list[Any]],
    out: Path,
    base_groups: dict[str, dict[str, Any]] | None = None,
    device: str = "auto",
    fixed: dict[str, Any] | None = None,
) -> Comparison:
    """`fixed`: distiller options shared by every distilled run (e.g. the seed CKD trains its teachers with)."""
    base_groups = base_groups or {}
    fixed = fixed or {}

    def groups(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
        g = {k: dict(v) for k, v in base_groups.items()}
        for k in ("train", "model", "data"):
            g.setdefault(k, {})
        g[distill] = {**fixed, **options}
        return g

    plain = {k: dict(v) for k, v in base_groups.items()}
    for k in ("train", "model", "data"):
        plain.setdefault(k, {})
    comparison = Comparison(backbone, distill, {}, [])
    for seed in seeds:
        r = train_one(backbone, dataset, seed, plain, out, device, resume=True, quiet=True)
        comparison.base[seed], comparison.base_dirs[seed] = r.metrics, r.run_dir
    first = {}
    for point in grid_points(grid):
        r = train_one(backbone, dataset, seeds[0], groups(point), out, device, resume=True, quiet=True, distill=[distill])
        score = r.metrics["valid"][r.metrics["valid_metric"]]
        comparison.grid_valid.append((point, score))
        first[tuple(sorted(point.items()))] = r
        log.info("%s+%s %s: valid %.4f", backbone, distill, point, score)
    chosen = max(comparison.grid_valid, key=lambda ps: ps[1])[0]
    comparison.chosen = chosen
    for seed in seeds:
        r = first[tuple(sorted(chosen.items()))] if seed == seeds[0] else train_one(
            backbone, dataset, seed, groups(chosen), out, device, resume=True, quiet=True, distill=[distill]
        )
        comparison.distilled[seed], comparison.distilled_dirs[seed] = r.metrics, r.run_dir
    return comparison


def comparison_table(comparisons: list[Comparison], metrics: tuple[str, ...] = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")) -> list[str]:
    head = "| backbone | metric | backbone | + distillation | change | paired p (n) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for c in comparisons:
        for metric in metrics:
            a, b = c.values("base", metric), c.values("distilled", metric)
            rel, p, n = paired_test(a, b)
            p_txt = format_p(p)
            lines.append(
                f"| {c.backbone} | {metric} | {fmt(*mean_std(list(a.values())))} | {fmt(*mean_std(list(b.values())))} | "
                f"{rel:+.1%} | {p_txt} ({n}) |"
            )
    return lines


def grid_lines(comparisons: list[Comparison]) -> list[str]:
    lines = []
    for c in comparisons:
        pts = "; ".join(f"{', '.join(f'{k}={v}' for k, v in p.items()) or 'defaults'}: {s:.4f}" for p, s in c.grid_valid)
        chosen = ", ".join(f"{k}={v}" for k, v in c.chosen.items()) or "defaults"
        lines.append(f"- **{c.backbone}**: chosen {chosen} — validation Recall@20 per grid point (first seed): {pts}")
    return lines


def verdict(c: Comparison, metric: str = "recall@20", alpha: float = 0.05) -> str:
    """One plain sentence on whether distillation helped this backbone, from the paired test alone."""
    rel, p, n = paired_test(c.values("base", metric), c.values("distilled", metric))
    p_txt = format_p(p)
    if p is not None and p < alpha:
        word = "helps" if rel > 0 else "hurts"
        return f"{word}: {metric} {rel:+.1%}, paired p {p_txt} over {n} seeds (significant at {alpha})"
    if rel > 0:
        return f"no significant gain: {metric} {rel:+.1%}, paired p {p_txt} over {n} seeds"
    return f"does not help: {metric} {rel:+.1%}, paired p {p_txt} over {n} seeds"


def verdict_lines(comparisons: list[Comparison], distiller: str, notes: dict[str, str] | None = None) -> list[str]:
    """One line per backbone: the verdict, then the report's own note on that backbone where it has one."""
    notes = notes or {}
    return [
        f"- **{c.backbone} + {distiller}**: {verdict(c)}{'; ' + notes[c.backbone] if c.backbone in notes else ''}."
        for c in comparisons
    ]


def mean_of(dicts: list[dict[str, float]], metric: str) -> float:
    return float(np.mean([d[metric] for d in dicts])) if dicts else float("nan")
