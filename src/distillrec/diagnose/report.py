"""`diagnose(run_dirs)`: for finished runs of one specification, whether each distillation method's premise
holds, and how to show it (markdown, a rich table).

One run's quantity moves between trainings of its specification (CKD's headroom by about a tenth of its
value from seed to seed), so a verdict near its threshold is a draw. Given several runs of one specification
(its seeds; a folder holding seed*/ run folders stands for all of them), each quantity is judged by its mean
over the runs, and the verdict is "cannot tell" when the threshold lies inside the mean's 95% interval
(Student's t over the runs). One run is judged by its own value, with no interval.

The result is JSON-able, with a stable schema (SCHEMA = 2; schema 1 had "run" for the one folder):

    {"schema": 2,
     "runs": ["<run folder>", ...], "model": "<backbone>", "task": "topk" | "next-item",
     "dataset": "<dataset name>", "distill": ["<method>", ...],     # the run's own methods, [] when plain
     "methods": {
        "ckd" | "sgfd" | "cdl": {
            "verdict": "likely to help" | "unlikely" | "cannot tell" | "not applicable",
            "quantity": "<what value measures>",
            "value": float | null,           # the mean over the runs; null: not measured (see reason)
            "values": [float | null, ...],   # each run's, in the order of "runs"
            "interval": [lo, hi] | null,     # the mean's 95% interval; null for one run
            "threshold": float | null,       # "likely to help" iff value > threshold (diagnose.thresholds)
            "reason": "<one line: why this verdict>",
            "details": {...}                 # the method's measurements (diagnose.reliance, .semantics,
        }}}                                  # .forgetting) on the first run; {} when not applicable

Floats that are not finite are written as null. A method that cannot apply to the run (CKD on one
modality or a next-item model, SGFD without labels or without a feature extractor, CDL on a top-K model)
is "not applicable" with the reason; one that applies but whose quantity cannot be measured (no uni-modal
teacher, a model without modality tables) is "cannot tell" with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from distillrec.diagnose import forgetting, reliance, semantics
from distillrec.diagnose.thresholds import mean_interval, thresholds, verdict
from distillrec.distill.registry import check_distill
from distillrec.errors import ConfigError
from distillrec.experiment.api import Run, load_run

SCHEMA = 2
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
        "values": [value],
        "interval": None,
        "threshold": t,
        "reason": reason,
        "details": details,
    }


def _not_applicable(method: str, reason: str) -> dict[str, Any]:
    return {
        "verdict": "not applicable",
        "quantity": QUANTITIES[method],
        "value": None,
        "values": [None],
        "interval": None,
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


def run_folders(paths: Sequence[Path | str] | Path | str) -> list[Path]:
    """The run folders named: a run folder itself, or a folder holding seed*/ run folders (all of them, in
    seed order); one-line error for anything else."""
    out: list[Path] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(p)
        if (path / "config.yaml").is_file() or not path.is_dir():
            out.append(path)  # a run folder, or something load_run refuses with its own message
            continue
        seeds = sorted(
            (d for d in path.glob("seed*") if (d / "config.yaml").is_file() and d.name[4:].isdigit()),
            key=lambda d: int(d.name[4:]),
        )
        out += seeds or [path]
    if len(set(out)) < len(out):
        raise ConfigError(f"a run folder is named twice: {', '.join(str(p) for p in out)}")
    return out


def specification(run: Run) -> dict[str, Any]:
    """The run's resolved configuration without its seed: what runs of one specification share."""
    config = {k: v for k, v in run.config.items() if k != "seed"}
    config["train"] = {k: v for k, v in (config.get("train") or {}).items() if k != "seed"}
    return config


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def combine(method: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's verdict over several runs of one specification: their mean against the threshold, or
    "cannot tell" where the threshold lies inside the mean's 95% interval (or a run's value is missing)."""
    if len(entries) == 1:
        return entries[0]
    first, values = entries[0], [e["value"] for e in entries]
    if first["verdict"] == "not applicable":
        return {**first, "values": values}
    t, n = THRESHOLDS[method].value, len(values)
    base = {**first, "values": values, "interval": None, "value": None, "threshold": t}
    missing = [i for i, v in enumerate(values) if v is None or not math.isfinite(v)]
    if missing:
        reason = next(e["reason"] for i, e in enumerate(entries) if i in missing)
        return {
            **base,
            "verdict": "cannot tell",
            "reason": f"not measured on {len(missing)} of {n} runs: {reason}",
        }
    mean, interval = mean_interval(values)
    lo, hi = interval  # type: ignore[misc]
    name = QUANTITIES[method].split(":")[0]
    spread = f"{name} mean {mean:.4g} over {n} runs (95% interval {lo:.4g} … {hi:.4g})"
    v = verdict(mean, t, interval)
    if v == "cannot tell":
        reason = f"{spread} holds the threshold {t:.4g}"
    else:
        reason = f"{spread} {'>' if v == 'likely to help' else '<='} {t:.4g}"
    return {**base, "verdict": v, "value": mean, "interval": [lo, hi], "reason": reason}


def _diagnose_one(run: Run, train_teachers: bool) -> dict[str, dict[str, Any]]:
    return {
        "ckd": diagnose_ckd(run, train_teachers),
        "sgfd": diagnose_sgfd(run),
        "cdl": diagnose_cdl(run),
    }


def diagnose(
    run_dirs: Sequence[Path | str] | Path | str, train_teachers: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Each method's verdict for finished runs of one specification (plain or distilled: one run folder,
    several, or a folder of seed*/ runs); the module docstring gives the schema and how several runs are
    judged. `train_teachers`: train CKD's missing uni-modal teachers (into CKD's cache, as a CKD run
    would) instead of answering "cannot tell"."""
    folders = run_folders(run_dirs)
    if not folders:
        raise ConfigError("no run folder to diagnose")
    first: Run | None = None  # its model and data name the result; later runs are dropped once diagnosed
    dirs: list[str] = []
    per_run: list[dict[str, dict[str, Any]]] = []
    for folder in folders:
        run = load_run(folder, device=device)
        if first is not None:
            diff = _differences(specification(first), specification(run))
            if diff:
                raise ConfigError(
                    f"{run.run_dir}: not a run of the specification of {first.run_dir} "
                    f"(differs in {', '.join(diff[:5])}); diagnose the runs of one specification together"
                )
        first = first or run
        dirs.append(str(run.run_dir))
        per_run.append(_diagnose_one(run, train_teachers))
    assert first is not None
    return _jsonable(
        {
            "schema": SCHEMA,
            "runs": dirs,
            "model": first.config["model"],
            "task": first.model.task,
            "dataset": first.dataset.name,
            "distill": list(first.metrics.get("distill", []) or []),
            "methods": {m: combine(m, [r[m] for r in per_run]) for m in METHODS},
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


def _value(e: dict[str, Any]) -> str:
    """The value, and over several runs its 95% interval and how many runs."""
    if e.get("interval") is None:
        return _fmt(e["value"])
    lo, hi = e["interval"]
    return f"{_fmt(e['value'])} ({_fmt(lo)} … {_fmt(hi)}, {len(e['values'])} runs)"


def rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per method: method, verdict, quantity, value, threshold, reason."""
    return [
        [m, e["verdict"], e["quantity"], _value(e), _fmt(e["threshold"]), e["reason"]]
        for m, e in result["methods"].items()
    ]


def _runs(result: dict[str, Any]) -> str:
    runs = result["runs"]
    return runs[0] if len(runs) == 1 else f"{len(runs)} runs: {', '.join(runs)}"


HEADER = ["method", "verdict", "quantity", "value", "threshold", "reason"]


def render_markdown(result: dict[str, Any]) -> str:
    """The verdicts as a markdown table under a line naming the run."""
    distill = f" + {'+'.join(result['distill'])}" if result["distill"] else ""
    lines = [
        f"**{result['model']}{distill}** on **{result['dataset']}** ({_runs(result)})",
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
