"""Commands on single runs: train (and the demo that trains a few), evaluate, rerun, recommend, serve."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from distillrec.cli import render
from distillrec.cli.application import parse_seeds, setup_logging
from distillrec.errors import DistillrecError

# The demo stops a little sooner than a full run (patience 10 instead of 20) to stay within minutes.
DEMO_SETTINGS = {"patience": 10, "epochs": 300}


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

    setup_logging(quiet)
    ds = load_dataset("scientific")
    render.show_demo_start(ds)
    rows = []
    for model in ("mostpop", "itemknn_cbf", "bprmf", "lightgcn", "vbpr"):
        with render.status(f"training {model} …"):
            result = train(
                model, ds, seeds=[999], set={**DEMO_SETTINGS, "epochs": epochs}, out=out, quiet=True
            )[0]
        render.show_demo_run(model, result.metrics)
        rows.append((model, result.metrics["test"]))
    render.show_demo_end(rows, out)


def train(
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
    from distillrec.experiment.api import resolved_configs
    from distillrec.experiment.api import train as train_runs
    from distillrec.experiment.spec import parse_assignments

    setup_logging(quiet)
    names = [d for d in distill.split(",") if d]
    if print_config:
        render.show_resolved_configs(
            resolved_configs(
                model, dataset, parse_seeds(seeds), parse_assignments(set_), names or None, config, out
            )
        )
        return
    results = train_runs(
        model,
        dataset,
        parse_seeds(seeds),
        parse_assignments(set_),
        out,
        device,
        resume,
        quiet,
        names or None,
        config,
        log=log,
    )
    render.show_train_results(model, names, results)


def rerun(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    out: Path = typer.Option(Path("runs/rerun"), help="root folder of the new run"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
    threads: int = typer.Option(None, help="torch threads (default: the count the run recorded)"),
    tolerance: float = typer.Option(
        0.0, help="largest absolute difference of a metric still called reproduced (0: bit-exact)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Train a finished run again from its own config.yaml and compare every metric with the stored ones;
    exit status 1 where they differ."""
    from distillrec.experiment.rerun import rerun as rerun_run

    setup_logging(True)
    result = rerun_run(run_dir, out, device, threads, tolerance)
    if as_json:
        render.show_json(result.to_json())
    else:
        render.show_rerun(result)
    if not result.reproduced:
        raise typer.Exit(1)


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
            render.show_json(rows)
        else:
            render.show_per_modality(run_dir, split, rows)
        return
    result = run.evaluate(split, preset or None)
    if as_json:
        render.show_json(result)
    else:
        render.show_evaluation(run, run_dir, split, preset, result)


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
    lines = list(render.top_k_tsv(run, ids, top))
    text = "\n".join(lines) + "\n"
    if out:
        out.write_text(text)
        render.note(f"wrote {len(lines)} lists to {out}")
    else:
        sys.stdout.write(text)


def serve(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="port to listen on"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
) -> None:
    """Serve a run's top-K lists over HTTP (GET/POST /recommend, /items/ID/similar, /health)."""
    from distillrec.serve import serve as run_service

    run_service(run_dir, host, port, device)
