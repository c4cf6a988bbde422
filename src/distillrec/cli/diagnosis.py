"""Commands that say whether a method is worth trying: `diagnose` on a finished run, and `variant`, which
writes a dataset derived from a real one in which one method's premise is made to hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from distillrec.cli import render
from distillrec.errors import DistillrecError


def diagnose(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="finished run folders of one specification (plain or distilled), e.g. its seeds; a folder of "
        "seed*/ runs stands for all of them",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print one JSON object (schema in diagnose/report.py)"
    ),
    train_teachers: bool = typer.Option(
        False, "--train-teachers", help="CKD: train the uni-modal teachers when none is cached"
    ),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Each method's premise measured on a run, with a verdict: likely to help, unlikely, cannot tell. Over
    several runs of one specification the mean is judged, and "cannot tell" where the threshold lies inside
    its 95% interval."""
    from distillrec.diagnose import diagnose as run_diagnosis

    result = run_diagnosis(run_dirs, train_teachers=train_teachers, device=device)
    if as_json:
        render.show_json(result)
    else:
        render.show_diagnosis(result)


def diagnose_proof(
    definitions: list[Path] = typer.Argument(
        ..., help="experiment definitions whose finished comparisons are checked, e.g. experiments/ckd.yaml"
    ),
    write: Path = typer.Option(None, "--write", help="markdown document to write (docs/results/diagnose.md)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: outcomes, summary, pending"),
    train_teachers: bool = typer.Option(
        True, "--train-teachers/--no-train-teachers", help="CKD: train uni-modal teachers not yet cached"
    ),
    retrain: bool = typer.Option(
        True,
        "--retrain/--no-retrain",
        help="train again a plain report run whose folder this checkout lacks (the ledger keeps only figures)",
    ),
    seeds: int = typer.Option(
        1, "--seeds", help="diagnose each plain arm's first N report runs and judge their mean", min=1
    ),
    remeasure: bool = typer.Option(
        False,
        "--remeasure",
        help="measure every quantity again instead of reading the state's diagnoses.jsonl",
    ),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Whether diagnose's verdicts predicted what the fair experiments measured (trains no comparison; the
    diagnosed plain runs are trained again where their folders are missing)."""
    import shlex
    import sys

    from distillrec.diagnose import proof
    from distillrec.training.checkpoint import atomic_write_text

    missing = [str(p) for p in definitions if not p.is_file()]
    if missing:
        raise DistillrecError(f"no experiment definition at {', '.join(missing)}")
    outcomes, pending = proof.collect(
        definitions,
        train_teachers=train_teachers,
        device=device,
        retrain=retrain,
        remeasure=remeasure,
        seeds=seeds,
    )
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        command = "distillrec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        atomic_write_text(write, proof.markdown(outcomes, pending, command))
    if as_json:
        render.show_json(proof.to_json(outcomes, pending), default=float)
    else:
        render.show_proof(proof.summary(outcomes), outcomes, pending)


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
