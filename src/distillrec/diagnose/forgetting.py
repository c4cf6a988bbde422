"""CDL's premise: a next-item model's modality item tables forget, as training goes on, the item-pair
structure of the modality features that CDL would hold them to (its target: the similarities of the
features' compressed codes).

The measure is `distill.forgetting`'s: per modality, the Pearson r over a fixed sample of item pairs
between the tables' pair similarities and CDL's target (`code_corr_<m>`), with, for a CDL run, the curve of
what CDL supervises (its score head's similarities) against the same target (`cdl_corr_<m>`). The
verdict's quantity is the forgetting: the largest drop of `code_corr` over modalities from the first
measured state to the best epoch's. It is read from history.csv where the run logged it (CDL runs, runs
with `--distill forgetting`: first = after epoch 1); otherwise it is measured here from the checkpoint,
first = the initial weights (rebuilt from the run's seed exactly as its trainer built them) and best =
best.pt, with the `forgetting` probe's defaults (cosine, 128-d codes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from distillrec.distill.forgetting import ForgettingDiagnostic, HasCorrelationTables, ProbeOptions
from distillrec.experiment.api import Run
from distillrec.models.registry import build_model
from distillrec.training.trainer import seed_everything

QUANTITY = "forgetting: largest drop, first to best epoch, of r(modality-table similarities, CDL's target)"
TARGET, SUPERVISED, FEATURES = "code_corr_", "cdl_corr_", "forget_corr_"


def curves(history: pd.DataFrame, prefix: str) -> dict[str, list[float]]:
    """Per modality, the column `<prefix><m>` of a history, one value per epoch."""
    return {
        c.removeprefix(prefix): [float(v) for v in history[c]]
        for c in history.columns
        if c.startswith(prefix)
    }


def from_history(history: pd.DataFrame, best_epoch: int) -> dict[str, Any] | None:
    """The forgetting and its curves from a history that logged the diagnostic; None where it did not."""
    target = curves(history, TARGET)
    if not target:
        return None
    row = (
        int((history["epoch"] == best_epoch).to_numpy().argmax())
        if best_epoch in set(history["epoch"])
        else -1
    )
    drops = {m: c[0] - c[row] for m, c in target.items()}
    supervised = curves(history, SUPERVISED)
    return {
        "value": max(drops.values()),
        "from": "history.csv (first = epoch 1)",
        "best_epoch": int(history["epoch"].iloc[row]),
        "drop": drops,
        "target_first_best": {m: [c[0], c[row]] for m, c in target.items()},
        "supervised_first_best": {m: [c[0], c[row]] for m, c in supervised.items()},
        "curves": {"target": target, "supervised": supervised, "features": curves(history, FEATURES)},
    }


def from_checkpoint(run: Run, options: ProbeOptions | None = None) -> dict[str, Any]:
    """The forgetting between the run's initial weights (rebuilt from its seed) and its best weights."""
    probe = ForgettingDiagnostic(run.dataset, options or ProbeOptions(), "cosine", owner="diagnose")
    probe.to(run.device)
    with torch.random.fork_rng():
        seed_everything(int(run.config["seed"]))
        initial = build_model(run.config["model"], run.dataset, run.config["params"]).to(run.device).eval()
    assert isinstance(initial, HasCorrelationTables) and isinstance(run.model, HasCorrelationTables)
    first, best = probe.measure(initial), probe.measure(run.model)
    mods = [k.removeprefix(TARGET) for k in first if k.startswith(TARGET)]
    drops = {m: first[TARGET + m] - best[TARGET + m] for m in mods}
    return {
        "value": max(drops.values()),
        "from": "checkpoint (first = initial weights rebuilt from the run's seed, best = best.pt)",
        "best_epoch": int(run.metrics.get("best_epoch", 0)),
        "drop": drops,
        "target_first_best": {m: [first[TARGET + m], best[TARGET + m]] for m in mods},
        "features_first_best": {m: [first[FEATURES + m], best[FEATURES + m]] for m in mods},
    }


def has_modality_tables(run: Run) -> bool:
    """Whether the model keeps per-modality item tables (what CDL supervises and what could be forgotten)."""
    if not isinstance(run.model, HasCorrelationTables):
        return False
    return "modality" in run.representation().extras


def modality_forgetting(run: Run) -> dict[str, Any]:
    """The forgetting of a finished next-item run with modality tables (see the module docstring)."""
    path = Path(run.run_dir) / "history.csv"
    best = int(run.metrics.get("best_epoch", 0))
    if path.exists():
        found = from_history(pd.read_csv(path), best)
        if found is not None:
            return found
    return from_checkpoint(run)
