"""SGFD's layout (Liu et al., ACM MM 2023): `train.csv` and `test.csv` with header
`itemID,userID,reviewerID,asin` (0-based ids), optional `FeatureImage_normal.npy` ("image"),
`FeatureText_normal.npy` ("text"), `MetaData_normal.npy` (category labels), and any `<modality>_feat.npy`.

SGFD publishes no validation split; this reader carves one out of train (see `read_sgfd`), never out of
test, so that early stopping does not peek at the test pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distillrec.data.dataset import Dataset
from distillrec.data.formats.arrays import (
    LABEL_FILE,
    discover_modalities,
    load_features,
    load_labels,
    to_tensors,
)
from distillrec.data.formats.common import assemble, check_folder
from distillrec.data.formats.table import Table, first_duplicate, read_table, sparse_id_problem, sparse_id_row
from distillrec.data.split import TEST, TRAIN, VALID, check_split, holdout_one, random_split
from distillrec.errors import DataError

log = logging.getLogger(__name__)

SPLIT_FILES = {TRAIN: "train.csv", VALID: "valid.csv", TEST: "test.csv"}
NAMED_FEATURES = {"image": "FeatureImage_normal.npy", "text": "FeatureText_normal.npy"}
META_FILE = "MetaData_normal.npy"
MIN_TRAIN_FOR_VALID = 3


def is_sgfd(folder: Path) -> bool:
    return (folder / SPLIT_FILES[TRAIN]).is_file() and (folder / SPLIT_FILES[TEST]).is_file()


def _feature_files(folder: Path) -> dict[str, Path]:
    files = discover_modalities(folder)
    for modality, filename in NAMED_FEATURES.items():
        path = folder / filename
        if path.is_file():
            if modality in files:
                raise DataError(
                    f"{folder}: both {filename} and {files[modality].name} give modality '{modality}'"
                )
            files[modality] = path
    return dict(sorted(files.items()))


def _tokens(tables: list[Table], ids: list[np.ndarray], column: str, n: int) -> np.ndarray | None:
    if not all(column in t for t in tables):
        return None
    tokens = np.full(n, "", dtype=object)
    for table, idx in zip(tables, ids, strict=True):
        tokens[idx] = table.frame[column].to_numpy(dtype=object)
    return tokens


def read_sgfd(folder: Path | str, split: str = "auto", seed: int = 0) -> Dataset:
    """Read an SGFD folder. split: auto / x_label (the published train/test), random (8:1:1), not loo.

    Validation rule (when there is no `valid.csv`): every user with at least 3 train pairs gives one
    train pair, drawn with `seed`, to valid; users with fewer keep all of theirs. Test is untouched.
    n_items and n_users are max id + 1 over the csv files. Feature and label files may have more rows
    than items (SGFD's Office files cover 7,279 items, the csv files 2,406): the extra rows are dropped,
    as SGFD's own loader does; fewer rows is an error.
    """
    check_split(split)
    folder = check_folder(folder)
    if not is_sgfd(folder):
        raise DataError(f"{folder}: not an SGFD folder (needs train.csv and test.csv)")
    parts = [p for p in (TRAIN, VALID, TEST) if (folder / SPLIT_FILES[p]).is_file()]
    tables, users_l, items_l = [], [], []
    for part in parts:
        table = read_table(folder / SPLIT_FILES[part], ",", as_str=True)
        table.require("userID", "itemID")
        if len(table) == 0:
            raise DataError(f"{table.path}: no interactions (the file has only a header)")
        tables.append(table)
        users_l.append(table.int_column("userID"))
        items_l.append(table.int_column("itemID"))
    users, items = np.concatenate(users_l), np.concatenate(items_l)
    part_of = np.concatenate([np.full(len(u), p, dtype=np.int8) for p, u in zip(parts, users_l, strict=True)])
    row_table = np.concatenate([np.full(len(u), i) for i, u in enumerate(users_l)])
    row_in_table = np.concatenate([np.arange(len(u)) for u in users_l])

    dup = first_duplicate(users, items)
    if dup is not None:
        a, b = (tables[row_table[r]].where(row_in_table[r]) for r in dup)
        raise DataError(f"{a} and {b}: duplicate pair userID {users[dup[0]]}, itemID {items[dup[0]]}")

    for column, values in (("userID", users), ("itemID", items)):
        row = sparse_id_row(values)
        if row is not None:
            raise DataError(
                f"{tables[row_table[row]].where(row_in_table[row])}: {sparse_id_problem(column, values)}"
            )
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    feature_files = _feature_files(folder)
    features = load_features(feature_files)
    if features:
        first_modality = next(iter(features))
        rows = features[first_modality].shape[0]
        if rows < n_items:
            r = int(np.argmax(items >= rows))
            where = tables[row_table[r]].where(row_in_table[r])
            raise DataError(
                f"{where}: itemID {items[r]} is out of range: {feature_files[first_modality]} has only {rows} rows"
            )
        if rows > n_items:
            log.info(
                "%s: %d feature rows, %d items in the csv files; extra rows dropped", folder, rows, n_items
            )
            features = {m: f[:n_items] for m, f in features.items()}
    label_files = [folder / f for f in (META_FILE, LABEL_FILE) if (folder / f).is_file()]
    if len(label_files) > 1:
        raise DataError(f"{folder}: both {META_FILE} and {LABEL_FILE} hold labels; keep one")
    items_from = "max itemID + 1 in the csv files"
    labels = load_labels(label_files[0], n_items, items_from, extra_rows_ok=True) if label_files else None

    hint = ""
    if split == "random":
        part_of = random_split(users, items, seed=seed)
    elif split == "loo":
        raise DataError(
            f"{folder}: split='loo' needs an order, and SGFD's csv files have no timestamp or position"
        )
    else:
        hint = f" in {folder}"
        if VALID not in parts:
            train_rows = np.flatnonzero(part_of == TRAIN)
            carve = holdout_one(users[train_rows], items[train_rows], seed, MIN_TRAIN_FOR_VALID)
            part_of[train_rows[carve]] = VALID
            hint = f" in {folder} (valid is carved from users with >= {MIN_TRAIN_FOR_VALID} train pairs)"
    feats, label_tensor = to_tensors(features, labels)
    return assemble(
        name=folder.name,
        source=str(folder),
        users=users,
        items=items,
        split=part_of,
        n_users=n_users,
        n_items=n_items,
        features=feats,
        labels=label_tensor,
        user_tokens=_tokens(tables, users_l, "reviewerID", n_users),
        item_tokens=_tokens(tables, items_l, "asin", n_items),
        empty_hint=hint,
    )
