"""The MMRec layout: `<name>.inter` (userID, itemID, optional x_label and position/timestamp), one
`<modality>_feat.npy` per modality, optional `category_label.npy`, optional `<name>.seq.inter`.

Ids are 0-based integers already; row i of every feature file is item i. MMRec's own id maps
(`u_id_mapping.csv`, `i_id_mapping.csv`, TSV) give the original tokens when present.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distillrec.data.dataset import Dataset, Sequences
from distillrec.data.formats.arrays import (
    LABEL_FILE,
    discover_modalities,
    load_features,
    load_labels,
    to_tensors,
)
from distillrec.data.formats.common import assemble, build_sequences, check_folder
from distillrec.data.formats.table import Table, first_duplicate, read_table
from distillrec.data.split import check_split, leave_one_out, random_split
from distillrec.errors import DataError

log = logging.getLogger(__name__)

USER, ITEM, X_LABEL = "userID", "itemID", "x_label"
ORDER_COLUMNS = ("position", "timestamp")
ID_MAPS = {"user": ("u_id_mapping.csv", USER), "item": ("i_id_mapping.csv", ITEM)}


def find_inter(folder: Path, name: str | None = None) -> Path:
    """The one top-K interaction file of the folder (`<name>.inter`, not `.seq.inter`)."""
    inters = sorted(p for p in folder.glob("*.inter") if p.is_file() and not p.name.endswith(".seq.inter"))
    listed = ", ".join(p.name for p in inters) or "none"
    if name is not None:
        path = folder / f"{name}.inter"
        if not path.is_file():
            raise DataError(f"{folder}: no {name}.inter; .inter files found: {listed}")
        return path
    if not inters:
        raise DataError(f"{folder}: no .inter file (expected <name>.inter with userID and itemID columns)")
    if len(inters) > 1:
        raise DataError(f"{folder}: several .inter files ({listed}); pass a name to choose one")
    return inters[0]


def split_labels(table: Table) -> np.ndarray:
    """The x_label column, which must hold only 0 (train), 1 (valid) or 2 (test)."""
    values = table.int_column(X_LABEL, low=-(2**62))
    bad = (values < 0) | (values > 2)
    if bad.any():
        row = int(np.argmax(bad))
        raise table.fail(row, f"x_label {values[row]} is not a split label (0 train, 1 valid, 2 test)")
    return values.astype(np.int8)


def order_column(table: Table) -> tuple[np.ndarray | None, str | None]:
    """The chronological order of the rows: `position` (int) or `timestamp` (number), if present."""
    if "position" in table:
        return table.int_column("position"), "position"
    if "timestamp" in table:
        return table.float_column("timestamp"), "timestamp"
    return None, None


def read_ids(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """userID and itemID, validated as non-negative integers; a header-only file is an error."""
    table.require(USER, ITEM)
    if len(table) == 0:
        raise DataError(f"{table.path}: no interactions (the file has only a header)")
    users, items = table.int_column(USER), table.int_column(ITEM)
    table.check_dense(USER, users, ID_MAPS["user"][0])  # items are bounded by the feature rows, if any
    return users, items


def read_tokens(folder: Path, kind: str, n: int) -> np.ndarray | None:
    """Original user or item ids from MMRec's `u_id_mapping.csv` / `i_id_mapping.csv`, if present."""
    filename, id_column = ID_MAPS[kind]
    path = folder / filename
    if not path.is_file():
        return None
    table = read_table(path, "\t", as_str=True)
    others = [c for c in table.columns if c != id_column]
    if id_column not in table or len(others) != 1:
        log.warning(
            "%s: ignored, expected two columns, one of them %s; found %s", path, id_column, table.columns
        )
        return None
    ids = table.int_column(id_column)
    table.check_below(id_column, ids, n, f"there are {n} {kind}s")
    tokens = np.full(n, "", dtype=object)
    tokens[ids] = table.frame[others[0]].to_numpy(dtype=object)
    return tokens


def _read_sequences(path: Path, n_items_fixed: int | None, feature_file: Path | None) -> tuple[Table, dict]:
    table = read_table(path)
    table.require(USER, ITEM)
    order, order_name = order_column(table)
    if order is None or order_name is None:
        raise DataError(
            f"{path}: missing required column 'position' (or 'timestamp'); columns found: {', '.join(table.columns)}"
        )
    users, items = read_ids(table)
    if n_items_fixed is not None and feature_file is not None:
        table.check_below(
            ITEM, items, n_items_fixed, f"{feature_file} has only {n_items_fixed} rows (one per item)"
        )
    else:  # without features, n_items is max itemID + 1 over both files: a sparse id would size it
        table.check_dense(ITEM, items, ID_MAPS["item"][0])
    if order_name == "position":
        dup = first_duplicate(users, order)
        if dup is not None:
            a, b = dup
            raise DataError(
                f"{path}, lines {table.lines[a]} and {table.lines[b]}: user {users[a]} has two events at "
                f"position {order[a]}"
            )
    x_label = split_labels(table) if X_LABEL in table else None
    if x_label is not None:
        check_chronological_rows(table, users, order, x_label, order_name)
    return table, {"users": users, "items": items, "order": order, "x_label": x_label}


