"""The `distillrec` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from distillrec.errors import DistillrecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Multimodal recommenders with knowledge distillation."
)


def _print_version(value: bool) -> None:
    if value:
        from distillrec import __version__

        typer.echo(f"distillrec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Multimodal recommenders with knowledge distillation."""


console = Console(width=None if sys.stdout.isatty() else 200)  # no wrapping when piped
# The demo stops a little sooner than a full run (patience 10 instead of 20) to stay within minutes.
DEMO_SETTINGS = {"patience": 10, "epochs": 300}
REPORT_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True
        )
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", force=True)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DistillrecError(f"--seeds expects comma-separated integers, got {text!r}") from None


def _metrics_table(title: str, rows: list[tuple[str, dict]], metrics=REPORT_METRICS) -> Table:  # noqa: ANN001
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


def _grid_table(title: str, result: dict[str, float]) -> Table:
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="where the demo's runs are written"),
    quiet: bool = typer.Option(True, help="no per-epoch log lines"),
    epochs: int = typer.Option(
        DEMO_SETTINGS["epochs"], min=1, help="most epochs per model (each stops sooner on validation)"
    ),
) -> None:
    """Train a few models on the bundled `scientific` data and print a comparison table."""
    from distillrec.data.registry import load_dataset
    from distillrec.experiment.api import train

    _setup_logging(quiet)
    ds = load_dataset("scientific")
    console.print(f"[bold]distillrec demo[/bold]: {ds!r}")
    rows = []
    for model in ("mostpop", "itemknn_cbf", "bprmf", "lightgcn", "vbpr"):
        with console.status(f"training {model} …"):
            result = train(
                model, ds, seeds=[999], set={**DEMO_SETTINGS, "epochs": epochs}, out=out, quiet=True
            )[0]
        m = result.metrics
        console.print(
            f"  {model:<12} best epoch {m['best_epoch']:>4}  {m['seconds']:6.1f} s  test recall@20 {m['test']['recall@20']:.4f}"
        )
        rows.append((model, m["test"]))
    console.print(_metrics_table("test metrics, scientific (mmrec preset, best-validation epoch)", rows))
    console.print(f"runs written under {out}/ (config.yaml, metrics.json, history.csv, best.pt, env.json)")


def _protocol(model: str, metrics: dict) -> str:
    """How a run's test metrics were measured, for table titles."""
    from distillrec.models.registry import model_class

    if model_class(model).task == "next-item":
        return "next-item protocol: full ranking, history not masked"
    return f"{metrics['preset']} preset"


