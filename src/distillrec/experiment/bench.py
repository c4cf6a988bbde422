"""Benchmark several models on one dataset: a small grid chosen on validation, then several seeds.

For each model: every point of its YAML `grid:` is trained with the first seed; the point with the best
validation score is kept (test metrics are never looked at for the choice); the remaining seeds are run at
that point. The table gives test metrics at the best-validation epoch, mean ± std over seeds.
"""

from __future__ import annotations

import itertools
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillrec.data.dataset import Dataset
from distillrec.experiment.api import train_one
from distillrec.experiment.results import fmt, mean_std
from distillrec.models.registry import model_class, resolve_params, search_grid

log = logging.getLogger("distillrec.bench")

# What the MMRec toolbox reaches on `scientific` (test Recall@20, its defaults, seed 999; ANCHORS.md).
MMREC_SCIENTIFIC_R20 = {
    "mostpop": 0.082,
    "bprmf": 0.130,
    "vbpr": 0.112,
    "lightgcn": 0.160,
    "mmgcn": 0.150,
    "grcn": 0.169,
    "bm3": 0.169,
    "lattice": 0.181,
    "freedom": 0.182,
    "mgcn": 0.194,
}


@dataclass
class ModelBench:
    model: str
    chosen: dict[str, Any]
    grid: list[dict[str, Any]]
    grid_valid: list[float]
    test: dict[int, dict[str, float]] = field(default_factory=dict)
    valid: dict[int, dict[str, float]] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)


def bench_order(names: list[str]) -> list[str]:
    """Floors first (nothing learned), then learned models; ID-only before feature-based; alphabetical within."""
    def key(name: str) -> tuple[bool, bool, str]:
        cls = model_class(name)
        return (cls.trainable, cls.uses_features, name)

    return sorted(names, key=key)


def grid_points(model: str) -> list[dict[str, Any]]:
    grid = search_grid(model)
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _groups(point: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups = {k: dict(v) for k, v in extra.items()}
    groups.setdefault("train", {})
    groups.setdefault("data", {})
    groups["model"] = dict(groups.get("model", {}))
    for key, value in point.items():  # "train.lr" in a grid is a training setting, any other key a model's
        group, _, name = key.rpartition(".")
        groups[group or "model"][name] = value
    return groups


def bench_model(
    model: str,
    dataset: Dataset,
    seeds: list[int],
    out: Path,
    extra: dict[str, dict[str, Any]] | None = None,
    device: str = "auto",
    resume: bool = True,
) -> ModelBench:
    extra = extra or {}
    points = grid_points(model)
    valid_metric = None
    scores = []
    first = {}
    for point in points:
        r = train_one(model, dataset, seeds[0], _groups(point, extra), out, device, resume=resume, quiet=True)
        valid_metric = r.metrics["valid_metric"]
        scores.append(r.metrics["valid"].get(valid_metric, 0.0))
        first[len(scores) - 1] = r
        log.info("%s %s: valid %s %.4f", model, point or "defaults", valid_metric, scores[-1])
    best = max(range(len(points)), key=lambda i: scores[i])
    chosen = points[best]
    result = ModelBench(model, chosen, points, scores)
    for seed in seeds:
        r = first[best] if seed == seeds[0] else train_one(
            model, dataset, seed, _groups(chosen, extra), out, device, resume=resume, quiet=True
        )
        result.test[seed] = r.metrics["test"]
        result.valid[seed] = r.metrics["valid"]
        result.epochs[seed] = r.metrics["best_epoch"]
        result.seconds[seed] = r.metrics["seconds"]
    return result


def backbones_markdown(results: list[ModelBench], dataset: Dataset, seeds: list[int], preset: str, command: str) -> str:
    ks = (10, 20)
    lines = [
        f"# Backbones on `{dataset.name}`",
        "",
        f"Written by `{command}`.",
        "",
        f"Dataset: {dataset.n_users:,} users, {dataset.n_items:,} items, {dataset.train.nnz:,} / {dataset.valid.nnz:,} / "
        f"{dataset.test.nnz:,} train / valid / test pairs; modalities "
        + ", ".join(f"{m} ({d}-d)" for m, d in dataset.feature_dims.items())
        + f"; split hash `{dataset.split_hash}`.",
        "",
        f"Protocol: preset `{preset}` (full ranking over all items; "
        + ("training items masked, validation items stay candidates at test" if preset == "mmrec" else "training and validation items masked at test")
        + "); test metrics at the epoch of best validation Recall@20 (patience as configured); "
        f"mean ± std over seeds {', '.join(map(str, seeds))}. Hyperparameters: each model's YAML defaults, with the "
        "points of its `grid:` compared on validation Recall@20 with the first seed only — test metrics play no part "
        "in any choice. "
        + (
            "MMRec R@20: the MMRec toolbox's own implementation on the same split, its defaults, seed 999, one run "
            "(ANCHORS.md); its runs are not deterministic on 2 threads (its MMGCN gave 0.133–0.149 over three runs). "
            if dataset.name == "scientific"
            else ""
        )
        + "s / run: wall seconds on a shared 2-core CPU machine, indicative only.",
        "",
        "| model | " + " | ".join(f"Recall@{k}" for k in ks) + " | " + " | ".join(f"NDCG@{k}" for k in ks)
        + " | MMRec R@20 | best epoch (mean) | s / run | chosen on validation |",
        "|---|" + "---|" * (2 * len(ks)) + "---|---|---|---|",
    ]
    for r in results:
        cells = []
        for name in [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]:
            cells.append(fmt(*mean_std([t[name] for t in r.test.values()])))
        anchor = MMREC_SCIENTIFIC_R20.get(r.model) if dataset.name == "scientific" else None
        chosen = ", ".join(f"{k}={v}" for k, v in r.chosen.items()) or "defaults"
        grid_note = "" if len(r.grid) == 1 else f" (of {len(r.grid)} points)"
        lines.append(
            f"| {r.model} | " + " | ".join(cells) + f" | {anchor if anchor is not None else '–'} | "
            f"{sum(r.epochs.values()) / len(r.epochs):.0f} | {sum(r.seconds.values()) / len(r.seconds):.1f} | "
            f"{chosen}{grid_note} |"
        )
    lines += ["", "## Hyperparameters used", ""]
    for r in results:
        params = resolve_params(r.model, {k: v for k, v in r.chosen.items() if "." not in k}).model_dump()
        cls = model_class(r.model)
        module = sys.modules[cls.__module__]
        desc = ((cls.__doc__ or module.__doc__ or "").strip().splitlines() or [""])[0]
        lines.append(f"- **{r.model}** — {desc} (reference and departures: docstring of `{module.__name__}`) `{params}`")
        if len(r.grid) > 1:
            lines.append(
                "  - grid (validation Recall@20, first seed): "
                + "; ".join(
                    f"{', '.join(f'{k}={v}' for k, v in p.items())}: {s:.4f}" for p, s in zip(r.grid, r.grid_valid, strict=True)
                )
            )
    lines.append("")
    return "\n".join(lines)
