"""The trainable tables and feature projections most backbones start from, initialised one way in one place.

The order of the steps is part of the result: each `nn.Embedding` (and each `nn.Linear`) draws its default
init before the xavier draws overwrite it, so the tables consume the random stream in the same order as the
models' earlier inline code and a given seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Init = Callable[[Tensor], Tensor]


def id_embeddings(n_users: int, n_items: int, dim: int) -> tuple[nn.Embedding, nn.Embedding]:
    """(user table, item table), xavier-uniform initialised."""
    user = nn.Embedding(n_users, dim)
    item = nn.Embedding(n_items, dim)
    nn.init.xavier_uniform_(user.weight)
    nn.init.xavier_uniform_(item.weight)
    return user, item


def xavier_table(rows: int, dim: int, init: Init = nn.init.xavier_uniform_) -> nn.Parameter:
    """A [rows, dim] trainable table drawn by `init` alone (no default draw before it, unlike
    `id_embeddings`): the node, preference and confidence tables of the GCN codes and VBPR's."""
    return nn.Parameter(init(torch.empty(rows, dim)))


def feature_projections(
    feature_dims: dict[str, int], dim: int, init: Init = nn.init.xavier_uniform_, bias: bool = True
) -> nn.ModuleDict:
    """One `nn.Linear(width, dim)` per modality, its weight re-drawn by `init` (the bias keeps the
    default), all layers built before any is re-drawn."""
    layers = {m: nn.Linear(w, dim, bias=bias) for m, w in feature_dims.items()}
    for lin in layers.values():
        init(lin.weight)
    return nn.ModuleDict(layers)