@app.command("train")
def train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="model name (see `distillrec models`)"),
    dataset: str = typer.Option("scientific", "--dataset", "-d", help="dataset name or folder"),
    seeds: str = typer.Option("999", help="comma-separated seeds, one run each"),
    set_: list[str] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="an option, repeatable: training (epochs, lr, …), model (see `distillrec models`) or "
        "<method>.key (see `distillrec options`)",
    ),
    distill: str = typer.Option(
        "", help="one distillation method: ckd, sgfd or cdl (see `distillrec options`)"
    ),
    config: Path = typer.Option(None, "--config", help="YAML file of options, under --set"),
    out: Path = typer.Option(Path("runs"), help="root folder of run folders"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
    resume: bool = typer.Option(False, help="continue interrupted runs from last.pt"),
    quiet: bool = typer.Option(False, help="no progress display"),
    log: str = typer.Option(
        None, "--log", help="tensorboard: per-epoch scalars into <run folder>/tensorboard/"
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="print each run's resolved configuration (its config.yaml) and folder, and train nothing",
    ),
) -> None:
    """Train MODEL on DATASET once per seed and report test metrics at the best-validation epoch."""
    from distillrec.experiment.api import resolved_configs, train
    from distillrec.experiment.spec import parse_assignments

    _setup_logging(quiet)
    names = [d for d in distill.split(",") if d]
    if print_config:
        import yaml

        for run_dir, resolved in resolved_configs(
            model, dataset, _seeds(seeds), parse_assignments(set_), names or None, config, out
        ):
            sys.stdout.write(f"# {run_dir}\n{yaml.safe_dump(resolved, sort_keys=False)}")
        return
    results = train(
        model,
        dataset,
        _seeds(seeds),
        parse_assignments(set_),
        out,
        device,
        resume,
        quiet,
        names or None,
        config,
        log=log,
    )
    rows = [
        (
            f"{model}{'+' + '+'.join(names) if names else ''} seed {r.metrics['seed']}",
            {
                **r.metrics["test"],
                "best epoch": str(r.metrics["best_epoch"]),
                "seconds": f"{r.metrics['seconds']:.1f}",
            },
        )
        for r in results
    ]
    metrics = (*REPORT_METRICS, "best epoch", "seconds")
    console.print(_metrics_table(f"test metrics ({_protocol(model, results[0].metrics)})", rows, metrics))
    for r in results:
        console.print(f"run folder: {r.run_dir}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    split: str = typer.Option("test", help="valid or test"),
    preset: str = typer.Option("", help="evaluation preset: mmrec or strict (default: the run's)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    per_modality: bool = typer.Option(
        False, "--per-modality", help="each modality alone inside the model, beside its uni-modal teacher"
    ),
) -> None:
    """Re-evaluate a finished run's best weights."""
    import torch

    from distillrec.experiment.api import load_run

    if split not in ("valid", "test"):
        raise DistillrecError(f"--split must be valid or test, got {split!r}")
    run = load_run(run_dir)
    if per_modality:
        from distillrec.experiment.diagnostics import per_modality as table_rows

        with torch.no_grad():
            rows = table_rows(run, split)
        if as_json:
            print(json.dumps(rows, indent=2))
            return
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
        return
    result = run.evaluate(split, preset or None)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(
            _grid_table(f"{run.config['model']}, {split} ({preset or run.train_config.preset})", result)
        )
        console.print(f"run folder: {run_dir}")


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    users: str = typer.Option("all", help="all, or comma-separated user ids"),
    k: int = typer.Option(10, "-k", help="list length"),
    out: Path = typer.Option(None, help="write TSV here instead of standard output"),
    exclude_seen: bool = typer.Option(False, help="also drop every other known interaction (valid and test)"),
) -> None:
    """Top-K lists as TSV: user id, then the K item ids in rank order."""
    import numpy as np

    from distillrec.experiment.api import load_run

    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise DistillrecError(
            f"--out {out}: "
            + ("is a folder; name a file" if out.is_dir() else f"its folder {out.parent} does not exist")
        )
    run = load_run(run_dir)
    if users == "all":
        ids = np.arange(run.dataset.n_users)
    else:
        try:
            ids = np.array([int(u) for u in users.split(",") if u.strip()], dtype=np.int64)
        except ValueError:
            raise DistillrecError(
                f"--users expects 'all' or comma-separated integer ids, got {users!r}"
            ) from None
    top = run.recommend(ids, k, exclude_seen=exclude_seen)
    user_names = (
        run.dataset.user_tokens if run.dataset.user_tokens is not None else np.arange(run.dataset.n_users)
    )
    item_names = (
        run.dataset.item_tokens if run.dataset.item_tokens is not None else np.arange(run.dataset.n_items)
    )
    lines = [
        "\t".join(map(str, [user_names[u], *item_names[row]]))
        for u, row in zip(ids.tolist(), top, strict=True)
    ]
    text = "\n".join(lines) + "\n"
    if out:
        out.write_text(text)
        console.print(f"wrote {len(lines)} lists to {out}")
    else:
        sys.stdout.write(text)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="run folders or folders of seed runs"),
    metrics: str = typer.Option(",".join(REPORT_METRICS), help="comma-separated metrics"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Mean ± std over seeds per configuration; with two configurations, relative change and paired t-test."""
    from distillrec.experiment.results import collect, format_p, mean_std, paired_test

    groups = collect(run_dirs)
    names = [m for m in metrics.split(",") if m]
    summary = []
    for g in groups:
        row = {"config": g.label, "seeds": sorted(g.metrics)}
        for m in names:
            vals = list(g.values(m).values())
            if not vals:
                raise DistillrecError(f"{g.label}: metric {m!r} not in its results")
            row[m] = mean_std(vals)
        summary.append(row)
    tests = {}
    if len(groups) == 2:
        for m in names:
            rel, p, n = paired_test(groups[0].values(m), groups[1].values(m))
            tests[m] = {"relative_change": rel, "p_value": p, "paired_seeds": n}
    if as_json:
        print(json.dumps({"configs": summary, "paired": tests}, indent=2))
        return
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
            "paired t-test p",
            "",
            *[format_p(tests[m]["p_value"]) for m in names],
        )
    console.print(table)


class _JobProgress:
    """Jobs done / running / left and the best validation score so far, on one rich status line."""

    def __init__(self, total: int, running: int, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.running = running
        self.done = self.cached = 0
        self.left = total
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet or not sys.stderr.isatty(),
        )
        self.task = self.bar.add_task("", total=total)

    def add(self, cached: int, todo: int) -> None:
        self.cached += cached
        self.bar.advance(self.task, cached)
        self._show(float("nan"))

    def done_one(self, best: float) -> None:
        self.done += 1
        self.bar.advance(self.task, 1)
        self._show(best)

    def _show(self, best: float) -> None:
        left = max(0, self.bar.tasks[0].total - self.done - self.cached)
        self.bar.update(
            self.task,
            description=f"jobs: {self.done} run, {self.cached} cached, "
            f"≤{min(self.running, left)} running, ≤{left} left; best valid {best:.4f}",
        )

    def __enter__(self) -> _JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)


@app.command()
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
    quiet: bool = typer.Option(False, help="no progress display"),
) -> None:
    """Does method X help backbone Y? Both arms tuned on validation with the same budget, reported on fresh
    seeds with test-set uncertainty and Holm-corrected p-values; resumable, parallel (local or Ray)."""
    import shlex

    from distillrec.experiment.definition import load_definition, make_definition
    from distillrec.experiment.engine import Engine, planned_jobs
    from distillrec.experiment.report import comparisons, markdown, to_json
    from distillrec.experiment.results import format_p
    from distillrec.experiment.spec import parse_assignments
    from distillrec.training.checkpoint import atomic_write_text

    _setup_logging(True)
    given = {
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
    else:
        if "backbones" not in given:
            raise DistillrecError("give an experiment file or --backbones")
        definition = make_definition(given)
    if definition.results and Path(definition.results).is_dir():  # refused now, not after hours of training
        raise DistillrecError(f"results document {definition.results}: is a folder; name a .md file")
    command = "distillrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    engine = Engine(definition, partial=partial)
    with _JobProgress(planned_jobs(definition), max(1, definition.jobs), quiet or as_json) as progress:
        engine.progress = progress
        result = engine.run()
    comps = comparisons(result)
    if definition.results:
        path = Path(definition.results)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, markdown(result, comps, command))
    if as_json:
        print(json.dumps(to_json(result, comps), indent=2, default=float))
        return
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


def _file_set(file: Path) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(Path(file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return dict(raw.get("set") or {}) if isinstance(raw, dict) else {}


@app.command()
def datasets() -> None:
    """The known datasets and their statistics."""
    from distillrec.data.registry import list_datasets

    table = Table(title="datasets")
    for col in ("name", "users", "items", "train", "valid", "test", "modalities", "labels", "format", "path"):
        table.add_column(col)
    for s in list_datasets():
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


@app.command()
def models() -> None:
    """The registered models and their default hyperparameters."""
    from distillrec.models.registry import default_params, model_class, model_names

    table = Table(title="models")
    for col in ("name", "task", "features", "defaults"):
        table.add_column(col)
    for name in model_names():
        cls = model_class(name)
        table.add_row(
            name,
            cls.task,
            "yes" if cls.uses_features else "no",
            ", ".join(f"{k}={v}" for k, v in default_params(name).items()) or "-",
        )
    console.print(table)


def _field_rows(model_cls) -> list[tuple[str, str, str]]:  # noqa: ANN001 - a pydantic model class
    """(name, default, description) of each field of a typed option group."""
    rows = []
    for name, field in model_cls.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default
        rows.append((name, "required" if field.is_required() else repr(default), field.description or ""))
    return rows


@app.command()
def options(
    method: str = typer.Argument(None, help="only this distillation method's options (ckd, sgfd, cdl)"),
) -> None:
    """Every option `--set` and `--config` accept besides model hyperparameters (`distillrec models`):
    training, data, and each distillation method's, with defaults."""
    from distillrec.distill.registry import distiller_class, distiller_names
    from distillrec.experiment.spec import DataSpec
    from distillrec.training.config import TrainConfig

    groups = (
        []
        if method
        else [
            ("training (--set lr=1e-3; a model's YAML may change its defaults)", TrainConfig, ""),
            ("data (--set split=random)", DataSpec, ""),
        ]
    )
    for name in [method] if method else distiller_names():
        cls = distiller_class(name)
        groups.append((f"{name} (--distill {name} --set {name}.KEY=VALUE)", cls.Options, name))
    for title, model_cls, _ in groups:
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


@app.command()
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
    console.print(f"wrote {page} and {md}")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="port to listen on"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
) -> None:
    """Serve a run's top-K lists over HTTP (GET/POST /recommend, /items/ID/similar, /health)."""
    from distillrec.serve import serve as run_service

    run_service(run_dir, host, port, device)


