"""Item-pair geometry for correlation distillation (KDSR's CDL) and its forgetting diagnostic.

Pairs of items are compared row-wise (`pair_similarity`: cosine, dot, or a Euclidean or Manhattan
distance), whole or cut into D contiguous parts (`part_bounds`, `dissected_vectors`: KDSR's dissected
correlations). Pairs come from a batch's sequences (`cooccurring_pairs`: the positions p < q of each
prefix holding different items, one [B, L, L] mask, never an items × items table) or are sampled from
the training events (`sample_training_pairs`, to fit the codebooks). `pearson` compares two columns of
pair similarities.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distillrec.data.dataset import Sequences
from distillrec.data.next_item import event_users
from distillrec.errors import ConfigError

Similarity = Literal["cosine", "dot", "euclidean", "manhattan"]


def cooccurring_pairs(items: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sequence, earlier position, later position) of every pair p < q of real positions of a row
    whose items differ. Builds one [B, L, L] mask; the outputs have one entry per pair."""
    width = items.shape[1]
    pos = torch.arange(width, device=items.device)
    valid = pos[None, :] < lengths[:, None]
    mask = valid[:, :, None] & valid[:, None, :] & (pos[:, None] < pos[None, :])
    mask &= items[:, :, None] != items[:, None, :]
    seq, p, q = mask.nonzero(as_tuple=True)
    return seq, p, q


def pair_similarity(x: Tensor, y: Tensor, kind: Similarity) -> Tensor:
    """Row-wise similarity (cosine, dot) or distance (Euclidean, Manhattan) of x[k] and y[k]."""
    if kind == "cosine":
        return F.cosine_similarity(x, y, dim=-1, eps=1e-8)
    if kind == "dot":
        return (x * y).sum(-1)
    if kind == "euclidean":
        return (x - y).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    if kind == "manhattan":
        return (x - y).abs().sum(-1)
    raise ConfigError(f"unknown similarity {kind!r}")


def part_bounds(width: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices cutting `width` into `parts` near-equal pieces."""
    if not 1 <= parts <= width:
        raise ConfigError(f"cannot cut a {width}-wide code into {parts} parts")
    edges = np.linspace(0, width, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def dissected_vectors(x: Tensor, y: Tensor, bounds: list[tuple[int, int]], kind: Similarity) -> Tensor:
    """[P, D]: the similarity of each pair within each part."""
    return torch.stack([pair_similarity(x[:, a:b], y[:, a:b], kind) for a, b in bounds], dim=1)


def sample_training_pairs(seq: Sequences, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About `n` (item, item) pairs drawn uniformly among the pairs of distinct positions of each
    user's training events, pairs of equal items dropped."""
    users = event_users(seq)
    train_counts = np.bincount(users[seq.label == 0], minlength=len(seq.offsets) - 1)
    weights = train_counts * (train_counts - 1) / 2.0
    if weights.sum() == 0:
        raise ConfigError("no user has two training events: CDL has no co-occurring pair to learn from")
    u = rng.choice(len(weights), size=n, p=weights / weights.sum())
    m = train_counts[u]
    i = (rng.random(n) * m).astype(np.int64)
    j = (rng.random(n) * (m - 1)).astype(np.int64)
    j = j + (j >= i)
    a, c = seq.items[seq.offsets[u] + i], seq.items[seq.offsets[u] + j]
    keep = a != c
    return a[keep], c[keep]


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two equally long vectors (in float64; NaN when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")
