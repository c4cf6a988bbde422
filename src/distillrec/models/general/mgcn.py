"""MGCN (Yu et al., ACM MM 2023): multi-view graph convolution with purified modality features.

Per modality m: the item's ID embedding is purified by its features, e_m = e_id ⊙ σ(W_g (W_m f_m + b_m) + b_g)
(behaviour-guided purifier); e_m is propagated over the modality's item-item kNN graph (k neighbours by cosine
of the raw features, similarity-weighted, D^-1/2 A D^-1/2), and users get R̂ e_m (the user-item block of the
normalised interaction graph). The ID embeddings of users and items are propagated by LightGCN (the
"content" view). The behaviour-aware fuser takes an attention-weighted common part of the modality views
and gated modality-specific residuals: side = (common + Σ_m σ(W_m^p content) ⊙ (view_m − common)) / (M + 1);
final = content + side. Loss: BPR + reg · L2 of the batch's final vectors + cl · InfoNCE(side, content) for
the batch's users and positive items (temperature 0.2).

Reference: demonph10/MGCN and MMRec `src/models/mgcn.py`. Departures, each on purpose:
- Any number of modalities: one purifier gate and one preference gate per modality, the shared attention
  query over all of them, and the side view divided by M + 1 (the code's 3 for two modalities).
- The raw feature matrices are not fine-tuned (the code wraps them in trainable embeddings): features are
  an argument of `represent`, so that a distiller can ablate or replace them; a learnable per-item copy
  would carry a modality's information past its ablation. The Linear projection stays trainable.
- The kNN graphs follow the features argument (`FeatureCache`): built once for the training features,
  again for a mean-ablated view, where the constant modality's graph is the uniform average.
- The code's learning-rate schedule (×0.96 every 50 epochs) is left out; the trainer's lr is constant.
MGCN has no user-side modality parameters (its user modality views are built from item views), so
`ablated` changes nothing beyond the features themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import id_embeddings
from distillrec.models.feature_cache import FeatureCache
from distillrec.models.graph import SparseGraph, propagate, sym_norm_adjacency
from distillrec.models.knn import ItemKnnGraph
from distillrec.models.losses import dot_bpr_loss, l2_reg
from distillrec.models.registry import ModelParams, register


def info_nce(view1: Tensor, view2: Tensor, temperature: float) -> Tensor:
    """Mean over rows of -log softmax_j(cos(v1_i, v2_j)/τ)[i]: row i of each view is the positive pair."""
    v1, v2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = (v1 @ v2.T).div_(temperature)  # in place: the [batch, batch] matrix is this loss's cost
    return F.cross_entropy(logits, torch.arange(len(v1), device=v1.device))


@register
class MGCN(Recommender):
    name = "mgcn"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 64
        n_ui_layers: int = 2
        n_item_layers: int = 1
        knn_k: int = 10
        reg_weight: float = 1e-4
        cl_weight: float = 0.01
        cl_temperature: float = 0.2

    params: Params

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        d = params.embedding_size
        self.params = params
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.user_emb, self.item_emb = id_embeddings(self.n_users, self.n_items, d)
        self.proj = nn.ModuleDict({m: nn.Linear(w, d) for m, w in dataset.feature_dims.items()})
        self.purifier = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities}
        )
        self.prefer = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities}
        )
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        adj = sym_norm_adjacency(dataset.train)
        self.graph = SparseGraph(adj, symmetric=True)
        self.user_item = SparseGraph(adj[: self.n_users, self.n_users :].tocsr(), symmetric=False)
        self._graphs = FeatureCache()

    def _item_graph(self, m: str, features: Tensor) -> ItemKnnGraph:
        return self._graphs.get(m, features, lambda f: ItemKnnGraph(f, self.params.knn_k, weighted=True))

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        """The purified item embeddings e_id ⊙ σ(W_g (W_m f_m + b_m) + b_g), one per modality."""
        return {
            m: self.item_emb.weight * self.purifier[m](self.proj[m](features[m])) for m in self.modalities
        }

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        content = propagate(self.graph, ego, self.params.n_ui_layers)
        views, parts = [], {}
        for m, item_m in self.modality_embeddings(features).items():
            graph = self._item_graph(m, features[m])
            for _ in range(self.params.n_item_layers):
                item_m = graph(item_m)
            user_m = self.user_item(item_m)
            parts[m] = (user_m, item_m)
            views.append(torch.cat([user_m, item_m]))
        weights = torch.softmax(torch.cat([self.query(v) for v in views], dim=1), dim=1)  # [N, M]
        common = sum(weights[:, j : j + 1] * v for j, v in enumerate(views))
        specific = sum(
            self.prefer[m](content) * (v - common) for m, v in zip(self.modalities, views, strict=True)
        )
        side = (common + specific) / (len(views) + 1)
        user, item = torch.split(content + side, [self.n_users, self.n_items])
        return Representation(user, item, parts=parts, extras={"side": side, "content": content})

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        u, p, n = rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg]
        side_u, side_i = torch.split(rep.extras["side"], [self.n_users, self.n_items])
        cont_u, cont_i = torch.split(rep.extras["content"], [self.n_users, self.n_items])
        tau = self.params.cl_temperature
        cl = info_nce(side_i[batch.pos], cont_i[batch.pos], tau) + info_nce(
            side_u[batch.users], cont_u[batch.users], tau
        )
        return {
            "bpr": dot_bpr_loss(u, p, n),
            "reg": self.params.reg_weight * l2_reg(u, p, n),
            "cl": self.params.cl_weight * cl,
        }
