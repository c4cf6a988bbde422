"""Commands on datasets: list the known ones, build a feature file from raw item text or images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from distillrec.cli import render
from distillrec.cli.application import setup_logging
from distillrec.errors import DistillrecError


def datasets() -> None:
    """The known datasets and their statistics."""
    from distillrec.data.registry import list_datasets

    render.show_datasets(list_datasets())


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
    precision: str = typer.Option(
        None,
        help="text encoder's arithmetic: float64 (default; on the CPU under pinned kernels, rounded to "
        "float32: the same file on any x86-64 machine) or float32 (faster, on --device; its last bits "
        "depend on the CPU)",
    ),
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
    if images is not None and precision:
        raise DistillrecError("--precision goes with --text, not with --images")
    setup_logging(True)
    common: dict[str, Any] = {
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
            dataset,
            text,
            text_columns=text_column or None,
            modality=modality or "text",
            precision=precision or "float64",
            **common,
        )
    else:
        result = build_image_features(dataset, images, modality=modality or "image", **common)
    render.show_features_written(result)
