"""BM3 (Zhou et al., WWW 2023): bootstrapped latent representations, trained without negatives.

Users and items: LightGCN over the normalised interaction graph (mean of the layer outputs), the item's ID
embedding added to its output (the "online" vectors h_u, h_i). Each modality is one Linear projection of
its raw features, h_m = W_m f_m + b_m. A shared predictor p (one Linear) maps every online vector; the
contrastive views are dropout copies of the detached online vectors (no target network, no negatives).
For a batch of (user, positive item) pairs, with c(a, b) = 1 − cos(a, b):
  L = c(p(h_u), drop(h_i)) + c(p(h_i), drop(h_u))                          (graph reconstruction)
    + cl · Σ_m [ c(p(h_m,i), drop(h_i)) + c(p(h_m,i), drop(h_m,i)) ]      (inter- / intra-modality)
    + reg · (‖H_U‖_F + ‖H_I‖_F) / n_items                                 (MMRec's EmbLoss, all nodes)
Scores: p(h_u) · (p(h_i) + α Σ_m p(h_m,i)), α = `modality_score_weight` (the paper: α = 0, see below).

Reference: enoche/BM3 and MMRec `src/models/bm3.py`. Departures, each on purpose:
- Any number of modalities, each with its own projection; the modality terms are summed over them.
- The raw feature matrices are not fine-tuned (the code wraps them in trainable embeddings): features are
  an argument of `represent`; a learnable per-item copy would survive a modality's ablation and would sit
  in front of the projection that SGFD replaces. The projection W_m stays trainable.
- `modality_score_weight` (α, default 0.1): the paper and the code score with the ID-based vectors only, so
  features shape the model only through training and ablating a modality at inference would change
  nothing. Here the item vector is p(h_i) + α Σ_m p(h_m,i) (the modality latents that the loss aligns with
  h_i), so a uni-modal counterfactual is meaningful. α = 0 is the paper's scoring exactly; 0.1 was chosen
  on validation among {0, 0.1, 1} on scientific (valid Recall@20 0.211, 0.216, 0.148).
`batch.neg` is ignored: BM3 takes no negatives. BM3 has no user-side modality parameters, so `ablated`
changes nothing beyond the features themselves. `parts[m] = (p(h_u), p(h_m))`: the per-modality latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import feature_projections, id_embeddings
from distillrec.models.graph import SparseGraph, propagate, sym_norm_adjacency
from distillrec.models.registry import ModelParams, register


def _cos_loss(online: Tensor, target: Tensor) -> Tensor:
    """1 − mean cosine similarity; the target is a constant view."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


@register
class BM3(Recommender):
    name = "bm3"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 64
        n_layers: int = 1
        dropout: float = 0.5
        reg_weight: float = 0.1
        cl_weight: float = 2.0
        modality_score_weight: float = 0.1

    params: Params

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        d = params.embedding_size
        self.params = params
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.user_emb, self.item_emb = id_embeddings(self.n_users, self.n_items, d)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.proj = feature_projections(dataset.feature_dims, d, nn.init.xavier_normal_)
        self.graph = SparseGraph(sym_norm_adjacency(dataset.train), symmetric=True)

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        """The Linear projection h_m = W_m f_m + b_m of each modality's raw features."""
        return {m: self.proj[m](features[m]) for m in self.modalities}

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        online_u, online_i = torch.split(
            propagate(self.graph, ego, self.params.n_layers), [self.n_users, self.n_items]
        )
        online_i = online_i + self.item_emb.weight
        modal = self.modality_embeddings(features)
        user, item = self.predictor(online_u), self.predictor(online_i)
        parts = {m: (user, self.predictor(h)) for m, h in modal.items()}
        if self.params.modality_score_weight:
            item = item + self.params.modality_score_weight * sum(parts[m][1] for m in self.modalities)
        extras = {"online_user": online_u, "online_item": online_i, "modal": modal}
        return Representation(user, item, parts=parts, extras=extras)

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        users, items = batch.users, batch.pos
        online_u, online_i = rep.extras["online_user"], rep.extras["online_item"]
        drop = self.params.dropout
        with torch.no_grad():
            target_u = F.dropout(online_u[users], drop)
            target_i = F.dropout(online_i[items], drop)
        ui = _cos_loss(self.predictor(online_u[users]), target_i) + _cos_loss(
            self.predictor(online_i[items]), target_u
        )
        cl: Tensor | float = 0.0
        for m, h in rep.extras["modal"].items():
            pred_m = rep.parts[m][1][items]
            with torch.no_grad():
                target_m = F.dropout(h[items], drop)
            cl = cl + _cos_loss(pred_m, target_i) + _cos_loss(pred_m, target_m)
        reg = (online_u.norm() + online_i.norm()) / self.n_items
        return {"bootstrap": ui, "cl": self.params.cl_weight * cl, "reg": self.params.reg_weight * reg}
