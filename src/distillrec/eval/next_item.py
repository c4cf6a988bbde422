"""Full-ranking next-item evaluation: one target per sample, HR / NDCG / MRR at K.

Each sample's score row covers every item; the target's rank is the number of items scored at least
as high as it (ties count against the target, so a constant scorer gets no credit). Metrics then come
from `metrics_from_hits` with a one-hot hit row, so NDCG is the standard one-target NDCG
(1 / log2(rank + 2)), not the official KDSR code's version divided by an ideal DCG over K hits.
`recall@K` equals `hit@K` here and is reported under both names so that tables shared with top-K
runs line up.

Masking the history (optional, off as in RecBole's protocol) removes every item of the sample's
earlier events from the candidates, except the target itself when it is a repeat purchase.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from distillrec.eval.metrics import metrics_from_hits

NEXT_ITEM_METRICS = ("hit", "recall", "ndcg", "mrr")


def target_ranks(scores: Tensor, target: Tensor) -> Tensor:
    """0-based rank of each row's target among all columns; NaN scores rank last."""
    t = scores.gather(1, target[:, None])
    above = (scores >= t).sum(1) - 1
    return torch.where(torch.isnan(t[:, 0]), torch.full_like(above, scores.shape[1] - 1), above)


def metrics_from_ranks(ranks: Tensor, ks: list[int] | tuple[int, ...]) -> dict[str, Tensor]:
    """Per-sample hit, recall (= hit), NDCG and MRR at each K from 0-based target ranks."""
    max_k = max(ks)
    hits = torch.arange(max_k, device=ranks.device)[None, :] == ranks[:, None]
    values = metrics_from_hits(hits, torch.ones(len(ranks), device=ranks.device), ks)
    return {k: v for k, v in values.items() if k.split("@")[0] in NEXT_ITEM_METRICS}


SeqScoreFn = Callable[[Tensor, Tensor], Tensor]  # (items [B, L], lengths [B]) -> scores [B, n_items]


class NextItemEvaluator:
    """Ranks all items for every sample of a split, in chunks of `batch_size` samples."""

    def __init__(
        self,
        samplers: dict,  # split -> data.next_item.PrefixSampler
        n_items: int,
        ks: tuple[int, ...] | list[int] = (5, 10, 20),
        device: torch.device | str = "cpu",
        batch_size: int = 4096,
        mask_history: bool = False,
    ) -> None:
        self.samplers = samplers
        self.n_items = n_items
        self.ks = tuple(sorted({int(k) for k in ks if int(k) <= n_items}))
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.mask_history = mask_history

    @torch.no_grad()
    def evaluate(self, score_fn: SeqScoreFn, split: str, per_sample: bool = False) -> dict[str, float]:
        """Mean of every metric over the split's samples (a sample = one held-out event)."""
        sampler = self.samplers[split]
        n = len(sampler)
        if n == 0:
            raise ValueError(f"no {split} samples to evaluate")
        sums: dict[str, float] = {}
        kept: dict[str, list[Tensor]] = {}
        for s in range(0, n, self.batch_size):
            rows = np.arange(s, min(s + self.batch_size, n))
            batch = sampler.batch(rows).to(self.device)
            scores = score_fn(batch.items, batch.lengths).float()
            if self.mask_history:
                r, it = sampler.history(rows)
                r_t = torch.from_numpy(r).to(self.device)
                it_t = torch.from_numpy(it).to(self.device)
                keep = it_t != batch.target[r_t]
                scores[r_t[keep], it_t[keep]] = -torch.inf
            values = metrics_from_ranks(target_ranks(scores, batch.target), self.ks)
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + float(v.sum())
                if per_sample:
                    kept.setdefault(name, []).append(v.cpu())
        if per_sample:
            self.last_per_sample = {name: torch.cat(v) for name, v in kept.items()}
        return {name: total / n for name, total in sums.items()}

    @torch.no_grad()
    def topk(
        self,
        score_fn: SeqScoreFn,
        items: Tensor,
        lengths: Tensor,
        k: int,
        exclude: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Tensor:
        """Top-k next items for given prefixes; `exclude` = (row, item) pairs removed first."""
        scores = score_fn(items.to(self.device), lengths.to(self.device)).float()
        if exclude is not None:
            scores[torch.from_numpy(exclude[0]), torch.from_numpy(exclude[1])] = -torch.inf
        return torch.topk(scores, k, dim=1).indices
