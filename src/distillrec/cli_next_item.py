"""Next-item commands for the `distillrec` command line: `kdsr-report`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from distillrec.errors import DistillrecError


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DistillrecError(f"{what} expects comma-separated integers, got {text!r}") from None


def register(app: typer.Typer) -> None:
    """Add the next-item commands to `app`."""

    @app.command("kdsr-report")
    def kdsr_report_cmd(
        seeds: str = typer.Option("1,2,3,4,5", help="comma-separated seeds"),
        models: str = typer.Option("gru4rec,sasrec,sasrm,mmsr", help="backbones, comma-separated"),
        dataset: str = typer.Option("scientific", "--dataset", "-d", help="dataset with ordered histories"),
        out: Path = typer.Option(Path("runs/kdsr"), help="root of the run folders (finished runs are reused)"),
        results: Path = typer.Option(Path("docs/results"), help="where kdsr.md and the plot are written"),
        threads: int = typer.Option(1, help="torch threads (1 on a shared machine)"),
        no_write: bool = typer.Option(False, "--no-write", help="train only (e.g. one process per model)"),
    ) -> None:
        """Train GRU4Rec, SASRec, SASRM and MMSR with and without KDSR's CDL; write docs/results/kdsr.md."""
        import torch
        from rich.console import Console

        from distillrec.experiment.kdsr import MODELS, kdsr_report

        names = [m for m in models.split(",") if m]
        unknown = set(names) - set(MODELS)
        if unknown:
            raise DistillrecError(f"--models: unknown {sorted(unknown)}; choose among {', '.join(MODELS)}")
        torch.set_num_threads(threads)
        console = Console(stderr=True)
        kdsr_report(
            dataset,
            _ints(seeds, "--seeds"),
            names,
            out,
            results,
            write=not no_write,
            command="distillrec " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            progress=lambda msg: console.print(msg),
        )
        if not no_write:
            console.print(f"wrote {results / 'kdsr.md'} and {results / 'kdsr_forgetting.png'}")
