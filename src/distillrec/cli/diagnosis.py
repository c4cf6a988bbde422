"""Commands that say whether a method is worth trying: `diagnose` on a finished run, and `variant`, which
writes a dataset derived from a real one in which one method's premise is made to hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from distillrec.cli import render
from distillrec.errors import DistillrecError


def diagnose(
    run_dir: Path = typer.Argument(..., help="a finished run folder (plain or distilled)"),
    as_json: bool = typer.Option(
        False, "--json", help="print one JSON object (schema in diagnose/report.py)"
    ),
    train_teachers: bool = typer.Option(
        False, "--train-teachers", help="CKD: train the uni-modal teachers when none is cached"
    ),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Each method's premise measured on a run, with a verdict: likely to help, unlikely, cannot tell."""
    from distillrec.diagnose import diagnose as run_diagnosis

    result = run_diagnosis(run_dir, train_teachers=train_teachers, device=device)
    if as_json:
        render.show_json(result)
    else:
        render.show_diagnosis(result)


def variant(
    kind: str = typer.Argument(
        ...,
        help="noise | lowrank | no-category-text | drop, or premises (the set the diagnose experiments use)",
    ),
    source: Path = typer.Option(
        Path("../shared/datasets/amazon-scientific"), "--source", help="dataset folder to derive from"
    ),
    out: Path = typer.Option(
        None, "--out", help="folder to write (premises: the folder of the set, default runs/variants)"
    ),
    modality: str = typer.Option(None, help="the modality changed (noise, lowrank: image; others: text)"),
    snr_db: float = typer.Option(None, "--snr-db", help="noise: signal-to-noise ratio in dB"),
    rank: int = typer.Option(None, help="lowrank: the rank kept"),
    seed: int = typer.Option(None, help="noise: the seed of the noise (default 0)"),
    model: str = typer.Option(None, help="no-category-text: local text model (default the bundled MiniLM)"),
    force: bool = typer.Option(False, "--force", help="replace a folder that is not empty"),
) -> None:
    """Write a dataset variant (ordinary dataset folder + SOURCE.md with its derivation and hashes)."""
    from distillrec.diagnose import write_premise_variants, write_variant

    if kind == "premises":
        results = write_premise_variants(
            source, out if out is not None else Path("runs/variants"), force=force
        )
    else:
        if out is None:
            raise DistillrecError("give --out FOLDER for the variant")
        given: dict[str, Any] = {"modality": modality, "snr_db": snr_db, "rank": rank, "seed": seed}
        given["model"] = model
        results = [
            write_variant(kind, source, out, force=force, **{k: v for k, v in given.items() if v is not None})
        ]
    render.show_variants_written(results)
