"""`distillrec report`: one self-contained HTML page (figures inlined as base64 PNG, no external assets) and a
Markdown file beside it (the same text and tables; the figures are in the page only), for

- a run folder (config.yaml, metrics.json, history.csv): the configuration, the learning curves with the best
  epoch marked, the test metrics and, where the run records them, CKD's modality weights λ_m, CDL's forgetting
  diagnostics and the uni-modal teachers beside the student (`per_modality`: each modality evaluated inside
  the model as well, as `distillrec evaluate --per-modality` does);
- a folder of seed runs (seed<k>/): every seed's curves overlaid, mean ± std over seeds;
- an experiment folder (ledger.jsonl): the engine's own report (`distillrec experiment FILE --partial`) for
  each definition that keeps its state there, read from the ledger and a copy of the studies: the folder is
  never written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distillrec.errors import DistillrecError

if TYPE_CHECKING:  # matplotlib and pandas are imported where a figure or a table is made
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from distillrec.experiment.report import Comparison

METRIC_ORDER = ("recall", "ndcg", "precision", "map", "hit", "mrr")
TIME_COLUMNS = ("train_s", "eval_s")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 .2em}"""


# ----------------------------------------------------------------------------- the document
@dataclass
class Doc:
    """A report as a list of parts, rendered once as HTML and once as Markdown."""

    title: str
    parts: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(("heading", text))

    def text(self, text: str) -> None:
        self.parts.append(("text", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", (header, rows)))

    def figure(self, fig: Any, caption: str) -> None:  # a matplotlib Figure
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        self.parts.append(("figure", (base64.b64encode(buf.getvalue()).decode("ascii"), caption)))

    def markdown(self, text: str) -> None:
        self.parts.append(("markdown", text))

    def to_html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, part in self.parts:
            if kind == "heading":
                body.append(f"<h2>{e(part)}</h2>")
            elif kind == "text":
                body.append(f"<p>{e(part)}</p>")
            elif kind == "table":
                header, rows = part
                body.append(
                    "<table><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in header)
                    + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                    + "</table>"
                )
            elif kind == "figure":
                png, caption = part
                body.append(
                    f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{png}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
            else:
                body.append(markdown_to_html(part))
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(self.title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def to_markdown(self, html_name: str) -> str:
        lines = [f"# {self.title}", ""]
        for kind, part in self.parts:
            if kind == "heading":
                lines += [f"## {part}", ""]
            elif kind == "text":
                lines += [part, ""]
            elif kind == "table":
                header, rows = part
                cell = lambda c: str(c).replace("|", "\\|")  # noqa: E731
                lines += [
                    "| " + " | ".join(map(cell, header)) + " |",
                    "|" + "---|" * len(header),
                    *["| " + " | ".join(map(cell, r)) + " |" for r in rows],
                    "",
                ]
            elif kind == "figure":
                lines += [f"*Figure (in {html_name}): {part[1]}*", ""]
            else:
                lines += [part, ""]
        return "\n".join(lines)


def markdown_to_html(text: str) -> str:
    """Markdown as HTML (markdown-it, which rich brings; raw HTML in the text is escaped)."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # pragma: no cover - rich depends on it
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _figure(ncols: int = 1, height: float = 3.4) -> tuple[Figure, np.ndarray]:
    """A figure and its row of `ncols` axes."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    fig = Figure(figsize=(5.4 * ncols, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


# ----------------------------------------------------------------------------- entry point
def write_report(
    path: Path | str,
    out: Path | str | None = None,
    definitions: list[Path] | None = None,
    per_modality: bool = False,
) -> tuple[Path, Path]:
    """Write the report of `path` (a run folder, a folder of seed runs or an experiment folder) to `out`
    (default `<path>/report.html`) and the Markdown beside it; return both paths."""
    path = Path(path)
    kind = folder_kind(path)
    target = Path(out) if out else path / "report.html"
    if target.suffix.lower() not in (".html", ".htm"):
        raise DistillrecError(f"--out {target}: the report is an .html file (the Markdown goes beside it)")
    if kind == "run":
        doc = run_doc(path, per_modality)
    elif per_modality:
        raise DistillrecError("--per-modality applies to one run folder")
    elif kind == "seeds":
        doc = seeds_doc(path, selection_seeds(path, definitions or []))
    else:
        doc = experiment_doc(path, definitions or [])
    md = target.with_suffix(".md")
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, doc.to_html())
    _write(md, doc.to_markdown(target.name))
    return target, md


def folder_kind(path: Path) -> str:
    """'run', 'seeds' or 'experiment'; anything else is refused in one line."""
    if (path / "config.yaml").is_file():
        if not (path / "metrics.json").is_file():
            raise DistillrecError(
                f"{path}: the run has not finished (no metrics.json); resume it with --resume"
            )
        return "run"
    if (path / "ledger.jsonl").is_file():
        return "experiment"
    if path.is_dir() and _seed_dirs(path):
        return "seeds"
    raise DistillrecError(
        f"{path} is not a run folder (config.yaml, metrics.json), a folder of finished "
        "seed runs (seed<k>/) or an experiment folder (ledger.jsonl)"
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- one run
@dataclass
class RunFiles:
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: Any  # a pandas DataFrame, or None for an untrained model (no history.csv)

    @property
    def valid_column(self) -> str:
        return f"valid_{self.metrics['valid_metric']}"

    @property
    def name(self) -> str:
        m = self.metrics
        return f"{m['model']}{''.join('+' + d for d in m.get('distill', []))} on {m['dataset']}"


def read_run(path: Path) -> RunFiles:
    import pandas as pd

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
        history = pd.read_csv(path / "history.csv") if (path / "history.csv").is_file() else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DistillrecError(f"{path}: a run file is unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(metrics, dict) or "test" not in metrics:
        raise DistillrecError(f"{path}: not a distillrec run (config.yaml or metrics.json malformed)")
    return RunFiles(path, config, metrics, history)


def column_families(columns: list[str]) -> dict[str, list[str]]:
    """History columns by what they measure: loss terms, validation metrics, timing, CKD's λ_m, forgetting."""
    fam: dict[str, list[str]] = {"loss": [], "valid": [], "time": [], "lambda": [], "forgetting": []}
    for c in columns:
        if c == "epoch":
            continue
        key = (
            "valid"
            if c.startswith("valid_")
            else "time"
            if c in TIME_COLUMNS
            else "lambda"
            if c.startswith("ckd_lambda_")
            else "forgetting"
            if "_corr_" in c
            else "loss"
        )
        fam[key].append(c)
    return fam


def _flatten(value: Any, prefix: str = "") -> list[list[str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return [[prefix.rstrip("."), str(value)]]


def metric_grid(values: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    """metric@K values as a table: one row per metric, one column per K."""
    parsed = [(k.split("@")[0], int(k.split("@")[1])) for k in values if re.fullmatch(r"[\w]+@\d+", k)]
    names = sorted({n for n, _ in parsed}, key=lambda n: _metric_key(f"{n}@0"))
    ks = sorted({k for _, k in parsed})
    rows = [[n, *[f"{values[f'{n}@{k}']:.4f}" if f"{n}@{k}" in values else "–" for k in ks]] for n in names]
    return ["metric", *[f"@{k}" for k in ks]], rows


def _mark_best(ax: Any, best: int) -> None:
    """The best-validation epoch as a dashed line; whole epochs on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if best > 0:
        ax.axvline(best, color="0.5", linestyle="--", linewidth=1, label=f"best epoch {best}")


def run_doc(path: Path, per_modality: bool = False) -> Doc:
    run = read_run(path)
    m = run.metrics
    best, vm = int(m["best_epoch"]), m["valid_metric"]
    doc = Doc(f"{run.name}, seed {m['seed']}")
    if best > 0:
        score = m["valid"].get(vm, math.nan)
        doc.text(
            f"Run folder {path}. Best validation {vm} {score:.4f} at epoch {best} "
            f"of {m['epochs_run']} run ({m['seconds']:.1f} s); the test metrics are the best-validation "
            f"epoch's ({_protocol(m)})."
        )
    else:
        doc.text(
            f"Run folder {path}. The model has no epochs to train: its metrics are those of its fitted "
            f"state ({m['seconds']:.1f} s, {_protocol(m)})."
        )
    doc.heading("Configuration")
    doc.table(["option", "value"], _flatten(run.config))
    doc.heading("Learning curves")
    hist = run.history
    if hist is None or hist.empty:
        doc.text("No per-epoch history: the model has nothing to train (its test metrics are below).")
    else:
        fam = column_families(list(hist.columns))
        fig, (ax_loss, ax_valid) = _figure(2)
        for c in fam["loss"]:
            ax_loss.plot(hist["epoch"], hist[c], label=c)
        if fam["loss"] and (hist[fam["loss"]].dropna() > 0).all().all():
            ax_loss.set_yscale("log")
        _mark_best(ax_loss, best)
        ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss")
        ax_loss.legend(fontsize=8)
        if run.valid_column in hist:
            v = hist[["epoch", run.valid_column]].dropna()
            ax_valid.plot(v["epoch"], v[run.valid_column], marker=".", label=f"valid {vm}")
            at = v[v["epoch"] == best]
            if len(at):
                ax_valid.plot(at["epoch"], at[run.valid_column], "r*", markersize=12, label="best")
        _mark_best(ax_valid, best)
        ax_valid.set(xlabel="epoch", ylabel=vm, title=f"validation {vm}")
        ax_valid.legend(fontsize=8)
        doc.figure(
            fig,
            f"Training loss terms and validation {vm} per epoch; the dashed line marks the "
            f"best-validation epoch ({best}), whose weights give the test metrics.",
        )
    at = f" (epoch {best})" if best > 0 else ""
    doc.heading(f"Test metrics{at}")
    doc.table(*metric_grid(m["test"]))
    doc.heading(f"Validation metrics{at}")
    doc.table(*metric_grid(m["valid"]))
    if hist is not None and not hist.empty:
        fam = column_families(list(hist.columns))
        if fam["lambda"]:
            doc.heading("CKD's modality weights λ_m")
            doc.figure(
                _curves(hist, fam["lambda"], best, "λ_m"),
                "CKD's counterfactual weight of each modality's distillation term, the epoch mean of "
                "its per-batch values (the weights of a batch sum to 1).",
            )
        if fam["forgetting"]:
            doc.heading("Modality forgetting")
            doc.figure(
                _curves(hist, fam["forgetting"], best, "Pearson r"),
                "Pearson correlation, over a fixed sample of item pairs, of the pair similarities in "
                "the learnt tables with the raw features' (forget_corr), with the compressed codes' "
                "(code_corr, cdl_corr), and of the ID table with the raw features' (id_corr).",
            )
    _modality_section(doc, run, per_modality)
    return doc


def _protocol(metrics: dict[str, Any]) -> str:
    """How the metrics were measured: the top-K preset, or the next-item protocol."""
    from distillrec.models.registry import model_class

    try:
        next_item = model_class(metrics["model"]).task == "next-item"
    except DistillrecError:  # a model no longer registered
        next_item = False
    return "next-item protocol: full ranking" if next_item else f"{metrics.get('preset', '')} preset"


def _curves(hist: pd.DataFrame, columns: list[str], best: int, ylabel: str) -> Figure:
    """One line per column; `<kind>_corr_<modality>` columns: a colour per kind, a line style per modality."""
    fig, (ax,) = _figure(1)
    kinds = list(dict.fromkeys(c.split("_corr_")[0] for c in columns))
    modalities = list(dict.fromkeys(c.split("_corr_")[-1] for c in columns))
    for k, c in enumerate(columns):
        if "_corr_" in c:
            kind, modality = c.split("_corr_", 1)
            dash = ("-", "--", ":", "-.")[modalities.index(modality) % 4]
            style = {"color": f"C{kinds.index(kind)}", "linestyle": dash}
        else:
            style = {"color": f"C{k}"}
        ax.plot(hist["epoch"], hist[c], label=c, **style)
    _mark_best(ax, best)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.legend(fontsize=8)
    return fig


def _modality_section(doc: Doc, run: RunFiles, per_modality: bool) -> None:
    """The uni-modal teachers a CKD run recorded (their test metrics), beside the student; with
    `per_modality`, each modality alone inside the model too (computed now, from the best weights)."""
    vm, test = run.metrics["valid_metric"], run.metrics["test"]
    rows: list[tuple[str, float | None, float | None]] = []  # modality, inside the model, teacher
    if per_modality:
        rows = _per_modality_rows(run.path, vm)
    else:
        teachers = (run.metrics.get("distill_info") or {}).get("teachers") or {}
        for modality, tdir in teachers.items():
            rows.append((modality, None, _teacher_metric(tdir, vm)))
        if not any(t is not None for _, _, t in rows):
            return
    doc.heading("Per modality")
    fig, (ax,) = _figure(1)
    names = [r[0] for r in rows]
    xs = range(len(rows))
    inside = [r[1] if r[1] is not None else math.nan for r in rows]
    teacher = [r[2] if r[2] is not None else math.nan for r in rows]
    if per_modality:
        ax.bar([x - 0.2 for x in xs], inside, width=0.4, label="the model, this modality alone")
    ax.bar([x + 0.2 if per_modality else x for x in xs], teacher, width=0.4, label="uni-modal teacher")
    ax.axhline(test[vm], color="k", linestyle="--", linewidth=1, label="the model, all modalities")
    ax.set_xticks(list(xs), names)
    ax.set(ylabel=f"test {vm}")
    ax.legend(fontsize=8)
    doc.figure(
        fig,
        f"Test {vm} of each modality: its uni-modal teacher (a cached run of the same backbone "
        "with the other modalities mean-ablated)"
        + (", and the model with only that modality (the others mean-ablated)" if per_modality else "")
        + ", beside the model with all modalities.",
    )
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    if per_modality:
        doc.table(
            ["modality", f"the model ({vm})", f"uni-modal teacher ({vm})"],
            [["all", f"{test[vm]:.4f}", "–"], *[[n, fmt(i), fmt(t)] for n, i, t in rows]],
        )
    else:
        doc.table(
            ["modality", f"uni-modal teacher ({vm})"],
            [["all (the model)", f"{test[vm]:.4f}"], *[[n, fmt(t)] for n, _, t in rows]],
        )
    if any(t is None for _, _, t in rows):
        doc.text(
            "– : no cached uni-modal teacher found for that modality (a CKD run trains and caches them)."
        )


def _teacher_metric(tdir: str | None, metric: str) -> float | None:
    try:
        return float(json.loads((Path(tdir) / "metrics.json").read_text())["test"][metric]) if tdir else None
    except (OSError, ValueError, KeyError):
        return None


def _per_modality_rows(path: Path, metric: str) -> list[tuple[str, float | None, float | None]]:
    import torch

    from distillrec.experiment.api import load_run
    from distillrec.experiment.diagnostics import per_modality

    run = load_run(path)
    if run.model.task != "topk" or not run.dataset.modalities:
        raise DistillrecError(f"{path}: --per-modality needs a top-K run with item features")
    with torch.no_grad():
        rows = per_modality(run, "test")[1:]  # the first row is the whole model
    return [(r["modality"], r["model"][metric], r["teacher"][metric] if r["teacher"] else None) for r in rows]


# ----------------------------------------------------------------------------- seed runs
def _seed_dirs(path: Path) -> list[Path]:
    found = [p for p in path.iterdir() if re.fullmatch(r"seed\d+", p.name) and (p / "metrics.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[4:]))


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k != "seed"}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k != "seed"}
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = {k: v for k, v in out["dataset"].items() if k != "source"}
    if isinstance(out.get("distill"), dict):  # a teacher seed left to the default follows the seed
        out["distill"] = {
            m: {k: v for k, v in o.items() if k != "teacher_seed"} if isinstance(o, dict) else o
            for m, o in out["distill"].items()
        }
    return out


def selection_seeds(path: Path, definitions: list[Path]) -> tuple[set[int], str] | None:
    """The seeds of `path`'s runs that an experiment used only for selection (never to be reported), when
    `path` lies inside an experiment folder (an ancestor holds ledger.jsonl): the definitions' selection
    seeds when given, else every seed above SELECTION_SEED_BASE (where the engine numbers them)."""
    from distillrec.experiment.definition import SELECTION_SEED_BASE, load_definition
    from distillrec.experiment.results import in_experiment

    if not in_experiment(Path(path)):
        return None
    if definitions:
        seeds = {s for d in definitions for s in load_definition(d).selection_seeds}
        return seeds, f"the selection seeds of {', '.join(str(d) for d in definitions)}"
    seeds = {int(p.name[4:]) for p in _seed_dirs(path) if int(p.name[4:]) > SELECTION_SEED_BASE}
    return (
        seeds,
        f"seeds above {SELECTION_SEED_BASE}, where the experiment engine numbers its selection seeds",
    )


def seeds_doc(path: Path, selection: tuple[set[int], str] | None = None) -> Doc:
    """Every seed run of a folder, overlaid; inside an experiment folder the selection seeds (`selection`:
    the seeds and how they were found) are left out, since an experiment never reports them."""
    from distillrec.experiment.results import mean_std

    dirs = _seed_dirs(path)
    left_out = sorted(int(p.name[4:]) for p in dirs if selection and int(p.name[4:]) in selection[0])
    dirs = [p for p in dirs if int(p.name[4:]) not in left_out]
    if not dirs:
        raise DistillrecError(
            f"{path}: only selection seeds ({', '.join(map(str, left_out))}), nothing to report"
        )
    runs = [read_run(p) for p in dirs]
    base = _without_seed(runs[0].config)
    odd = [r.path.name for r in runs[1:] if _without_seed(r.config) != base]
    if odd:
        raise DistillrecError(
            f"{path}: {', '.join(odd)} ran another configuration than {runs[0].path.name}; "
            "report the runs one by one"
        )
    seeds = [r.metrics["seed"] for r in runs]
    vm = runs[0].metrics["valid_metric"]
    doc = Doc(f"{runs[0].name}, {len(runs)} seeds")
    doc.text(
        f"Folder {path}: seeds {', '.join(map(str, seeds))}. Each seed's test metrics are those of its "
        "own best-validation epoch; mean ± std (sample standard deviation) over seeds."
    )
    if left_out and selection is not None:
        doc.text(
            f"Left out: seeds {', '.join(map(str, left_out))}, which the experiment this folder belongs to "
            f"used for selection only and never reports ({selection[1]})."
        )
    doc.heading("Configuration (every seed)")
    doc.table(["option", "value"], _flatten(base))
    with_history = [r for r in runs if r.history is not None and not r.history.empty]
    if with_history:
        doc.heading("Learning curves")
        fig, (ax_loss, ax_valid) = _figure(2)
        for k, r in enumerate(with_history):
            color, hist = f"C{k}", r.history
            loss = "loss_total" if "loss_total" in hist else "loss"
            if loss in hist:
                ax_loss.plot(hist["epoch"], hist[loss], color=color, label=f"seed {r.metrics['seed']}")
            if r.valid_column in hist:
                v = hist[["epoch", r.valid_column]].dropna()
                ax_valid.plot(v["epoch"], v[r.valid_column], color=color, label=f"seed {r.metrics['seed']}")
                at = v[v["epoch"] == r.metrics["best_epoch"]]
                ax_valid.plot(at["epoch"], at[r.valid_column], "*", color=color, markersize=12)
        ax_loss.set(xlabel="epoch", ylabel="training loss (total)", title="loss")
        ax_valid.set(xlabel="epoch", ylabel=vm, title=f"validation {vm} (★ best epoch)")
        for ax in (ax_loss, ax_valid):
            ax.legend(fontsize=8)
        doc.figure(
            fig,
            f"Every seed's training loss and validation {vm}; a star marks each seed's "
            "best-validation epoch.",
        )
    doc.heading("Test metrics over seeds")
    names = sorted(runs[0].metrics["test"], key=_metric_key)
    rows = []
    for name in names:
        vals = [r.metrics["test"].get(name, math.nan) for r in runs]
        mean, std = mean_std(vals)
        rows.append([name, f"{mean:.4f} ± {std:.4f}", *[f"{v:.4f}" for v in vals]])
    doc.table(["metric", "mean ± std", *[f"seed {s}" for s in seeds]], rows)
    doc.heading("Per seed")
    doc.table(
        ["seed", "best epoch", "epochs run", "seconds", f"valid {vm} (best)"],
        [
            [
                str(r.metrics["seed"]),
                str(r.metrics["best_epoch"]),
                str(r.metrics["epochs_run"]),
                f"{r.metrics['seconds']:.1f}",
                f"{r.metrics['valid'].get(vm, math.nan):.4f}",
            ]
            for r in runs
        ],
    )
    return doc


def _metric_key(name: str) -> tuple[int, str, int]:
    base, _, k = name.partition("@")
    return (METRIC_ORDER.index(base) if base in METRIC_ORDER else 99, base, int(k) if k.isdigit() else 0)


# ----------------------------------------------------------------------------- experiments
def experiment_doc(path: Path, definitions: list[Path]) -> Doc:
    """The engine's report for each definition that keeps its state in `path` (given, or found beside it)."""
    from distillrec.experiment.definition import load_definition

    if definitions:
        found = [(Path(f), load_definition(f, {"out": str(path)})) for f in definitions]
    else:
        found = find_definitions(path)
        if not found:
            raise DistillrecError(
                f"{path}: no experiment definition beside it keeps its state there (out:); "
                "give one with --definition FILE.yaml"
            )
    doc = Doc(f"Experiments in {path}")
    doc.text(
        "Each section is the engine's own report, as distillrec experiment FILE --partial writes it, "
        f"rebuilt from the ledger; definitions: {', '.join(str(f) for f, _ in found)}."
    )
    for file, definition in found:
        text, comps = experiment_markdown(path, definition, f"distillrec experiment {file} --partial")
        if comps:
            doc.figure(
                _forest(comps, definition.alpha),
                f"{definition.name}: relative change of the distilled arm against the tuned plain "
                "backbone (test), with the per-user bootstrap 95% interval; filled: significant after "
                f"Holm's correction (α = {definition.alpha}).",
            )
        doc.markdown(text)
    return doc


def find_definitions(path: Path) -> list[tuple[Path, Any]]:
    """Definitions (YAML files in the folder or its parent) whose `out`, resolved from the working directory
    as the engine resolves it, is this folder."""
    from distillrec.experiment.definition import load_definition

    found = []
    for file in sorted({*path.glob("*.y*ml"), *path.parent.glob("*.y*ml")}):
        try:
            definition = load_definition(file)
        except DistillrecError:
            continue  # not an experiment definition
        if definition.out and definition.state_dir().resolve() == path.resolve():
            found.append((file, definition))
    return found


def experiment_markdown(path: Path, definition: Any, command: str) -> tuple[str, list[Any]]:
    """`report.markdown` of a definition's finished part (`report.finished_part`)."""
    from distillrec.experiment.report import finished_part, markdown

    result, comps = finished_part(path, definition)
    return markdown(result, comps, command), comps


def _forest(comps: list[Comparison], alpha: float) -> Figure:
    fig, (ax,) = _figure(1, height=0.45 * len(comps) + 1.2)
    for y, c in enumerate(reversed(comps)):
        rel, ci, p = c.stats["relative_change"], c.stats.get("ci95_relative"), c.stats.get("p_holm")
        filled = p is not None and p < alpha
        if ci:
            ax.plot([ci[0], ci[1]], [y, y], color="C0")
        ax.plot([rel], [y], "o", color="C0", markerfacecolor="C0" if filled else "white")
    ax.axvline(0, color="k", linewidth=1)
    from distillrec.experiment.report import several_datasets, where

    datasets = several_datasets(c.dataset for c in comps)
    ax.set_yticks(
        range(len(comps)),
        [f"{c.backbone} + {c.arm}{where(c.dataset, datasets)}" for c in reversed(comps)],
    )
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:+.0%}")
    ax.set(xlabel=f"relative change of test {comps[0].metric}")
    return fig
