"""The trainable user and item ID tables most backbones start from, initialised one way in one place.

The order of the steps is part of the result: each `nn.Embedding` draws its default normal init before
the xavier draws overwrite it, so the tables consume the random stream in the same order as the models'
earlier inline code and a given seed gives the same numbers.
"""

from __future__ import annotations

from torch import nn


def id_embeddings(n_users: int, n_items: int, dim: int) -> tuple[nn.Embedding, nn.Embedding]:
    """(user table, item table), xavier-uniform initialised."""
    user = nn.Embedding(n_users, dim)
    item = nn.Embedding(n_items, dim)
    nn.init.xavier_uniform_(user.weight)
    nn.init.xavier_uniform_(item.weight)
    return user, item
