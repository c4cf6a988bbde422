"""VBPR (He & McAuley, AAAI 2016), with one projection and one user preference vector per modality.

score(u, i) = γ_u·γ_i + Σ_m θ_u^m · (E_m f_i^m). Any number of modalities, widths read from the data.
"""

from __future__ import annotations

import torch
from torch import nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation, mean_row
from distillrec.models.embeddings import feature_projections, xavier_table
from distillrec.models.losses import bpr_loss, l2_reg
from distillrec.models.registry import ModelParams, register


@register
class VBPR(Recommender):
    name = "vbpr"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 64
        reg_weight: float = 1e-4

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        d = params.embedding_size
        self.modalities = list(dataset.features)
        self.user_id = xavier_table(dataset.n_users, d)
        self.item_id = xavier_table(dataset.n_items, d)
        self.user_pref = nn.ParameterDict({m: xavier_table(dataset.n_users, d) for m in self.modalities})
        self.proj = feature_projections(dataset.feature_dims, d)
        self.reg_weight = params.reg_weight

    def modality_embeddings(self, features: Features) -> dict[str, torch.Tensor]:
        return {m: self.proj[m](features[m]) for m in self.modalities}

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        items = self.modality_embeddings(features)
        parts = {}
        for m in self.modalities:
            pref = self.user_pref[m]
            parts[m] = (mean_row(pref) if m in ablated else pref, items[m])
        user = torch.cat([self.user_id] + [parts[m][0] for m in self.modalities], dim=1)
        item = torch.cat([self.item_id] + [parts[m][1] for m in self.modalities], dim=1)
        return Representation(user, item, parts=parts)

    def loss(self, rep: Representation, batch: Batch) -> torch.Tensor:
        u, p, n = rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg]
        return bpr_loss((u * p).sum(-1), (u * n).sum(-1)) + self.reg_weight * l2_reg(u, p, n)
