"""What every reader does once its files are parsed: check the folder, assemble the Dataset, build
per-user sequences. Kept here so that the three formats fail the same way on the same problems."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset, Sequences, interactions_to_csr
from distillrec.data.split import TEST, TRAIN, VALID, leave_one_out
from distillrec.errors import DataError

log = logging.getLogger(__name__)

PART_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


def check_folder(folder: Path | str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"{folder}: dataset folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, expected a dataset folder")
    return folder


def warn_cold_users(source: str, parts: list[sp.csr_matrix]) -> None:
    """Users evaluated with no training interaction are scored from their initial embedding: legal, but
    rarely intended, so it is said once (MMRec's splits never produce them). `parts`: [train, valid, test]."""
    has_train = np.diff(parts[0].indptr) > 0
    for part, mat in zip(("valid", "test"), parts[1:], strict=True):
        cold = np.flatnonzero((np.diff(mat.indptr) > 0) & ~has_train)
        if len(cold):
            log.warning(
                "%s: %d users have %s interactions but none in train (first: user %d); they are "
                "evaluated from untrained embeddings",
                source,
                len(cold),
                part,
                int(cold[0]),
            )


def assemble(
    *,
    name: str,
    source: str,
    users: np.ndarray,
    items: np.ndarray,
    split: np.ndarray,
    n_users: int,
    n_items: int,
    features: dict[str, torch.Tensor] | None = None,
    labels: torch.Tensor | None = None,
    sequences: Sequences | None = None,
    user_tokens: np.ndarray | None = None,
    item_tokens: np.ndarray | None = None,
    empty_hint: str = "",
) -> Dataset:
    """Build the CSR matrices; an empty train, valid or test part is an error naming `source`."""
    parts = []
    for part in (TRAIN, VALID, TEST):
        mask = split == part
        if not mask.any():
            raise DataError(f"{source}: no {PART_NAMES[part]} interactions{empty_hint}")
        parts.append(interactions_to_csr(users[mask], items[mask], n_users, n_items))
    warn_cold_users(source, parts)
    return Dataset(
        name=name,
        n_users=int(n_users),
        n_items=int(n_items),
        train=parts[0],
        valid=parts[1],
        test=parts[2],
        features=features or {},
        labels=labels,
        sequences=sequences,
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        source=source,
    )


def build_sequences(
    users: np.ndarray,
    items: np.ndarray,
    order: np.ndarray,
    n_users: int,
    x_label: np.ndarray | None = None,
    seed: int = 0,
) -> Sequences:
    """Group events by user and sort them by `order` (stable: equal orders keep file order).

    Without `x_label`, the labels are leave-one-out by order (last = test, second-last = valid).
    """
    perm = np.lexsort((np.arange(len(users)), order, users))
    counts = np.bincount(users, minlength=n_users)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if x_label is None:
        x_label = leave_one_out(users, np.arange(len(users)), order, seed)
    return Sequences(
        items=items[perm].astype(np.int64),
        offsets=offsets,
        label=np.asarray(x_label)[perm].astype(np.int8),
    )


def drop_repeats(users: np.ndarray, items: np.ndarray, split: np.ndarray, n_items: int) -> np.ndarray:
    """Mask keeping each (user, item) pair once, in its earliest part (train before valid before test;
    within a part, the first row). A pair cannot then be both trained on and tested."""
    keys = users * n_items + items
    perm = np.lexsort((np.arange(len(keys)), split, keys))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[perm[1:]] != keys[perm[:-1]]
    keep = np.zeros(len(keys), dtype=bool)
    keep[perm] = first
    return keep
