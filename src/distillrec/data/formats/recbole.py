"""RecBole atomic files: `<name>.inter` with a typed header (`user_id:token\titem_id:token\t...`),
or RecBole's pre-split sequential benchmarks `<name>.{train,valid,test}.inter`
(`user_id:token\titem_id_list:token_seq\titem_id:token`, one row per prediction target).

Tokens are mapped to contiguous ids in order of first appearance (RecBole's own rule, without its
[PAD] id 0); the original tokens are kept in `Dataset.user_tokens` / `item_tokens`. If the folder has
`<modality>_feat.npy` files, item tokens must be integers and are used as feature rows unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from distillrec.data.dataset import Dataset, Sequences
from distillrec.data.formats.arrays import (
    LABEL_FILE,
    discover_modalities,
    load_features,
    load_labels,
    to_tensors,
)
from distillrec.data.formats.common import assemble, build_sequences, check_folder, drop_repeats
from distillrec.data.formats.table import Table, read_table
from distillrec.data.split import TEST, TRAIN, VALID, check_split, leave_one_out, random_split
from distillrec.errors import DataError

log = logging.getLogger(__name__)

TYPES = ("token", "token_seq", "float", "float_seq")
PARTS = {TRAIN: "train", VALID: "valid", TEST: "test"}
USER, ITEM, ITEM_LIST, TIME = "user_id", "item_id", "item_id_list", "timestamp"


def is_typed_header(path: Path) -> bool:
    """True if every header field is `name:type` with a RecBole type."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            header = f.readline().rstrip("\r\n")
    except OSError:
        return False
    fields = header.split("\t")
    return all(":" in c and c.rsplit(":", 1)[1].strip() in TYPES for c in fields)


def _fields(table: Table, required: tuple[str, ...]) -> dict[str, str]:
    """Field name -> raw column, checking every column is typed and the required fields exist."""
    fields = {}
    for col in table.columns:
        if ":" not in col or col.rsplit(":", 1)[1] not in TYPES:
            raise DataError(
                f"{table.path}, line 1: column '{col}' is not typed like RecBole's name:type "
                f"(type one of {', '.join(TYPES)})"
            )
        fields[col.rsplit(":", 1)[0]] = col
    for name in required:
        if name not in fields:
            raise DataError(
                f"{table.path}: missing required column '{name}'; columns found: {', '.join(table.columns)}"
            )
    if len(table) == 0:
        raise DataError(f"{table.path}: no interactions (the file has only a header)")
    return fields


def find_files(folder: Path, name: str | None) -> tuple[str, bool]:
    """(name, pre_split) of the folder's RecBole dataset."""
    singles = sorted(
        p.name[: -len(".inter")]
        for p in folder.glob("*.inter")
        if not any(p.name.endswith(f".{s}.inter") for s in ("train", "valid", "test", "seq"))
    )
    pre_split = sorted(
        p.name[: -len(".train.inter")]
        for p in folder.glob("*.train.inter")
        if all((folder / p.name.replace(".train.inter", f".{s}.inter")).is_file() for s in ("valid", "test"))
    )
    listed = ", ".join(
        [f"{s}.inter" for s in singles] + [f"{s}.{{train,valid,test}}.inter" for s in pre_split]
    )
    if name is not None:
        if name in singles:
            return name, False
        if name in pre_split:
            return name, True
        raise DataError(
            f"{folder}: no {name}.inter (nor {name}.train/valid/test.inter); found: {listed or 'none'}"
        )
    found = [(s, False) for s in singles] + [(s, True) for s in pre_split]
    if not found:
        raise DataError(f"{folder}: no .inter file")
    if len(found) > 1:
        raise DataError(f"{folder}: several RecBole datasets ({listed}); pass a name to choose one")
    return found[0]


