"""`diagnose(run_dir)`: for a finished run, whether each distillation method's premise holds, and how to
show it (markdown, a rich table).

The result is JSON-able, with a stable schema (SCHEMA = 1):

    {"schema": 1,
     "run": "<run folder>", "model": "<backbone>", "task": "topk" | "next-item",
     "dataset": "<dataset name>", "distill": ["<method>", ...],     # the run's own methods, [] when plain
     "methods": {
        "ckd" | "sgfd" | "cdl": {
            "verdict": "likely to help" | "unlikely" | "cannot tell" | "not applicable",
            "quantity": "<what value measures>",
            "value": float | null,           # null: not measured (see reason)
            "threshold": float | null,       # "likely to help" iff value > threshold (diagnose.thresholds)
            "reason": "<one line: why this verdict>",
            "details": {...}                 # the method's measurements (diagnose.reliance, .semantics,
        }}}                                  # .forgetting); {} when not applicable

Floats that are not finite are written as null. A method that cannot apply to the run (CKD on one
modality or a next-item model, SGFD without labels or without a feature extractor, CDL on a top-K model)
is "not applicable" with the reason; one that applies but whose quantity cannot be measured (no uni-modal
teacher, a model without modality tables) is "cannot tell" with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from distillrec.diagnose import forgetting, reliance, semantics
from distillrec.diagnose.thresholds import thresholds, verdict
from distillrec.distill.registry import check_distill
from distillrec.errors import ConfigError
from distillrec.experiment.api import Run, load_run

SCHEMA = 1
METHODS = ("ckd", "sgfd", "cdl")
QUANTITIES = {"ckd": reliance.QUANTITY, "sgfd": semantics.QUANTITY, "cdl": forgetting.QUANTITY}
THRESHOLDS = thresholds(QUANTITIES)


def _entry(method: str, value: float | None, reason: str, details: dict[str, Any]) -> dict[str, Any]:
    t = THRESHOLDS[method].value
    v = verdict(value, t)
    if v != "cannot tell":
        relation = ">" if v == "likely to help" else "<="
        reason = f"{QUANTITIES[method].split(':')[0]} {value:.4g} {relation} {t:.4g}" + (
            f"; {reason}" if reason else ""
        )
    return {
        "verdict": v,
        "quantity": QUANTITIES[method],
        "value": value,
        "threshold": t,
        "reason": reason,
        "details": details,
    }


def _not_applicable(method: str, reason: str) -> dict[str, Any]:
    return {
        "verdict": "not applicable",
        "quantity": QUANTITIES[method],
        "value": None,
        "threshold": THRESHOLDS[method].value,
        "reason": reason,
        "details": {},
    }


def _refusal(method: str, run: Run, own_params: bool = True) -> str | None:
    """Why `method` cannot run on this run's backbone (its task, its capabilities with the run's own
    parameters, or with any where `own_params` is False), or None."""
    groups = {"model": run.config["params"]} if own_params else {}
    try:
        check_distill([method], run.config["model"], groups)
    except ConfigError as exc:
        return str(exc)
    return None


def diagnose_ckd(run: Run, train_teachers: bool = False) -> dict[str, Any]:
    why = _refusal("ckd", run)
    if why is None and len(run.dataset.modalities) < 2:
        why = f"CKD balances modalities; dataset {run.dataset.name!r} has {run.dataset.modalities or 'none'}"
    if why is not None:
        return _not_applicable("ckd", why)
    d = reliance.modality_reliance(run, train_teachers=train_teachers)
    missing = [m for m, e in d["modalities"].items() if e["teacher"] is None]
    reason = (
        f"no cached uni-modal teacher for {', '.join(missing)} (--train-teachers, or train_teachers=True in Python, trains it into CKD's cache)"
        if missing
        else "teachers: " + ", ".join(sorted({e["teacher_from"] for e in d["modalities"].values()}))
    )
    return _entry("ckd", d.pop("value"), reason, d)


def diagnose_sgfd(run: Run) -> dict[str, Any]:
    why = _refusal("sgfd", run)
    if why is None and (run.dataset.labels is None or not bool((run.dataset.labels >= 0).any())):
        why = f"dataset {run.dataset.name!r} has no item labels (category_label.npy)"
    if why is not None:
        return _not_applicable("sgfd", why)
    with torch.no_grad():
        extracted = run.model.modality_embeddings(run.features)
    d = semantics.semantic_gap(run.dataset, {m: e.cpu() for m, e in extracted.items()})
    return _entry("sgfd", d.pop("value"), "", d)


def diagnose_cdl(run: Run) -> dict[str, Any]:
    why = _refusal("cdl", run, own_params=False)  # an ID-only input is a setting of the model, not its kind
    if why is not None:
        return _not_applicable("cdl", why)
    if not forgetting.has_modality_tables(run):
        return _entry(
            "cdl",
            None,
            "the model has no modality item tables to forget (ID-only input; modality_input=true adds them); "
            "CDL would add modality knowledge, which this diagnostic does not measure",
            {},
        )
    d = forgetting.modality_forgetting(run)
    return _entry("cdl", d.pop("value"), f"measured from {d['from']}", d)


def diagnose(run_dir: Path | str, train_teachers: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Each method's verdict for the finished run in `run_dir` (plain or distilled); the module docstring
    gives the schema. `train_teachers`: train CKD's missing uni-modal teachers (into CKD's cache, as a CKD
    run would) instead of answering "cannot tell"."""
    run = load_run(run_dir, device=device)
    methods = {
        "ckd": diagnose_ckd(run, train_teachers),
        "sgfd": diagnose_sgfd(run),
        "cdl": diagnose_cdl(run),
    }
    return _jsonable(
        {
            "schema": SCHEMA,
            "run": str(run.run_dir),
            "model": run.config["model"],
            "task": run.model.task,
            "dataset": run.dataset.name,
            "distill": list(run.metrics.get("distill", []) or []),
            "methods": methods,
        }
    )


def _jsonable(x: Any) -> Any:
    """Plain JSON types: floats that are not finite become None, tuples lists, numpy scalars Python ones."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if hasattr(x, "item"):  # numpy / torch scalars
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per method: method, verdict, quantity, value, threshold, reason."""
    return [
        [m, e["verdict"], e["quantity"], _fmt(e["value"]), _fmt(e["threshold"]), e["reason"]]
        for m, e in result["methods"].items()
    ]


HEADER = ["method", "verdict", "quantity", "value", "threshold", "reason"]


def render_markdown(result: dict[str, Any]) -> str:
    """The verdicts as a markdown table under a line naming the run."""
    distill = f" + {'+'.join(result['distill'])}" if result["distill"] else ""
    lines = [
        f"**{result['model']}{distill}** on **{result['dataset']}** ({result['run']})",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(result)]
    return "\n".join(lines) + "\n"


def render_table(result: dict[str, Any]) -> Table:
    """The verdicts as a rich table, for a terminal."""
    distill = f" + {'+'.join(result['distill'])}" if result["distill"] else ""
    table = Table(title=f"{result['model']}{distill} on {result['dataset']}")
    for h in HEADER:
        table.add_column(h, overflow="fold")
    for row in rows(result):
        table.add_row(*row)
    return table