@app.command()
def features(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="dataset folder, where the file is written"),
    text: Path = typer.Option(None, "--text", help="item text: TSV, CSV or JSON lines (id and text columns)"),
    images: Path = typer.Option(None, "--images", help="folder of item images named <item id>.jpg/.png/…"),
    text_column: list[str] = typer.Option(
        None, "--text-column", help="text column(s) to join, repeated or comma-separated (default text)"
    ),
    id_column: str = typer.Option(
        "itemID",
        "--id-column",
        help="itemID: 0-based item indices; another name (e.g. asin): original ids, "
        "mapped through i_id_mapping.csv (with --images: what the file names are)",
    ),
    modality: str = typer.Option(None, help="writes <modality>_feat.npy (default text or image)"),
    model: str = typer.Option(
        None, help="local model folder (text: default the bundled all-MiniLM-L6-v2; images: required)"
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="items per batch"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
    missing: str = typer.Option(
        "error", help="items without text/image: error, or zero (zero rows and <modality>_mask.npy)"
    ),
    normalize: bool = typer.Option(True, help="L2-normalise each row"),
    force: bool = typer.Option(False, "--force", help="replace an existing feature file"),
    quiet: bool = typer.Option(False, help="no progress display"),
) -> None:
    """Build <modality>_feat.npy for a dataset folder from raw item text or images (row i = item i)."""
    from distillrec.features import build_image_features, build_text_features

    if (text is None) == (images is None):
        raise DistillrecError("give one of --text FILE or --images FOLDER")
    if images is not None and text_column:
        raise DistillrecError("--text-column goes with --text, not with --images")
    _setup_logging(True)
    common = {
        "id_column": id_column,
        "model": model,
        "batch_size": batch_size,
        "device": device,
        "missing": missing,
        "normalize": normalize,
        "force": force,
        "quiet": quiet,
    }
    if text is not None:
        result = build_text_features(
            dataset, text, text_columns=text_column or None, modality=modality or "text", **common
        )
    else:
        result = build_image_features(dataset, images, modality=modality or "image", **common)
    console.print(
        f"wrote {result.path}: {result.n_items} items × {result.dim} "
        f"({result.model}, {result.device}, {result.seconds:.1f} s)"
    )
    if result.mask_path is not None:
        console.print(
            f"{result.n_items - result.n_with_data} items without data have zero rows; "
            f"{result.mask_path} marks the items with data"
        )


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except DistillrecError as exc:
        sys.stderr.write(f"error: {exc}\n")  # one unwrapped line, whatever the terminal width
        raise SystemExit(2) from None
    except typer.TyperException as exc:  # a bad option or value: one line too, not a framed box
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            raise SystemExit(0) from None
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}{where}\n")
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except typer.Abort:
        sys.stderr.write("aborted\n")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
