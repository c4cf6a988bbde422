"""The Dataset type shared by every model, evaluator and distiller."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class Sequences:
    """Ordered user histories for next-item recommendation.

    `items` holds every event of every user, grouped by user and in order; `offsets[u]:offsets[u+1]`
    is user u's history. `label[e]` is 0/1/2 (train/valid/test) for event e.
    """

    items: np.ndarray  # int64 [n_events]
    offsets: np.ndarray  # int64 [n_users + 1]
    label: np.ndarray  # int8 [n_events]


@dataclass
class Dataset:
    """Users, items, a train/valid/test split of their interactions, and item side information.

    `train`, `valid`, `test` are binary CSR matrices users x items. `features` maps a modality name
    (discovered from the data, never assumed) to a float32 tensor whose row i is item i.
    """

    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: torch.Tensor | None = None  # int64 [n_items], -1 = unknown
    sequences: Sequences | None = None
    user_tokens: np.ndarray | None = None  # original user ids as written in the source file
    item_tokens: np.ndarray | None = None
    source: str = ""

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: int(f.shape[1]) for m, f in self.features.items()}

    @property
    def n_labels(self) -> int:
        return 0 if self.labels is None else int(self.labels.max().item()) + 1

    def split_arrays(self) -> dict[str, np.ndarray]:
        """The split as plain arrays (user, item, x_label), sorted, for saving and hashing."""
        parts = []
        for label, mat in enumerate((self.train, self.valid, self.test)):
            coo = mat.tocoo()
            parts.append(np.stack([coo.row, coo.col, np.full_like(coo.row, label)], axis=1))
        arr = np.concatenate(parts).astype(np.int64)
        arr = arr[np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))]
        return {"user": arr[:, 0], "item": arr[:, 1], "x_label": arr[:, 2]}

    @property
    def split_hash(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.n_users},{self.n_items};".encode())
        for v in self.split_arrays().values():
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()[:16]

    @property
    def content_hash(self) -> str:
        """Split, item features and labels together: what a cached teacher's validity depends on."""
        h = hashlib.sha256(self.split_hash.encode())
        for m in sorted(self.features):
            h.update(m.encode())
            h.update(self.features[m].contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def stats(self) -> dict:
        n_tr, n_va, n_te = self.train.nnz, self.valid.nnz, self.test.nnz
        total = n_tr + n_va + n_te
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "train": n_tr,
            "valid": n_va,
            "test": n_te,
            "density": total / max(1, self.n_users * self.n_items),
            "modalities": {m: d for m, d in self.feature_dims.items()},
            "labels": self.n_labels,
            "sequences": self.sequences is not None,
        }

    def __repr__(self) -> str:  # short: the default dataclass repr would print whole matrices
        s = self.stats()
        return (
            f"Dataset({self.name!r}, users={s['users']}, items={s['items']}, train={s['train']}, "
            f"valid={s['valid']}, test={s['test']}, modalities={s['modalities']}, labels={s['labels']})"
        )


def interactions_to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR from (user, item) pairs; duplicates collapse to one."""
    data = np.ones(len(users), dtype=np.float32)
    mat = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat
