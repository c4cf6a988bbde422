"""Aligning raw item records with a dataset's items: row i of a feature file must be item i.

Raw files name items either by the dataset's own 0-based index (the `itemID` column of MMRec files) or by
their original id (an ASIN, …). Original ids are translated with the dataset's item map (MMRec's
`i_id_mapping.csv`, read by the dataset reader), so that the mapping used here is exactly the one the
dataset uses everywhere else. Every way a raw file can disagree with the dataset (unknown ids, repeated
ids, items with no data) is reported here, in one place, with a few example ids.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INDEX_COLUMN = "itemID"  # the dataset's own 0-based item index, as in MMRec's files
ID_MAP_FILE = "i_id_mapping.csv"
MISSING_CHOICES = ("error", "zero")
EXAMPLES = 5
_MODALITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_INDEX = re.compile(r"\d+")


@dataclass
class Items:
    """The items of a dataset folder: how many, and their original ids when the dataset has a map."""

    folder: Path
    n_items: int
    tokens: np.ndarray | None = None  # original id of item i ("" where the map lacks it)
    map_source: str = ""  # where the original ids come from, for messages
    token_index: dict[str, int] = field(default_factory=dict)

    def label(self, i: int) -> str:
        """'12 (B00O47ILVA)' when the original id is known, else '12'."""
        token = self.tokens[i] if self.tokens is not None else ""
        return f"{i} ({token})" if token else str(i)


def dataset_items(folder: Path | str) -> Items:
    """Read the dataset in `folder` (any layout the readers know) for its item count and item map."""
    from distillrec.data.registry import read_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"--dataset {folder}: no such folder (give the dataset folder the feature file goes into)"
        )
    quiet = logging.getLogger("distillrec.data")  # its warnings concern training (splits), not features
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        ds = read_folder(folder)
    finally:
        quiet.setLevel(level)
    items = Items(folder=folder, n_items=ds.n_items)
    if ds.item_tokens is not None:
        items.tokens = np.asarray([str(t) for t in ds.item_tokens], dtype=object)
        items.token_index = {t: i for i, t in enumerate(items.tokens) if t}
        id_map = folder / ID_MAP_FILE
        items.map_source = str(id_map) if id_map.is_file() else f"the item ids of {folder}"
    return items


def check_options(modality: str, missing: str, batch_size: int) -> None:
    """Options checked before anything is read or loaded."""
    if not _MODALITY.fullmatch(modality):
        raise ConfigError(
            f"--modality {modality!r}: use letters, digits, '_', '-' or '.' (it names <modality>_feat.npy)"
        )
    if missing not in MISSING_CHOICES:
        raise ConfigError(f"--missing {missing!r}: expected one of {', '.join(MISSING_CHOICES)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")


def _examples(values: list[str]) -> str:
    shown = ", ".join(values[:EXAMPLES])
    return shown + (", …" if len(values) > EXAMPLES else "")


def resolve_ids(raw: list[str], id_column: str, items: Items, source: str, where: list[str]) -> np.ndarray:
    """Item index of every raw id, or a DataError naming a few unknown ones and `source`.

    `id_column` says what the ids are: `itemID` = 0-based item indices; any other name (e.g. `asin`) =
    original ids, looked up in the dataset's item map. A dataset without a map can only be addressed by
    index, whatever the column is called. `where[k]` locates raw[k] in messages ('line 7', a file name).
    """
    by_token = id_column != INDEX_COLUMN and items.tokens is not None
    out = np.empty(len(raw), dtype=np.int64)
    unknown: list[int] = []
    for k, value in enumerate(raw):
        value = value.strip()
        if by_token:
            i = items.token_index.get(value, -1)
        else:
            i = int(value) if _INDEX.fullmatch(value) else -1
            i = i if i < items.n_items else -1
        out[k] = i
        if i < 0:
            unknown.append(k)
    if unknown:
        shown = _examples([f"{raw[k].strip() or '(empty)'!r} ({where[k]})" for k in unknown])
        if by_token:
            how = f"not in {items.map_source}; --id-column {INDEX_COLUMN} reads 0-based item indices instead"
        else:
            hint = (
                f"; --id-column asin (any name but {INDEX_COLUMN}) maps original ids"
                if items.tokens is not None
                else ""
            )
            how = f"not item indices 0..{items.n_items - 1} of {items.folder}{hint}"
        raise DataError(f"{source}: {len(unknown)} unknown item id(s), {how}: {shown}")
    if id_column != INDEX_COLUMN and items.tokens is None:
        log.info(
            "%s has no item map (%s): ids in %r read as item indices", items.folder, ID_MAP_FILE, id_column
        )
    return out


def check_unique(index: np.ndarray, raw: list[str], source: str, where: list[str]) -> None:
    """Each item may appear once: the first repeated item is named with both of its places."""
    seen: dict[int, int] = {}
    for k, i in enumerate(index.tolist()):
        if i in seen:
            raise DataError(
                f"{source}: item {raw[k].strip()!r} appears twice ({where[seen[i]]} and {where[k]}); "
                "each item may appear once"
            )
        seen[i] = k


def missing_items(
    has: np.ndarray, items: Items, what: str, source: str, missing: str, modality: str
) -> str | None:
    """Report items without data: a DataError for `missing='error'`, else a warning (returned).

    Every item missing is always an error: the ids almost certainly do not belong to this dataset.
    """
    absent = np.flatnonzero(~has)
    if len(absent) == 0:
        return None
    if len(absent) == items.n_items:
        raise DataError(f"{source}: no item of {items.folder} has {what} (do the ids match the dataset's?)")
    report = (
        f"{len(absent)} of {items.n_items} items have no {what} in {source} "
        f"(itemID {_examples([items.label(int(i)) for i in absent])})"
    )
    if missing == "error":
        raise DataError(f"{report}; --missing zero writes zero rows for them and {modality}_mask.npy")
    log.warning("%s: zero rows written, %s_mask.npy marks the items with data", report, modality)
    return report


def assemble(index: np.ndarray, vectors: np.ndarray, n_items: int, source: str) -> np.ndarray:
    """float32 [n_items, dim]: row index[k] = vectors[k], zeros elsewhere; non-finite output is refused
    here rather than by the dataset reader later."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise DataError(
            f"{source}: the model gave non-finite values for {int(bad.sum())} item(s), e.g. itemID "
            f"{int(index[int(np.argmax(bad))])}"
        )
    out = np.zeros((n_items, vectors.shape[1]), dtype=np.float32)
    out[index] = vectors
    return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
