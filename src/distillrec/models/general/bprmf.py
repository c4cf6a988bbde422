"""BPR-MF (Rendle et al., UAI 2009): user and item ID embeddings, dot-product score, BPR loss."""

from __future__ import annotations

import torch

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import id_embeddings
from distillrec.models.losses import bpr_loss, l2_reg
from distillrec.models.registry import ModelParams, register


@register
class BPRMF(Recommender):
    name = "bprmf"

    class Params(ModelParams):
        embedding_size: int = 64
        reg_weight: float = 1e-4

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        self.user_emb, self.item_emb = id_embeddings(dataset.n_users, dataset.n_items, params.embedding_size)
        self.reg_weight = params.reg_weight

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        return Representation(self.user_emb.weight, self.item_emb.weight)

    def loss(self, rep: Representation, batch: Batch) -> torch.Tensor:
        u, p, n = rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg]
        return bpr_loss((u * p).sum(-1), (u * n).sum(-1)) + self.reg_weight * l2_reg(u, p, n)
