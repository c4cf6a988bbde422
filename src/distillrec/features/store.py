"""The files `distillrec features` writes: `<modality>_feat.npy`, and `<modality>_mask.npy` (--missing zero).

Both are written atomically (a temporary file, then a rename), so an interrupted run never leaves a
half-written feature file for a dataset reader to trip on; an existing feature file is only replaced
when asked (`--force`), and that is checked before any model is loaded.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillrec.atomic import atomic_write_bytes
from distillrec.errors import DistillrecError

log = logging.getLogger(__name__)


@dataclass
class FeatureResult:
    """What was written, for the command's summary line and for callers."""

    path: Path
    n_items: int
    dim: int
    n_with_data: int
    model: str
    device: str
    seconds: float
    mask_path: Path | None = None
    missing_report: str | None = None


def feature_path(folder: Path, modality: str, force: bool) -> Path:
    """`<folder>/<modality>_feat.npy`; an existing file is refused unless `force`, before any work is done."""
    path = Path(folder) / f"{modality}_feat.npy"
    if path.exists() and not force:
        raise DistillrecError(f"{path} already exists; --force replaces it")
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_features(path: Path, matrix: np.ndarray, mask: np.ndarray | None) -> Path | None:
    """Write `<modality>_feat.npy` (and `<modality>_mask.npy` when a mask is given) atomically.

    Without a mask, a mask left by an earlier `--missing zero` run is removed: it would describe rows
    that no longer exist. Returns the mask's path when one was written.
    """
    mask_path = path.with_name(path.name[: -len("_feat.npy")] + "_mask.npy")
    atomic_write_bytes(path, _npy_bytes(np.ascontiguousarray(matrix, dtype=np.float32)))
    if mask is not None:
        atomic_write_bytes(mask_path, _npy_bytes(np.asarray(mask, dtype=bool)))
        return mask_path
    if mask_path.exists():
        mask_path.unlink()
        log.info("removed %s (left by an earlier run; every item has data now)", mask_path)
    return None
