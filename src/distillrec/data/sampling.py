"""Training pairs and uniformly sampled negatives, vectorized over the whole batch.

A negative for user u is an item drawn uniformly from those u has NOT interacted with in train. Draws
are rejection-sampled in bulk: draw for every user, look up `u * n_items + i` in the sorted key array of
training positives with `torch.searchsorted`, redraw only the rejected ones. Users for whom rejection
would take many rounds (almost every item is a positive) are finished by an exact inverse-CDF draw
over their free items, so the cost stays bounded. No Python loop runs over users.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from distillrec.errors import DataError

MAX_REJECTION_ROUNDS = 8


def _train_pairs(train: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of the stored entries, sorted by user then item, duplicates removed."""
    csr = sp.csr_matrix(train, copy=True)
    csr.sum_duplicates()  # also sorts the indices of every row (on a copy: the caller's matrix stays as is)
    users = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return users, csr.indices.astype(np.int64)


class NegativeSampler:
    """Uniform negatives that are never training positives of their user.

    Built once per training set; `sample` costs a few vectorized ops per call (a 120k-pair epoch on
    7k items samples in milliseconds).
    """

    def __init__(self, train: sp.spmatrix, seed: int = 0):
        self.n_users, self.n_items = (int(x) for x in train.shape)
        if self.n_items == 0:
            raise DataError("cannot sample negatives: the dataset has no items")
        users, items = _train_pairs(train)
        degree = np.bincount(users, minlength=self.n_users)
        full = np.flatnonzero(degree >= self.n_items)
        if len(full):
            more = f" ({len(full)} such users)" if len(full) > 1 else ""
            raise DataError(
                f"user {int(full[0])} has all {self.n_items} items as training positives, so no negative item "
                f"can be sampled for it{more}; drop such users or use a dataset with more items"
            )
        self._keys = torch.from_numpy(users * self.n_items + items)  # sorted: rows by user, items sorted
        self._degree = torch.from_numpy(degree.astype(np.int64))
        self._indptr = torch.from_numpy(np.concatenate([[0], np.cumsum(degree)]).astype(np.int64))
        # exact fallback: q_j = p_j - j (j = rank of positive p_j within its user) is non-decreasing per
        # user; the r-th free item of u is r + #{j : q_j <= r}. Keys u * (n_items + 1) + q_j sort globally.
        rank = np.arange(len(users)) - np.repeat(self._indptr[:-1].numpy(), degree)
        self._free_keys = torch.from_numpy(users * (self.n_items + 1) + items - rank)
        self._generator = torch.Generator().manual_seed(seed)
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._on:
            self._on[device] = tuple(
                t.to(device) for t in (self._keys, self._degree, self._indptr, self._free_keys)
            )
        return self._on[device]

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean mask: is (users[k], items[k]) a training pair."""
        keys = self._tensors(users.device)[0]
        if len(keys) == 0:
            return torch.zeros(users.shape, dtype=torch.bool, device=users.device)
        query = users * self.n_items + items
        at = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
        return keys[at] == query

    def sample(self, users: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One negative item per entry of `users` (LongTensor), on the generator's device then moved
        to the users' device. Without a generator, the sampler's own seeded one is used."""
        gen = generator if generator is not None else self._generator
        device = gen.device
        out_device = users.device
        users = users.to(device=device, dtype=torch.long)
        items = torch.randint(self.n_items, users.shape, generator=gen, device=device)
        todo = torch.nonzero(self.is_positive(users, items)).flatten()
        for _ in range(MAX_REJECTION_ROUNDS):
            if todo.numel() == 0:
                return items.to(out_device)
            items[todo] = torch.randint(self.n_items, todo.shape, generator=gen, device=device)
            todo = todo[self.is_positive(users[todo], items[todo])]
        if todo.numel():
            items[todo] = self._exact(users[todo], gen)
        return items.to(out_device)

    def _exact(self, users: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Inverse-CDF draw over each user's free items (uniform, never a positive)."""
        _, degree, indptr, free_keys = self._tensors(users.device)
        n_free = self.n_items - degree[users]
        r = (torch.rand(users.shape, generator=gen, device=users.device) * n_free).long()
        r = torch.minimum(r, n_free - 1)
        below = torch.searchsorted(free_keys, users * (self.n_items + 1) + r, right=True) - indptr[users]
        return r + below


def epoch_batches(
    train: sp.spmatrix, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All training (user, item) pairs once, shuffled with `generator`, in batches of `batch_size`
    (the last one smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    users, items = (torch.from_numpy(a) for a in _train_pairs(train))
    perm = torch.randperm(len(users), generator=generator)
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        yield users[idx], items[idx]
