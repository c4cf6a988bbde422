"""Item side information stored as .npy arrays: modality features and category labels.

Modalities are discovered from file names (`<modality>_feat.npy`), never assumed, so a dataset with an
"audio" or "video" file gets that modality for free. Every check names the file and the first bad row.
"""

from __future__ import annotations

import logging
import re
import tokenize
from pathlib import Path

import numpy as np
import torch

from distillrec.errors import DataError, warnings_only_on_success

log = logging.getLogger(__name__)

FEATURE_FILE = re.compile(r"(?P<modality>.+)_feat\.npy")
LABEL_FILE = "category_label.npy"


def discover_modalities(folder: Path) -> dict[str, Path]:
    """Modality name -> feature file, for files named exactly `<modality>_feat.npy`, sorted by name.

    `text_feat_joint512.npy` does not match: a variant of a modality must be renamed to become one.
    """
    found = {}
    for path in sorted(folder.iterdir()):
        m = FEATURE_FILE.fullmatch(path.name)
        if m and path.is_file():
            found[m.group("modality")] = path
    return found


def load_npy(path: Path) -> np.ndarray:
    try:  # memory-mapped: a header claiming more data than the file holds is refused, nothing allocated
        with warnings_only_on_success():
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # last two: bad header
        msg = " ".join(str(exc).split())
        raise DataError(f"{path}: not a readable .npy array ({msg})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: not a .npy array (an .npz archive)")
    return np.array(arr)


def load_feature(path: Path) -> np.ndarray:
    """A float32 matrix [rows, dim] with finite values; the first non-finite row is named."""
    arr = load_npy(path)
    if arr.ndim != 2:
        raise DataError(f"{path}: feature array must be 2-D [items, dim], got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: feature array must be numeric, got dtype {arr.dtype}")
    if arr.shape[1] == 0 or arr.shape[0] == 0:
        raise DataError(
            f"{path}: feature array is empty (shape {tuple(arr.shape)}); give at least one row and column"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        col = int(np.argmin(np.isfinite(arr[row])))
        raise DataError(
            f"{path}: row {row} (0-based, = itemID {row}) has a non-finite value ({arr[row, col]} in column "
            f"{col}); {int((~finite).sum())} rows are affected"
        )
    return arr


def load_features(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Load every modality and require that they agree on the number of rows (= items)."""
    arrays = {m: load_feature(p) for m, p in files.items()}
    rows = {m: a.shape[0] for m, a in arrays.items()}
    if len(set(rows.values())) > 1:
        (m1, r1), (m2, r2) = sorted(rows.items(), key=lambda kv: kv[1])[:: len(rows) - 1]
        raise DataError(
            f"{files[m1]} has {r1} rows but {files[m2]} has {r2}; every feature file needs one row per item"
        )
    return arrays


def load_labels(path: Path, n_items: int, items_from: str, extra_rows_ok: bool = False) -> np.ndarray:
    """int64 [n_items] category labels, -1 = unknown. A 2-D one-hot matrix is turned into indices.

    `items_from` says where n_items came from, for the message when the lengths differ;
    `extra_rows_ok` drops entries past n_items instead (SGFD's files cover more items than its splits).
    """
    arr = load_npy(path)
    if arr.ndim == 2:  # one-hot / scores per class: argmax, rows without any positive are unknown
        known = (arr > 0).any(axis=1)
        arr = np.where(known, arr.argmax(axis=1), -1)
    if arr.ndim != 1:
        raise DataError(f"{path}: labels must be 1-D [items], got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{path}: entry {row} (0-based item) is {arr[row]}, not an integer label")
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{path}: labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if extra_rows_ok and len(arr) > n_items:
        arr = arr[:n_items]
    if len(arr) != n_items:
        raise DataError(f"{path} has {len(arr)} entries but there are {n_items} items ({items_from})")
    below = arr < -1
    if below.any():
        row = int(np.argmax(below))
        raise DataError(
            f"{path}: entry {row} (0-based item) is {arr[row]}; labels are >= 0, or -1 for unknown"
        )
    known = np.unique(arr[arr >= 0])  # classifiers are sized by the largest label: refuse a sparse one
    if len(known) and int(known[-1]) + 1 > 2 * len(known) + 10_000:
        row = int(np.argmax(arr))
        raise DataError(
            f"{path}: entry {row} (0-based item) is {arr[row]}, far beyond the {len(known)} "
            "distinct labels; labels must be dense class indices 0..C-1 (or -1 for unknown)"
        )
    return arr


def to_tensors(
    features: dict[str, np.ndarray], labels: np.ndarray | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    feats = {m: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for m, a in features.items()}
    return feats, None if labels is None else torch.from_numpy(labels.astype(np.int64))