def check_chronological_rows(
    table: Table, users: np.ndarray, order: np.ndarray, x_label: np.ndarray, order_name: str
) -> None:
    """Each user's events must be train, then valid, then test in `order`; the first event out of place is
    named with both lines of the file."""
    perm = np.lexsort((order, users))
    u, lab = users[perm], x_label[perm]
    bad = np.flatnonzero((u[1:] == u[:-1]) & (lab[1:] < lab[:-1]))
    if len(bad):
        early, late = int(perm[bad[0]]), int(perm[bad[0] + 1])
        names = ("train", "valid", "test")
        raise DataError(
            f"{table.path}, lines {table.lines[early]} and {table.lines[late]}: user {users[early]} has a "
            f"{names[x_label[early]]} event ({order_name} {order[early]}) before a {names[x_label[late]]} one "
            f"({order_name} {order[late]}); next-item splits must be chronological"
        )


def pair_order_from_sequences(
    users: np.ndarray, items: np.ndarray, seq: dict, n_items: int
) -> np.ndarray | None:
    """The order of each (user, item) pair as its first position in the sequences, for split='loo'
    on a `.inter` without a position column; None if some pair never occurs in the sequences."""
    keys = seq["users"] * n_items + seq["items"]
    perm = np.lexsort((seq["order"], keys))
    sorted_keys = keys[perm]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    unique_keys, first_order = sorted_keys[first], seq["order"][perm][first]
    query = users * n_items + items
    at = np.minimum(np.searchsorted(unique_keys, query), len(unique_keys) - 1)
    if not (unique_keys[at] == query).all():
        return None
    return first_order[at]


def read_mmrec(folder: Path | str, name: str | None = None, split: str = "auto", seed: int = 0) -> Dataset:
    """Read an MMRec folder. split: auto (x_label if present, else random 8:1:1), x_label, random, loo.

    n_items is the number of feature rows when features exist (all modalities agree, every itemID is
    below it), else max itemID + 1; n_users is max userID + 1 (over `.inter` and `.seq.inter`).
    split='loo' orders pairs by the `.inter` position/timestamp, else by their first position in
    `.seq.inter`. Sequences carry the `.seq.inter` x_label, or leave-one-out by position when it has none; they do not
    follow `split`, which concerns the top-K pairs of `<name>.inter`.
    """
    check_split(split)
    folder = check_folder(folder)
    inter = find_inter(folder, name)
    name = inter.name[: -len(".inter")]
    table = read_table(inter)
    users, items = read_ids(table)
    x_label = split_labels(table) if X_LABEL in table else None
    order, order_name = order_column(table)

    feature_files = discover_modalities(folder)
    features = load_features(feature_files)
    first_file = next(iter(feature_files.values()), None)
    seq_path = folder / f"{name}.seq.inter"
    seq = None
    if features:
        n_items = next(iter(features.values())).shape[0]
        items_from = f"one per row of {first_file}"
        table.check_below(ITEM, items, n_items, f"{first_file} has only {n_items} rows (one per item)")
        if seq_path.is_file():
            _, seq = _read_sequences(seq_path, n_items, first_file)
    else:
        table.check_dense(ITEM, items, ID_MAPS["item"][0])
        if seq_path.is_file():
            _, seq = _read_sequences(seq_path, None, None)
        n_items = int(max(items.max(), seq["items"].max() if seq else -1)) + 1
        items_from = f"max itemID + 1 in {inter.name}" + (f" and {seq_path.name}" if seq else "")
    n_users = int(max(users.max(), seq["users"].max() if seq else -1)) + 1

    dup = first_duplicate(users, items)
    if dup is not None:
        a, b = dup
        raise DataError(
            f"{inter}, lines {table.lines[a]} and {table.lines[b]}: duplicate pair userID {users[a]}, "
            f"itemID {items[a]} (each user-item pair must appear once)"
        )

    label_path = folder / LABEL_FILE
    labels = load_labels(label_path, n_items, items_from) if label_path.is_file() else None
    sequences: Sequences | None = None
    if seq is not None:
        sequences = build_sequences(seq["users"], seq["items"], seq["order"], n_users, seq["x_label"], seed)

    method = split if split != "auto" else ("x_label" if x_label is not None else "random")
    hint = ""
    if method == "x_label":
        if x_label is None:
            raise DataError(
                f"{inter}: split='x_label' needs an x_label column; columns found: {', '.join(table.columns)}"
            )
        part_of = x_label
        hint = " (no row has that x_label; split='random' re-splits the pairs)"
    elif method == "random":
        part_of = random_split(users, items, seed=seed)
    else:
        if order is None and seq is not None:
            order = pair_order_from_sequences(users, items, seq, n_items)
        if order is None:
            raise DataError(
                f"{inter}: split='loo' needs a position or timestamp column; columns found: {', '.join(table.columns)}"
            )
        part_of = leave_one_out(users, items, order, seed)
    feats, label_tensor = to_tensors(features, labels)
    log.debug("read %s: %d users, %d items, %d pairs, split=%s", inter, n_users, n_items, len(users), method)
    return assemble(
        name=name,
        source=str(inter),
        users=users,
        items=items,
        split=part_of,
        n_users=n_users,
        n_items=n_items,
        features=feats,
        labels=label_tensor,
        sequences=sequences,
        user_tokens=read_tokens(folder, "user", n_users),
        item_tokens=read_tokens(folder, "item", n_items),
        empty_hint=hint,
    )
