"""Full ranking over all items with masking presets, batched over users only to bound memory.

The model's representation is computed once per evaluation by the caller; each user chunk costs one
score matmul, an in-place mask, a top-K and a membership test of the top-K against the held-out items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.errors import ConfigError
from distillrec.eval.metrics import metrics_from_hits

# Which splits are masked (removed from the candidates) when ranking for each target split.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # As the MMRec toolbox: only training items are masked; validation items stay candidates at test.
    "mmrec": {"valid": ("train",), "test": ("train",)},
    # Every known interaction other than the target split is masked.
    "strict": {"valid": ("train",), "test": ("train", "valid")},
}

ScoreFn = Callable[[Tensor, Tensor | None], Tensor]  # (users, out buffer or None) -> [B, n_items]


def masked_splits(preset: str, split: str) -> tuple[str, ...]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown evaluation preset {preset!r}; choose one of {sorted(PRESETS)}")
    if split not in PRESETS[preset]:
        raise ConfigError(f"unknown split {split!r}; choose valid or test")
    return PRESETS[preset][split]


def _csr_rows(mat: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """(indptr, indices) of the selected rows as torch tensors."""
    sub = mat[rows]
    sub.sort_indices()
    return (
        torch.from_numpy(sub.indptr.astype(np.int64)).to(device),
        torch.from_numpy(sub.indices.astype(np.int64)).to(device),
    )


@dataclass
class _Plan:
    users: Tensor  # users evaluated (those with >= 1 target item)
    mask_ptr: Tensor
    mask_idx: Tensor
    target_ptr: Tensor
    target_idx: Tensor
    n_rel: Tensor


class Evaluator:
    """Evaluates models on one dataset; the masks and targets of each split are prepared once."""

    def __init__(
        self,
        dataset: Dataset,
        preset: str = "mmrec",
        ks: tuple[int, ...] | list[int] = (10, 20, 50),
        device: torch.device | str = "cpu",
        batch_size: int = 4096,
    ) -> None:
        masked_splits(preset, "test")
        self.dataset = dataset
        self.preset = preset
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._plans: dict[str, _Plan] = {}
        self._buffer: Tensor | None = None

    def mask_matrix(self, split: str) -> sp.csr_matrix:
        """All items removed from the candidates when ranking for `split` under this preset."""
        mats = [getattr(self.dataset, s) for s in masked_splits(self.preset, split)]
        mask = mats[0]
        for m in mats[1:]:
            mask = mask + m
        return mask.tocsr()

    def plan(self, split: str) -> _Plan:
        if split not in self._plans:
            target: sp.csr_matrix = getattr(self.dataset, split)
            n_rel = np.diff(target.indptr)
            users = np.flatnonzero(n_rel > 0)
            if len(users) == 0:
                raise ConfigError(f"dataset {self.dataset.name!r} has no {split} interactions to evaluate")
            mask_ptr, mask_idx = _csr_rows(self.mask_matrix(split), users, self.device)
            t_ptr, t_idx = _csr_rows(target, users, self.device)
            self._plans[split] = _Plan(
                torch.from_numpy(users).long().to(self.device),
                mask_ptr,
                mask_idx,
                t_ptr,
                t_idx,
                torch.from_numpy(n_rel[users]).to(self.device),
            )
        return self._plans[split]

    def _buffer_for(self, rows: int, n_items: int, dtype: torch.dtype) -> Tensor:
        buf = self._buffer
        if buf is None or buf.shape[0] < rows or buf.shape[1] != n_items or buf.dtype != dtype:
            buf = torch.empty(rows, n_items, dtype=dtype, device=self.device)
            self._buffer = buf
        return buf[:rows]

    @torch.no_grad()
    def topk(
        self, score_fn: ScoreFn, split: str, k: int, users: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k item ids per user with this split's masked items removed: (users, [n_users, k])."""
        plan = self.plan(split)
        if users is None:
            users = plan.users
            mask_ptr, mask_idx = plan.mask_ptr, plan.mask_idx
        else:
            mask_ptr, mask_idx = _csr_rows(self.mask_matrix(split), users.cpu().numpy(), self.device)
            users = users.to(self.device)
        out = []
        for start in range(0, len(users), self.batch_size):
            stop = min(start + self.batch_size, len(users))
            scores = self._masked_scores(score_fn, users[start:stop], mask_ptr, mask_idx, start, stop)
            out.append(torch.topk(scores, k, dim=1, sorted=True).indices)
        return users, torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)

    def _masked_scores(
        self, score_fn: ScoreFn, users: Tensor, ptr: Tensor, idx: Tensor, start: int, stop: int
    ) -> Tensor:
        n_items = self.dataset.n_items
        buf = self._buffer_for(stop - start, n_items, torch.float32)
        scores = score_fn(users, buf)
        lo, hi = ptr[start], ptr[stop]
        counts = ptr[start + 1 : stop + 1] - ptr[start:stop]
        rows = torch.repeat_interleave(torch.arange(stop - start, device=self.device), counts)
        scores[rows, idx[lo:hi]] = -torch.inf
        return scores

    @torch.no_grad()
    def evaluate(self, score_fn: ScoreFn, split: str, per_user: bool = False) -> dict[str, float]:
        """Mean of every metric at every K over users with held-out items in `split`."""
        plan = self.plan(split)
        max_k = min(max(self.ks), self.dataset.n_items)
        n_items = self.dataset.n_items
        sums: dict[str, Tensor] = {}
        per_user_values: dict[str, list[Tensor]] = {}
        for start in range(0, len(plan.users), self.batch_size):
            stop = min(start + self.batch_size, len(plan.users))
            scores = self._masked_scores(
                score_fn, plan.users[start:stop], plan.mask_ptr, plan.mask_idx, start, stop
            )
            top = torch.topk(scores, max_k, dim=1, sorted=True).indices
            # membership of (row, item) in the chunk's targets, via sorted int64 keys
            lo, hi = plan.target_ptr[start], plan.target_ptr[stop]
            counts = plan.target_ptr[start + 1 : stop + 1] - plan.target_ptr[start:stop]
            t_rows = torch.repeat_interleave(torch.arange(stop - start, device=self.device), counts)
            t_keys = t_rows * n_items + plan.target_idx[lo:hi]  # sorted: CSR rows ascending, indices sorted
            keys = torch.arange(stop - start, device=self.device).unsqueeze(1) * n_items + top
            pos = torch.searchsorted(t_keys, keys).clamp(max=max(len(t_keys) - 1, 0))
            hits = t_keys[pos] == keys
            values = metrics_from_hits(hits, plan.n_rel[start:stop], [k for k in self.ks if k <= max_k])
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v.sum()
                if per_user:
                    per_user_values.setdefault(name, []).append(v.cpu())
        n = len(plan.users)
        result = {name: float(s) / n for name, s in sums.items()}
        if per_user:
            self.last_per_user = {name: torch.cat(v) for name, v in per_user_values.items()}
        return result


def dot_score_fn(user: Tensor, item: Tensor) -> ScoreFn:
    """Score function for dot-product models, writing into the evaluator's reused buffer."""
    item_t = item.T.contiguous()

    def fn(users: Tensor, out: Tensor | None) -> Tensor:
        if out is None:
            return user[users] @ item_t
        return torch.mm(user[users], item_t, out=out)

    return fn


def buffered_score_fn(score: Callable[[Tensor], Tensor]) -> ScoreFn:
    """Score function from a plain scorer (users -> [len(users), n_items]), copied into the evaluator's
    reused buffer when the shapes agree. Which scorer a model needs is its caller's choice
    (`distillrec.training.scoring.model_score_fn`); this module knows nothing of models."""

    def fn(users: Tensor, out: Tensor | None) -> Tensor:
        s = score(users).float()
        if out is not None and out.shape == s.shape:
            out.copy_(s)
            return out
        return s

    return fn
