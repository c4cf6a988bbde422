"""Everything the commands print: tables, summary lines, JSON and TSV, in one place so that a command only
gathers its results and hands them here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np
    from pydantic import BaseModel

    from distillrec.data.dataset import Dataset
    from distillrec.diagnose import VariantResult
    from distillrec.experiment.api import Run, RunResult
    from distillrec.experiment.definition import ExperimentDef
    from distillrec.experiment.engine import ExperimentResult
    from distillrec.experiment.report import Comparison
    from distillrec.experiment.rerun import Rerun
    from distillrec.features.store import FeatureResult

console = Console(width=None if sys.stdout.isatty() else 200)  # no wrapping when piped
REPORT_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def note(text: str) -> None:
    """One line for the reader (rich markup allowed)."""
    console.print(text)


def status(text: str) -> AbstractContextManager[Any]:
    """A spinner with `text` while a step runs."""
    return console.status(text)


def show_json(obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    print(json.dumps(obj, indent=2, default=default))


def metrics_table(
    title: str, rows: list[tuple[str, dict[str, Any]]], metrics: Sequence[str] = REPORT_METRICS
) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, values in rows:
        table.add_row(
            name,
            *[
                values.get(m, "") if isinstance(values.get(m), str) else f"{values.get(m, float('nan')):.4f}"
                for m in metrics
            ],
        )
    return table


def grid_table(title: str, result: dict[str, float]) -> Table:
    """Metrics as rows and cut-offs K as columns: every metric of a run in 80 columns."""
    ks = sorted({int(k.split("@")[1]) for k in result})
    names = list(dict.fromkeys(k.split("@")[0] for k in result))
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in names:
        table.add_row(name, *[f"{result[f'{name}@{k}']:.4f}" if f"{name}@{k}" in result else "" for k in ks])
    return table


# -- train, evaluate, recommend, demo


def show_demo_start(ds: Dataset) -> None:
    console.print(f"[bold]distillrec demo[/bold]: {ds!r}")


def show_demo_run(model: str, m: dict[str, Any]) -> None:
    console.print(
        f"  {model:<12} best epoch {m['best_epoch']:>4}  {m['seconds']:6.1f} s  test recall@20 {m['test']['recall@20']:.4f}"
    )


def show_demo_end(rows: list[tuple[str, dict[str, Any]]], out: Path) -> None:
    console.print(metrics_table("test metrics, scientific (mmrec preset, best-validation epoch)", rows))
    console.print(f"runs written under {out}/ (config.yaml, metrics.json, history.csv, best.pt, env.json)")


def show_resolved_configs(configs: Iterable[tuple[Path, dict[str, Any]]]) -> None:
    """Each run's folder and resolved configuration, as its config.yaml will read."""
    import yaml

    for run_dir, resolved in configs:
        sys.stdout.write(f"# {run_dir}\n{yaml.safe_dump(resolved, sort_keys=False)}")


def _protocol(model: str, metrics: dict[str, Any]) -> str:
    """How a run's test metrics were measured, for table titles."""
    from distillrec.models.registry import model_class

    if model_class(model).task == "next-item":
        return "next-item protocol: full ranking, history not masked"
    return f"{metrics['preset']} preset"


def show_train_results(model: str, methods: list[str], results: list[RunResult]) -> None:
    rows = [
        (
            f"{model}{'+' + '+'.join(methods) if methods else ''} seed {r.metrics['seed']}",
            {
                **r.metrics["test"],
                "best epoch": str(r.metrics["best_epoch"]),
                "seconds": f"{r.metrics['seconds']:.1f}",
            },
        )
        for r in results
    ]
    metrics = (*REPORT_METRICS, "best epoch", "seconds")
    console.print(metrics_table(f"test metrics ({_protocol(model, results[0].metrics)})", rows, metrics))
    for r in results:
        console.print(f"run folder: {r.run_dir}")


