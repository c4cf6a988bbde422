"""The backbones' training objectives: BPR and the two L2 regularisers the reference codes use."""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """-mean log sigmoid(pos - neg), computed stably."""
    return F.softplus(neg - pos).mean()


def l2_reg(*tensors: Tensor) -> Tensor:
    """Sum of squared L2 norms / 2 divided by the batch size (the usual BPR embedding regulariser)."""
    batch = tensors[0].shape[0]
    return cast(Tensor, sum(t.pow(2).sum() for t in tensors)) / (2 * batch)


def dot_bpr_loss(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """BPR on dot-product scores; `neg` is [B, d] or [B, n, d] (several negatives per positive)."""
    pos_score = (user * pos).sum(-1)
    if neg.dim() == 2:
        return bpr_loss(pos_score, (user * neg).sum(-1))
    return bpr_loss(pos_score.unsqueeze(1), (user.unsqueeze(1) * neg).sum(-1))


def mean_square_reg(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """mean(u²) + (mean(pos²) + mean(neg²)) / 2: the mean over stacked (user, item) rows that the
    GRCN/MMGCN/EgoGCN codes use as their L2 term (one user row per positive and per negative)."""
    return user.pow(2).mean() + (pos.pow(2).mean() + neg.pow(2).mean()) / 2
