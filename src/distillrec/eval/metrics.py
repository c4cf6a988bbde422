"""Ranking metrics at several cut-offs, from a hit matrix, as tensor operations (no loop over users).

`hits[b, r]` is 1 when the item ranked r (0-based) for user b is relevant; `n_rel[b]` is how many relevant
items user b has. Definitions (standard, as in RecBole/MMRec with the correct NDCG):
Recall@K = hits in top K / n_rel; Precision@K = hits / K; Hit@K = any hit; NDCG@K = DCG / ideal DCG over
min(n_rel, K) relevant items; MRR@K = 1 / rank of the first hit; MAP@K = sum_r P@r * hit_r / min(n_rel, K).
"""

from __future__ import annotations

import torch
from torch import Tensor

METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")


def metrics_from_hits(hits: Tensor, n_rel: Tensor, ks: list[int] | tuple[int, ...]) -> dict[str, Tensor]:
    """Per-user metric values {"recall@10": [B], ...} for users with n_rel > 0."""
    hits = hits.float()
    n_rel = n_rel.float()
    max_k = hits.shape[1]
    ranks = torch.arange(1, max_k + 1, device=hits.device, dtype=torch.float32)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hits.cumsum(1)
    dcg = (hits * discount).cumsum(1)
    ideal = discount.cumsum(0)
    precision_at_r = cum_hits / ranks
    ap_sum = (precision_at_r * hits).cumsum(1)
    # rank of the first hit (1-based); max_k + 1 when there is none
    first = torch.where(hits.any(1), hits.argmax(1).float() + 1.0, torch.full_like(n_rel, max_k + 1.0))
    out: dict[str, Tensor] = {}
    for k in ks:
        if k > max_k:
            raise ValueError(f"K={k} exceeds the {max_k} ranked items")
        h = cum_hits[:, k - 1]
        n_ideal = torch.clamp(n_rel, max=k).long().clamp(min=1)
        out[f"recall@{k}"] = h / n_rel
        out[f"precision@{k}"] = h / k
        out[f"hit@{k}"] = (h > 0).float()
        out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[n_ideal - 1]
        out[f"mrr@{k}"] = torch.where(first <= k, 1.0 / first, torch.zeros_like(first))
        out[f"map@{k}"] = ap_sum[:, k - 1] / n_ideal.float()
    return out
