"""Commands across runs: compare seed groups, run an experiment, write a report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from distillrec.cli import render
from distillrec.cli.application import setup_logging
from distillrec.cli.progress import JobProgress
from distillrec.errors import DistillrecError


def compare(
    run_dirs: list[Path] = typer.Argument(..., help="run folders or folders of seed runs"),
    metrics: str = typer.Option(",".join(render.REPORT_METRICS), help="comma-separated metrics"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Mean ± std over seeds per configuration; with two configurations, the experiment's statistics: relative
    change, paired t-test over seeds, per-user paired bootstrap interval, Holm over the metrics."""
    from distillrec.experiment.results import collect, mean_std
    from distillrec.experiment.stats import compare_configs

    groups = collect(run_dirs)
    names = [m for m in metrics.split(",") if m]
    summary = []
    for g in groups:
        row: dict[str, Any] = {"config": g.label, "seeds": sorted(g.metrics), "left_out_seeds": g.left_out}
        for m in names:
            vals = list(g.values(m).values())
            if not vals:
                raise DistillrecError(f"{g.label}: metric {m!r} not in its results")
            row[m] = mean_std(vals)
        summary.append(row)
    tests = compare_configs(groups[0], groups[1], names) if len(groups) == 2 else {}
    if as_json:
        render.show_json({"configs": summary, "paired": tests})
    else:
        render.show_comparison(names, summary, tests)


def experiment(
    file: Path = typer.Argument(None, help="an experiment definition (YAML), e.g. experiments/ckd.yaml"),
    dataset: str = typer.Option(
        None, "--dataset", "-d", help="dataset name or folder (comma-separated: several)"
    ),
    backbones: str = typer.Option(None, help="comma-separated backbones"),
    methods: str = typer.Option(
        None, help="comma-separated methods (ckd, sgfd, cdl); none: tune backbones only"
    ),
    budget: int = typer.Option(None, help="trials per search stage and arm (default 8)"),
    selection_seeds: int = typer.Option(
        None, "--selection-seeds", help="selection seeds, never reported (default 2)"
    ),
    seeds: int = typer.Option(None, "--seeds", help="report seeds 1..N (default 5)"),
    set_: list[str] = typer.Option(None, "--set", help="key=value applied to every run (e.g. epochs=50)"),
    no_controls: bool = typer.Option(False, "--no-controls", help="leave out the methods' control arms"),
    executor: str = typer.Option(None, help="serial, local or ray (default serial)"),
    jobs: int = typer.Option(None, help="parallel jobs (local, ray)"),
    threads: int = typer.Option(None, help="torch threads per job (default cores / jobs)"),
    ray_address: str = typer.Option(None, "--ray-address", help="auto or HOST:PORT; none: a local Ray"),
    out: Path = typer.Option(
        None, help="experiment folder: studies, ledger, runs (default runs/experiments/NAME)"
    ),
    write: Path = typer.Option(None, help="results document to write (markdown)"),
    device: str = typer.Option(None, help="cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with every comparison"),
    partial: bool = typer.Option(
        False, "--partial", help="train nothing: report the backbones finished so far"
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="after fixing what made jobs fail: their trials use no budget, ask again",
    ),
    quiet: bool = typer.Option(False, help="no progress display"),
) -> None:
    """Does method X help backbone Y? Both arms tuned on validation with the same budget, reported on fresh
    seeds with test-set uncertainty and Holm-corrected p-values; resumable, parallel (local or Ray)."""
    import shlex

    from distillrec.experiment.definition import load_definition, make_definition
    from distillrec.experiment.engine import Engine, planned_jobs
    from distillrec.experiment.report import comparisons, markdown, to_json
    from distillrec.experiment.spec import parse_assignments
    from distillrec.training.checkpoint import atomic_write_text

    setup_logging(True)
    given: dict[str, Any] = {
        "datasets": [x for x in dataset.split(",") if x] if dataset else None,
        "backbones": [x for x in backbones.split(",") if x] if backbones else None,
        "methods": [x for x in methods.split(",") if x] if methods is not None else None,
        "budget": budget,
        "selection_seeds": selection_seeds,
        "seeds": seeds,
        "set": parse_assignments(set_) if set_ else None,
        "controls": False if no_controls else None,
        "executor": executor,
        "jobs": jobs,
        "threads": threads,
        "ray_address": ray_address,
        "out": str(out) if out else None,
        "results": str(write) if write else None,
        "device": device,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if file is not None:
        definition = load_definition(file, {**given, "set": {**_file_set(file), **given.get("set", {})}})
        changed = [k for k in _CONTENT_OPTIONS if k in given]
        if changed and write is None and definition.results:
            # the file's document reports the whole definition: a narrowed run must not replace it
            typer.echo(
                f"{definition.results} left as it is: this command changes what the definition runs "
                f"({', '.join(changed)}); --write FILE writes its own report",
                err=True,
            )
            definition = definition.model_copy(update={"results": None})
    else:
        if "backbones" not in given:
            raise DistillrecError("give an experiment file or --backbones")
        definition = make_definition(given)
    if definition.results and Path(definition.results).is_dir():  # refused now, not after hours of training
        raise DistillrecError(f"results document {definition.results}: is a folder; name a .md file")
    command = "distillrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    engine = Engine(definition, partial=partial, retry_failed=retry_failed)
    with JobProgress(planned_jobs(definition), max(1, definition.jobs), quiet or as_json) as progress:
        engine.progress = progress
        result = engine.run()
    comps = comparisons(result)
    if definition.results:
        path = Path(definition.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, markdown(result, comps, command))
    if as_json:
        render.show_json(to_json(result, comps), default=float)
    else:
        render.show_experiment(definition, result, comps)


# options that change what an experiment file runs (and so what its results document would report)
_CONTENT_OPTIONS = (
    "datasets",
    "backbones",
    "methods",
    "budget",
    "selection_seeds",
    "seeds",
    "set",
    "controls",
)


def _file_set(file: Path) -> dict[str, Any]:
    """The `set:` block of an experiment file (empty when unreadable: the definition loader says why)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return dict(raw.get("set") or {}) if isinstance(raw, dict) else {}


def report(
    path: Path = typer.Argument(..., help="a run folder, a folder of seed runs or an experiment folder"),
    out: Path = typer.Option(
        None, help="HTML file to write (default <path>/report.html; Markdown beside it)"
    ),
    definition: list[Path] = typer.Option(None, "--definition", help="experiment definition(s) for a ledger"),
    per_modality: bool = typer.Option(
        False, "--per-modality", help="a run: evaluate each modality alone too"
    ),
) -> None:
    """One self-contained HTML page (and Markdown beside it): curves, metrics, comparisons."""
    from distillrec.experiment.html_report import write_report

    page, md = write_report(path, out, definition or [], per_modality)
    render.note(f"wrote {page} and {md}")
