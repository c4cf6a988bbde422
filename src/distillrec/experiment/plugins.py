"""Method-specific report sections, as plug-ins of the one experiment protocol.

A plug-in has two halves: `extract` runs inside the job on a finished report run (it may load the weights)
and returns a small JSON-able summary that the experiment ledger keeps; `section` turns the summaries of a
report's comparisons into markdown lines. So a report can be rewritten from the ledger alone, without the
checkpoints, and a later session can finish an experiment that an earlier one started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Plugin:
    extract: Callable[[Path, dict[str, Any]], dict[str, Any]]
    section: Callable[[list[Any]], list[str]]  # list of experiment.report.Comparison


def _history(run_dir: Path) -> pd.DataFrame | None:
    import pandas as pd

    path = Path(run_dir) / "history.csv"
    return pd.read_csv(path) if path.exists() else None


# ----------------------------------------------------------------------------- CKD
def ckd_extract(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Test Recall@20 of each modality alone inside the model (others mean-ablated), its uni-modal teacher's
    where one is cached, and λ_m averaged over training up to the best epoch (distilled runs)."""
    import torch

    from distillrec.experiment.api import load_run
    from distillrec.experiment.diagnostics import per_modality

    with torch.no_grad():
        rows = per_modality(load_run(run_dir, device="cpu"))
    out: dict[str, Any] = {"full": rows[0]["model"]["recall@20"], "inside": {}, "teacher": {}, "lambda": {}}
    for r in rows[1:]:
        out["inside"][r["modality"]] = r["model"]["recall@20"]
        if r["teacher"]:
            out["teacher"][r["modality"]] = r["teacher"]["recall@20"]
    history = _history(run_dir)
    if history is not None:
        upto = history[history["epoch"] <= max(int(metrics.get("best_epoch", 1)), 1)]
        for col in upto.columns:
            if col.startswith("ckd_lambda_"):
                out["lambda"][col.removeprefix("ckd_lambda_")] = float(upto[col].mean())
    return out


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def ckd_section(comparisons: list[Any]) -> list[str]:
    lines = [
        "## Each modality alone (test Recall@20, other modalities mean-ablated; mean over report seeds)",
        "",
        "| dataset | backbone | arm | modality | inside the plain backbone | inside the distilled backbone | "
        "uni-modal teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    lam_lines = [
        "| dataset | backbone | arm | modality | λ_m (mean ± std over seeds) |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        plain = [e for e in c.plain_extras("ckd") if e]
        dist = [e for e in c.distilled_extras("ckd") if e]
        if not plain or not dist:
            continue
        for m in plain[0]["inside"]:
            teacher = [e["teacher"][m] for e in dist if m in e.get("teacher", {})]
            lines.append(
                f"| {c.dataset} | {c.backbone} | {c.arm} | {m} | {_mean([e['inside'][m] for e in plain]):.4f} | "
                f"{_mean([e['inside'].get(m, np.nan) for e in dist]):.4f} | "
                + (f"{_mean(teacher):.4f}" if teacher else "–")
                + " |"
            )
            lam = [e["lambda"][m] for e in dist if m in e.get("lambda", {})]
            if lam:
                lam_lines.append(
                    f"| {c.dataset} | {c.backbone} | {c.arm} | {m} | {np.mean(lam):.3f} ± {np.std(lam):.3f} |"
                )
    return lines + [
        "",
        "## Counterfactual re-weighting (λ_m averaged over training up to the best epoch)",
        "",
        *lam_lines,
        "",
    ]


# ----------------------------------------------------------------------------- SGFD
def sgfd_extract(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Linear-probe accuracy of the category from each modality's student features."""
    from distillrec.experiment.api import load_run
    from distillrec.experiment.probe import run_probe

    run = load_run(run_dir, device="cpu")
    if run.dataset.labels is None:
        return {}
    return {"probe": run_probe(run)}


def sgfd_section(comparisons: list[Any]) -> list[str]:
    lines = [
        "## Category information in the student features (linear-probe accuracy, mean over report seeds)",
        "",
        "| dataset | backbone | arm | modality | plain | distilled |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        plain = [e["probe"] for e in c.plain_extras("sgfd") if e and "probe" in e]
        dist = [e["probe"] for e in c.distilled_extras("sgfd") if e and "probe" in e]
        if not plain or not dist:
            continue
        for m in plain[0]:
            lines.append(
                f"| {c.dataset} | {c.backbone} | {c.arm} | {m} | {_mean([p[m] for p in plain]):.3f} | "
                f"{_mean([p.get(m, np.nan) for p in dist]):.3f} |"
            )
    return lines + [""]


# ----------------------------------------------------------------------------- CDL
def cdl_extract(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The forgetting diagnostic (correlation of the supervised embeddings' similarities with the
    features') at the first and at the best epoch, where the run logged it."""
    history = _history(run_dir)
    if history is None or history.empty:
        return {}
    best = max(int(metrics.get("best_epoch", 1)), 1)
    at_best = history[history["epoch"] == best]
    out: dict[str, Any] = {}
    for prefix, view in (("forget_corr_", "features"), ("code_corr_", "codes"), ("cdl_corr_", "supervised")):
        for col in history.columns:
            if col.startswith(prefix):
                last = at_best[col].iloc[0] if len(at_best) else history[col].iloc[-1]
                out[f"{col.removeprefix(prefix)} ({view})"] = [float(history[col].iloc[0]), float(last)]
    return {"forgetting": out}


def cdl_section(comparisons: list[Any]) -> list[str]:
    lines = [
        "## Modality forgetting (distilled runs; Pearson r between item-pair similarities)",
        "",
        "features: the modality tables against the raw features; codes: the tables against CDL's target (the "
        "compressed codes); supervised: the projection CDL supervises against that target.",
        "",
        "| dataset | backbone | arm | modality | epoch 1 → best epoch |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        dist = [e["forgetting"] for e in c.distilled_extras("cdl") if e and e.get("forgetting")]
        for m in dist[0] if dist else {}:
            first = _mean([d[m][0] for d in dist if m in d])
            best = _mean([d[m][1] for d in dist if m in d])
            lines.append(f"| {c.dataset} | {c.backbone} | {c.arm} | {m} | {first:.3f} → {best:.3f} |")
    return lines + [""]


PLUGINS: dict[str, Plugin] = {
    "ckd": Plugin(ckd_extract, ckd_section),
    "sgfd": Plugin(sgfd_extract, sgfd_section),
    "cdl": Plugin(cdl_extract, cdl_section),
}


def extract(name: str, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    return PLUGINS[name].extract(Path(run_dir), metrics) if name in PLUGINS else {}
