"""LightGCN (He et al., SIGIR 2020): ID embeddings propagated over the normalised user-item graph.

The final vector of a node is the mean of its layer outputs (layer 0 included). Propagation runs on a
CSR matrix whose backward is again a product with the same symmetric matrix.
"""

from __future__ import annotations

import torch

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import id_embeddings
from distillrec.models.graph import SparseGraph, propagate, sym_norm_adjacency
from distillrec.models.losses import bpr_loss, l2_reg
from distillrec.models.registry import ModelParams, register


@register
class LightGCN(Recommender):
    name = "lightgcn"

    class Params(ModelParams):
        embedding_size: int = 64
        n_layers: int = 2
        reg_weight: float = 1e-4

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.user_emb, self.item_emb = id_embeddings(self.n_users, self.n_items, params.embedding_size)
        self.graph = SparseGraph(sym_norm_adjacency(dataset.train), symmetric=True)
        self.n_layers = params.n_layers
        self.reg_weight = params.reg_weight

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        final = propagate(self.graph, ego, self.n_layers)
        user, item = torch.split(final, [self.n_users, self.n_items])
        return Representation(user, item)

    def loss(self, rep: Representation, batch: Batch) -> torch.Tensor:
        u, p, n = rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg]
        reg = l2_reg(self.user_emb(batch.users), self.item_emb(batch.pos), self.item_emb(batch.neg))
        return bpr_loss((u * p).sum(-1), (u * n).sum(-1)) + self.reg_weight * reg