def _int_tokens(
    tokens: np.ndarray, table: Table, rows: np.ndarray, column: str, why: Path | None
) -> np.ndarray:
    """Item tokens read as integer ids (to index feature rows); the first bad token names its line."""
    numbers = pd.to_numeric(pd.Series(tokens, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < 0) | (numbers >= 2.0**63)
    if bad.any():
        i = int(np.argmax(bad))
        raise table.fail(
            int(rows[i]),
            f"{column} token '{tokens[i]}' is not a non-negative integer, needed to index rows of {why}",
        )
    return numbers.astype(np.int64)


class _Items:
    """Item tokens -> ids: contiguous by first appearance, or the integers themselves with features."""

    def __init__(self, folder: Path):
        self.feature_files = discover_modalities(folder)
        self.features = load_features(self.feature_files)
        self.first_file = next(iter(self.feature_files.values()), None)
        self.rows = next(iter(self.features.values())).shape[0] if self.features else None

    def encode(
        self, pieces: list[tuple[np.ndarray, Table, np.ndarray, str]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """pieces: (tokens, table, row of each token, column); returns ids per piece and the token table."""
        if self.rows is None:
            codes, uniques = pd.factorize(np.concatenate([p[0] for p in pieces]))
            bounds = np.cumsum([0] + [len(p[0]) for p in pieces])
            ids = [codes[a:b].astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            return ids, np.asarray(uniques, dtype=object)
        out: list[np.ndarray] = []
        for tokens, table, rows, column in pieces:
            piece = _int_tokens(tokens, table, rows, column, self.first_file)
            over = piece >= self.rows
            if over.any():
                i = int(np.argmax(over))
                raise table.fail(
                    int(rows[i]),
                    f"{column} {piece[i]} is out of range: {self.first_file} has only {self.rows} rows",
                )
            out.append(piece)
        return out, np.arange(self.rows).astype(str).astype(object)


def _split(
    split: str, path: Path, users: np.ndarray, items: np.ndarray, order: np.ndarray | None, seed: int
) -> np.ndarray:
    method = split if split != "auto" else ("loo" if order is not None else "random")
    if method == "x_label":
        raise DataError(f"{path}: split='x_label' needs an x_label column; RecBole files have none")
    if method == "random":
        return random_split(users, items, seed=seed)
    if order is None:
        raise DataError(f"{path}: split='loo' needs a timestamp column (timestamp:float); none found")
    return leave_one_out(users, items, order, seed)


def _read_single(folder: Path, name: str, split: str, seed: int, items_map: _Items) -> dict:
    path = folder / f"{name}.inter"
    table = read_table(path, "\t", as_str=True)
    fields = _fields(table, (USER, ITEM))
    user_tokens = table.str_column(fields[USER])
    item_tokens = table.str_column(fields[ITEM])
    order = table.float_column(fields[TIME]) if TIME in fields else None
    user_codes, user_uniques = pd.factorize(user_tokens)
    rows = np.arange(len(table))
    (items,), item_uniques = items_map.encode([(item_tokens, table, rows, fields[ITEM])])
    users = user_codes.astype(np.int64)
    n_users, n_items = len(user_uniques), len(item_uniques)
    sequences = build_sequences(users, items, order, n_users, None, seed) if order is not None else None
    # RecBole files are event logs: a repeated pair is kept once, at its earliest event
    first = np.lexsort((rows, order if order is not None else rows, users * n_items + items))
    keep = np.zeros(len(users), dtype=bool)
    sorted_keys = (users * n_items + items)[first]
    keep[first] = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    if not keep.all():
        log.info("%s: %d repeated user-item events kept once (earliest)", path, int((~keep).sum()))
    users, items = users[keep], items[keep]
    order = order[keep] if order is not None else None
    part_of = _split(split, path, users, items, order, seed)
    return {
        "source": str(path), "users": users, "items": items, "split": part_of, "n_users": n_users,
        "n_items": n_items, "sequences": sequences, "user_tokens": np.asarray(user_uniques, dtype=object),
        "item_tokens": item_uniques,
    }  # fmt: skip


def _explode(table: Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A token_seq column as (tokens, row index of each token), without a Python loop over rows."""
    lists = table.frame[column].str.split()
    lengths = lists.str.len().to_numpy(dtype=np.int64)
    tokens = np.asarray(" ".join(table.frame[column]).split(), dtype=object)
    return tokens, np.repeat(np.arange(len(table)), lengths)


def _read_pre_split(folder: Path, name: str, split: str, seed: int, items_map: _Items) -> dict:
    """Train pairs: every item of the train rows, of the valid histories, and of the test histories
    except the valid targets; valid and test pairs: the valid and test targets."""
    tables, fields = {}, {}
    for part, label in PARTS.items():
        tables[part] = read_table(folder / f"{name}.{label}.inter", "\t", as_str=True)
        fields[part] = _fields(tables[part], (USER, ITEM))
    user_codes, user_uniques = pd.factorize(
        np.concatenate([tables[p].str_column(fields[p][USER]) for p in PARTS])
    )
    bounds = np.cumsum([0] + [len(tables[p]) for p in PARTS])
    row_user = {p: user_codes[bounds[p] : bounds[p + 1]].astype(np.int64) for p in PARTS}
    pieces, owners, kinds = [], [], []
    for p in PARTS:
        t = tables[p]
        if ITEM_LIST in fields[p]:
            tokens, rows = _explode(t, fields[p][ITEM_LIST])
            pieces.append((tokens, t, rows, fields[p][ITEM_LIST]))
            owners.append(row_user[p][rows])
            kinds.append((p, "history", rows))
        rows = np.arange(len(t))
        pieces.append((t.str_column(fields[p][ITEM]), t, rows, fields[p][ITEM]))
        owners.append(row_user[p])
        kinds.append((p, "target", rows))
    ids, item_tokens = items_map.encode(pieces)
    n_users, n_items = len(user_uniques), len(item_tokens)
    got = {(p, k): (u, i, r) for (p, k, r), u, i in zip(kinds, owners, ids, strict=True)}
    empty = np.zeros(0, dtype=np.int64)
    none = (empty, empty, empty)
    valid_keys = got[(VALID, "target")][0] * n_items + got[(VALID, "target")][1]
    test_hist = got.get((TEST, "history"), none)
    not_valid = ~np.isin(test_hist[0] * n_items + test_hist[1], valid_keys)
    chunks = [
        (got.get((TRAIN, "history"), none)[:2], TRAIN),
        (got[(TRAIN, "target")][:2], TRAIN),
        (got.get((VALID, "history"), none)[:2], TRAIN),
        ((test_hist[0][not_valid], test_hist[1][not_valid]), TRAIN),
        (got[(VALID, "target")][:2], VALID),
        (got[(TEST, "target")][:2], TEST),
    ]
    users = np.concatenate([c[0][0] for c in chunks]).astype(np.int64)
    items = np.concatenate([c[0][1] for c in chunks]).astype(np.int64)
    part_of = np.concatenate([np.full(len(c[0][0]), c[1], dtype=np.int8) for c in chunks])
    keep = drop_repeats(users, items, part_of, n_items)
    users, items, part_of = users[keep], items[keep], part_of[keep]
    if split not in ("auto", "x_label"):
        part_of = _split(split, folder / f"{name}.train.inter", users, items, None, seed)
    return {
        "source": str(folder / f"{name}.{{train,valid,test}}.inter"), "users": users, "items": items,
        "split": part_of, "n_users": n_users, "n_items": n_items,
        "sequences": _test_sequences(got, row_user, n_users, n_items),
        "user_tokens": np.asarray(user_uniques, dtype=object), "item_tokens": item_tokens,
    }  # fmt: skip


def _test_sequences(got: dict, row_user: dict, n_users: int, n_items: int) -> Sequences | None:
    """Each user's full history = its test row's item_id_list + target (leave-one-out benchmarks);
    the second-last event is valid when it is the user's valid target."""
    if (TEST, "history") not in got:
        return None
    test_users = row_user[TEST]
    if len(np.unique(test_users)) != len(test_users):
        log.info("several test rows per user: no sequences built")
        return None
    h_users, h_items, h_rows = got[(TEST, "history")]
    t_users, t_items, t_rows = got[(TEST, "target")]
    hist_len = np.bincount(h_rows, minlength=len(test_users))
    pos_in_row = np.arange(len(h_rows)) - np.repeat(np.cumsum(hist_len) - hist_len, hist_len)
    users = np.concatenate([h_users, t_users])
    items = np.concatenate([h_items, t_items])
    order = np.concatenate([pos_in_row, hist_len[t_rows]])
    label = np.concatenate([np.full(len(h_users), TRAIN, np.int8), np.full(len(t_users), TEST, np.int8)])
    valid_item = np.full(n_users, -1, dtype=np.int64)
    v_users, v_items, _ = got[(VALID, "target")]
    valid_item[v_users] = v_items
    last_hist = pos_in_row == hist_len[h_rows] - 1
    label[: len(h_users)][last_hist & (valid_item[h_users] == h_items)] = VALID
    return build_sequences(users, items, order, n_users, label)


def read_recbole(folder: Path | str, name: str | None = None, split: str = "auto", seed: int = 0) -> Dataset:
    """Read RecBole atomic interactions. split: auto = leave-one-out by timestamp when the file has one,
    else random 8:1:1 (per user, see split.py); random; loo. Pre-split files keep their split under auto.

    A repeated user-item pair is kept once (its earliest event, or its earliest part for pre-split
    files), so that no pair is both trained on and tested; sequences keep every event.
    """
    check_split(split)
    folder = check_folder(folder)
    name, pre_split = find_files(folder, name)
    items_map = _Items(folder)
    read = _read_pre_split if pre_split else _read_single
    parts = read(folder, name, split, seed, items_map)
    labels = None
    if (folder / LABEL_FILE).is_file():
        labels = load_labels(folder / LABEL_FILE, parts["n_items"], f"the item tokens of {name}")
    feats, label_tensor = to_tensors(items_map.features, labels)
    return assemble(name=name, features=feats, labels=label_tensor, **parts)