def show_per_modality(run_dir: Path, split: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{run_dir}: each modality alone ({split}, others mean-ablated)")
    for col in (
        "modality",
        "recall@20 in model",
        "ndcg@20 in model",
        "recall@20 uni-modal teacher",
        "ndcg@20 teacher",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        t = r["teacher"]
        table.add_row(
            r["modality"],
            f"{r['model']['recall@20']:.4f}",
            f"{r['model']['ndcg@20']:.4f}",
            f"{t['recall@20']:.4f}" if t else "–",
            f"{t['ndcg@20']:.4f}" if t else "–",
        )
    console.print(table)
    if any(r["teacher"] is None for r in rows[1:]):
        console.print(
            "– : no cached uni-modal teacher for this backbone and settings (a CKD run trains them)"
        )


def show_evaluation(run: Run, run_dir: Path, split: str, preset: str, result: dict[str, float]) -> None:
    console.print(grid_table(f"{run.config['model']}, {split} ({preset or run.train_config.preset})", result))
    console.print(f"run folder: {run_dir}")


def show_rerun(result: Rerun) -> None:
    """The headline test metrics, the best epoch and every metric that differs, stored beside new; then
    whether all of them agree (`--json` lists every one)."""
    shown = {f"test/{m}" for m in (*REPORT_METRICS, "hit@10", "hit@20")} | {"best_epoch"}
    table = Table(title=f"{result.original} trained again")
    for col in ("metric", "stored", "rerun", "difference"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, stored, new in result.rows:
        if name in shown or abs(new - stored) > result.tolerance:
            table.add_row(name, f"{stored:.6g}", f"{new:.6g}", f"{new - stored:+.2e}")
    console.print(table)
    if result.original_key and result.original_key != result.spec_key:
        console.print(
            f"the configuration now resolves to specification {result.spec_key}, the run was "
            f"{result.original_key}: the code's options have changed since it ran"
        )
    if result.other_processor:
        made, here = (c or "a processor it did not record" for c in result.compute)
        console.print(
            f"the run was trained on {made}, this one on {here}: kernels that round otherwise set a "
            "training path apart, so figures can differ without a change in the code"
        )
    what = "exactly" if result.tolerance == 0 else f"within {result.tolerance:g}"
    verdict = "reproduced" if result.reproduced else "NOT reproduced"
    console.print(
        f"{verdict} {what}: {len(result.rows)} metrics compared, largest difference "
        f"{result.largest_difference:.2e}; new run folder: {result.rerun}"
    )


def top_k_tsv(run: Run, users: np.ndarray, top: np.ndarray) -> Iterator[str]:
    """One line per user: its id, then its K item ids in rank order (the dataset's own ids when known)."""
    import numpy as np

    user_names = (
        run.dataset.user_tokens if run.dataset.user_tokens is not None else np.arange(run.dataset.n_users)
    )
    item_names = (
        run.dataset.item_tokens if run.dataset.item_tokens is not None else np.arange(run.dataset.n_items)
    )
    for u, row in zip(users.tolist(), top, strict=True):
        yield "\t".join(map(str, [user_names[u], *item_names[row]]))


# -- experiments and their comparisons


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:+.4f}..{ci[1]:+.4f}" if ci else "–"


def show_comparison(
    names: list[str], summary: list[dict[str, Any]], tests: dict[str, dict[str, Any]]
) -> None:
    from distillrec.experiment.results import format_p

    table = Table(title="test metrics, mean ± std over seeds")
    table.add_column("config")
    table.add_column("seeds")
    for m in names:
        table.add_column(m, justify="right")
    for row in summary:
        table.add_row(
            row["config"], str(len(row["seeds"])), *[f"{row[m][0]:.4f} ± {row[m][1]:.4f}" for m in names]
        )
    if tests:
        table.add_row("change (2nd vs 1st)", "", *[f"{tests[m]['relative_change']:+.1%}" for m in names])
        table.add_row(
            "95% CI of the difference",
            "",
            *[_ci(tests[m]["ci95"]) for m in names],
        )
        table.add_row("p (seeds)", "", *[format_p(tests[m]["p_seeds"]) for m in names])
        table.add_row("p (users)", "", *[format_p(tests[m]["p_users"]) for m in names])
        holm_label = f"p (Holm, {len(names)} metric{'' if len(names) == 1 else 's'})"
        table.add_row(holm_label, "", *[format_p(tests[m]["p_holm"]) for m in names])
    console.print(table)
    for row in summary:
        if row["left_out_seeds"]:
            console.print(
                f"{row['config']}: left out the experiment's selection seeds "
                f"{', '.join(map(str, row['left_out_seeds']))}, which are never reported."
            )
    if tests:
        missing = sorted({t["no_users_because"] for t in tests.values() if t["no_users_because"]})
        console.print(
            "p (seeds): paired t-test over the shared seeds (training noise); 95% CI and p (users): per-user "
            "paired bootstrap of the difference (test-set noise); a difference holds only if both do, so Holm "
            "adjusts the larger p over the metrics shown."
            + (f" No per-user figures: {'; '.join(missing)}." if missing else "")
            + " The runs are taken as given: nothing here checks that both configurations were tuned alike on "
            "validation, or that their seeds were not used to choose them; `distillrec experiment` does both."
        )


def show_experiment(definition: ExperimentDef, result: ExperimentResult, comps: list[Comparison]) -> None:
    """Plain against distilled per backbone and arm, each tuned backbone's choice, and what did not finish."""
    from distillrec.experiment.results import format_p

    table = Table(title=f"{definition.name}: plain vs distilled (test {comps[0].metric if comps else ''})")
    for col in ("backbone", "arm", "plain", "distilled", "change", "95% CI", "p (Holm)"):
        table.add_column(col)
    for c in comps:
        ci = c.stats["ci95"]
        table.add_row(
            c.backbone,
            c.arm,
            f"{c.stats and sum(c.values('plain').values()) / max(1, len(c.values('plain'))):.4f}",
            f"{sum(c.values('distilled').values()) / max(1, len(c.values('distilled'))):.4f}",
            f"{c.stats['relative_change']:+.1%}",
            f"{ci[0]:+.4f}..{ci[1]:+.4f}" if ci else "–",
            format_p(c.stats["p_holm"]),
        )
    if comps:
        console.print(table)
    for b in result.backbones:
        vals = [r["metrics"]["test"][b.metric] for r in b.plain.records if r]
        console.print(
            f"{b.dataset}/{b.backbone}: tuned {b.metric} {sum(vals) / max(1, len(vals)):.4f} "
            f"({len(vals)} seeds), chosen {b.plain.point or 'defaults'}"
        )
    for f in result.failures:
        console.print(f"[red]failed twice[/red]: {f}")
    for p in result.pending:
        console.print(f"[yellow]not finished[/yellow]: {p}")
    if definition.results:
        console.print(f"wrote {definition.results}")


# -- what is known: datasets, models, options


def show_datasets(summaries: list[dict[str, Any]]) -> None:
    table = Table(title="datasets")
    for col in ("name", "users", "items", "train", "valid", "test", "modalities", "labels", "format", "path"):
        table.add_column(col)
    for s in summaries:
        if "error" in s:
            table.add_row(str(s["name"]), *["-"] * 7, str(s.get("format", "?")), f"{s['path']}: {s['error']}")
            continue
        mods = ", ".join(f"{m} {d}" for m, d in s.get("modalities", {}).items()) or "-"
        table.add_row(
            str(s["name"]),
            str(s["users"]),
            str(s["items"]),
            str(s["train"]),
            str(s["valid"]),
            str(s["test"]),
            mods,
            str(s.get("labels", 0)),
            str(s.get("format", "")),
            str(s.get("path", "")),
        )
    console.print(table)


def show_models(rows: list[tuple[str, str, bool, dict[str, Any]]]) -> None:
    """(name, task, uses features, default hyperparameters) per model."""
    table = Table(title="models")
    for col in ("name", "task", "features", "defaults"):
        table.add_column(col)
    for name, task, uses_features, defaults in rows:
        table.add_row(
            name,
            task,
            "yes" if uses_features else "no",
            ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-",
        )
    console.print(table)


def _field_rows(model_cls: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(name, default, description) of each field of a typed option group."""
    rows = []
    for name, field in model_cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append((name, "required" if field.is_required() else repr(default), field.description or ""))
    return rows


def show_options(groups: list[tuple[str, type[BaseModel]]]) -> None:
    """One table per option group (title, pydantic class): each option, its default and its meaning."""
    for title, model_cls in groups:
        table = Table(title=title, title_justify="left")
        for col in ("option", "default", "meaning"):
            table.add_column(col)
        for row in _field_rows(model_cls):
            if model_cls.__name__ == "DataSpec" and row[0] in ("name", "source"):
                continue
            if model_cls.__name__ == "TrainConfig" and row[0] == "seed":
                row = (row[0], row[1], "the run's seed (--seeds sets it per run)")
            table.add_row(*row)
        console.print(table)


# -- feature files


def show_features_written(result: FeatureResult) -> None:
    console.print(
        f"wrote {result.path}: {result.n_items} items × {result.dim} "
        f"({result.model}, {result.device}, {result.seconds:.1f} s)"
    )
    if result.mask_path is not None:
        console.print(
            f"{result.n_items - result.n_with_data} items without data have zero rows; "
            f"{result.mask_path} marks the items with data"
        )


# -- diagnosis and dataset variants


def show_diagnosis(result: dict[str, Any]) -> None:
    from distillrec.diagnose import render_table

    console.print(render_table(result))
    runs = result["runs"]
    console.print(f"run folder{'s' if len(runs) > 1 else ''}: {', '.join(runs)}")


def show_proof(summary: dict[str, dict[str, Any]], outcomes: Sequence[Any], pending: Sequence[str]) -> None:
    """diagnose-proof: per method the cases and whether the verdicts named the outcomes."""
    table = Table(title="diagnose's verdicts against the measured outcomes")
    for h in ("method", "dataset", "backbone", "quantity", "verdict", "change", "Holm p", "outcome"):
        table.add_column(h)
    for o in outcomes:
        p = "–" if o.p_holm is None else f"{o.p_holm:.3g}"
        value = ("–" if o.value is None else f"{o.value:.4g}") + ("" if o.reported_model else " †")
        outcome = "helped" if o.helped else "no gain"
        table.add_row(
            o.method, o.dataset, o.backbone, value, o.verdict, f"{100 * o.relative_change:+.1f}%", p, outcome
        )
    console.print(table)
    for method, s in summary.items():
        rho = "–" if s["spearman_rho"] is None else f"{s['spearman_rho']:+.2f} (p {s['spearman_p']:.3g})"
        console.print(
            f"{method}: helped in {s['helped']}/{s['cases']}; verdict right {s['verdicts_right']}/"
            f"{s['verdicts_named']}; Spearman ρ {rho}, n {s['spearman_n']}"
        )
    for o in (o for o in outcomes if not o.reported_model):
        console.print(
            f"† {o.method} {o.dataset}/{o.backbone}: the diagnosed folder is another training of the reported "
            f"run (test metrics differ from the ledger's by up to {o.ledger_gap:.2g})"
        )
    for p in pending:
        console.print(f"pending: {p}")


def show_variants_written(results: Sequence[VariantResult]) -> None:
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items() if v is not None)
        changed = ", ".join(r.written) if r.written else "no file changed"
        console.print(f"wrote {r.path} ({r.kind}: {params}; {changed}; SHA-256 in SOURCE.md)")
