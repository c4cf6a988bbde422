"""Train/valid/test splits of (user, item) pairs, per user, vectorized and seeded.

Every function returns one int8 label per input pair (0 train, 1 valid, 2 test) and depends only on the
*set* of pairs and the seed, not on the order of the rows in the file: pairs are put in (user, item)
order before random keys are drawn. No Python loop runs over users or pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distillrec.errors import ConfigError

TRAIN, VALID, TEST = 0, 1, 2
SPLITS = ("auto", "x_label", "random", "loo")


def check_split(split: str) -> str:
    """Reject an unknown split name early: auto (the format's default), x_label, random, loo."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def _random_keys(users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """One uniform key per pair, drawn in (user, item) order so that row order does not matter."""
    canonical = np.lexsort((items, users))
    keys = np.empty(len(users), dtype=np.float64)
    keys[canonical] = np.random.default_rng(seed).random(len(users))
    return keys


def _ranks(sorted_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows already grouped by user: rank within the user's group and the group's size."""
    n = len(sorted_users)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = sorted_users[1:] != sorted_users[:-1]
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    sizes = np.diff(np.append(starts, n))
    return np.arange(n) - starts[group], sizes[group]


def holdout_sizes(n: np.ndarray, valid: float, test: float) -> tuple[np.ndarray, np.ndarray]:
    """How many of a user's n pairs go to valid and to test (MMRec's rule, generalised to any ratios).

    held = floor(n * (valid + test)), of which floor(held * valid / (valid + test)) go to valid and the
    rest to test (for 8:1:1, users with >= 10 pairs keep int(0.2 n), split half/half, test gets the odd
    one, exactly as MMRec's 1splitting notebook). Short histories:
      n >= 3: at least one valid and one test pair (for 8:1:1: n - 2 / 1 / 1 below 10 pairs, as MMRec);
      n == 2: one train and one test pair (one valid pair if the test ratio is 0);
      n == 1: the pair is trained on.
    Every user with a pair keeps at least one training pair; a ratio of 0 gives no pair to that part.
    """
    n = np.asarray(n, dtype=np.int64)
    total = valid + test
    held = np.floor(n * total + 1e-9).astype(np.int64)
    n_valid = np.floor(held * (valid / total) + 1e-9).astype(np.int64) if total > 0 else np.zeros_like(n)
    n_test = held - n_valid
    big = n >= 3
    if valid > 0:
        n_valid = np.where(big, np.maximum(n_valid, 1), n_valid)
    if test > 0:
        n_test = np.where(big, np.maximum(n_test, 1), n_test)
    two = n == 2
    n_test = np.where(two, 1 if test > 0 else 0, n_test)
    n_valid = np.where(two, 1 if (test == 0 and valid > 0) else 0, n_valid)
    # keep one training pair: take the excess from valid first, then from test
    excess = np.maximum(n_valid + n_test - (n - 1), 0)
    cut = np.minimum(excess, n_valid)
    n_valid, n_test = n_valid - cut, n_test - (excess - cut)
    return n_valid, n_test


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ConfigError(
            f"split ratios must be three non-negative numbers summing to 1 with train > 0, got {ratios}"
        )
    return float(ratios[0]), float(ratios[1]), float(ratios[2])


def random_split(
    users: np.ndarray,
    items: np.ndarray,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Random per-user split with the sizes of `holdout_sizes`; labels aligned with the input rows."""
    _, valid, test = _check_ratios(tuple(ratios))
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    order = np.lexsort((_random_keys(users, items, seed), users))
    rank, size = _ranks(users[order])
    n_valid, n_test = holdout_sizes(size, valid, test)
    from_end = size - rank  # 1 = the user's last pair in random order
    lab = np.full(len(users), TRAIN, dtype=np.int8)
    lab[from_end <= n_test + n_valid] = VALID
    lab[from_end <= n_test] = TEST
    labels = np.empty_like(lab)
    labels[order] = lab
    return labels


def leave_one_out(users: np.ndarray, items: np.ndarray, order: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per user, the last pair by `order` is test, the second-last valid, the rest train.

    Ties in `order` are broken by a seeded random key. A user with 2 pairs gives one to test and keeps
    one; a user with 1 pair keeps it for training.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    perm = np.lexsort((_random_keys(users, items, seed), np.asarray(order), users))
    rank, size = _ranks(users[perm])
    from_end = size - rank
    lab = np.full(len(users), TRAIN, dtype=np.int8)
    lab[(from_end == 2) & (size >= 3)] = VALID
    lab[(from_end == 1) & (size >= 2)] = TEST
    labels = np.empty_like(lab)
    labels[perm] = lab
    return labels


def holdout_one(users: np.ndarray, items: np.ndarray, seed: int = 0, min_items: int = 3) -> np.ndarray:
    """Mask choosing one random pair per user who has at least `min_items` pairs (e.g. a validation
    split carved out of a published train split, leaving such a user at least min_items - 1 pairs)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    perm = np.lexsort((_random_keys(users, items, seed), users))
    rank, size = _ranks(users[perm])
    mask = np.zeros(len(users), dtype=bool)
    mask[perm] = (rank == 0) & (size >= min_items)
    return mask
