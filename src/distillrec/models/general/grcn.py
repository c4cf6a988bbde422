"""GRCN (Wei et al., ACM MM 2020): graph-refined convolutional network for implicit feedback.

Per modality m: item features f_i = norm(leaky(W_m x_i)), user preferences p_u = norm(p_u^m).
- Routing (`n_routing` rounds): each user attends to its items, a_ui = softmax_i(p_u·f_i), and moves
  p_u ← norm(p_u + Σ_i a_ui f_i): the preference that decides which of its edges fit the modality.
- Graph attention on the user-item graph (both directions): for an edge j → v,
  α_jv = softmax over v's neighbours of x_v·x_j, and the modality vector is x_v + Σ_j α_jv x_j.
- Refined graph: each directed edge gets the weight max_m(α^m_jv · c^m_j), c^m_j a learned per-node
  confidence, clipped at 0 (pruning); `weight_mode` "max" / "mean" drop the confidence.
- ID GCN: e = norm(ID embedding), two weighted-sum layers on the refined graph: e + Ãe + Ã²e.
Final vector = concat(ID, modality 1, …, modality M); score = dot product; loss = BPR + L2.
`Representation.parts[m]` holds modality m's (user, item) slices, `extras["id"]` the ID part.

Departures from the reference code (weiyinwei/GRCN Model_routing.py; MMRec src/models/grcn.py):
- Routing really updates the users. In both codes the routing messages travel user → item (PyG's default
  flow sends them to edge_index[1], the items) while the code reads the users' rows, which stay zero:
  routing is a no-op there. `n_routing: 0` reproduces the codes.
- Any number of modalities with any names (the codes know visual, acoustic, textual).
- The L2 term is the official code's (batch ID embeddings and batch users' preferences); MMRec adds the
  first modality's whole preference table a second time.

The pieces EgoGCN shares (feature encoder, graph attention, routing, confidence-weighted edges, the
weighted ID GCN, the final fusion and the loss) live in `models/refined_graph.py`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import xavier_table
from distillrec.models.refined_graph import (
    ConfidenceEdges,
    FeatureEncoder,
    UserItemEdges,
    UserPreferences,
    bpr_and_reg,
    fused_representation,
    graph_attention,
    refine,
    weighted_gcn,
)
from distillrec.models.registry import ModelParams, register


@register
class GRCN(Recommender):
    name = "grcn"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = Field(64, ge=1)
        latent_size: int = Field(64, ge=1)
        n_routing: int = Field(3, ge=0)
        n_id_layers: int = Field(2, ge=0)
        weight_mode: Literal["confid", "max", "mean"] = "confid"
        pruning: bool = True
        reg_weight: float = 1e-4

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.edges = UserItemEdges(dataset)
        n_nodes = self.edges.n_nodes
        self.id_emb = xavier_table(n_nodes, params.embedding_size, nn.init.xavier_normal_)
        self.encoder = FeatureEncoder(dataset.feature_dims, params.latent_size)
        self.pref = UserPreferences(self.modalities, self.n_users, params.latent_size)
        self.edge_weight = ConfidenceEdges(n_nodes, len(self.modalities), params.weight_mode, params.pruning)
        self.n_routing = params.n_routing
        self.n_id_layers = params.n_id_layers
        self.reg_weight = params.reg_weight

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return self.encoder(features)

    def pre_activation_embeddings(self, features: Features) -> dict[str, Tensor]:
        return self.encoder.pre_activation(features)

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        items = self.modality_embeddings(features)
        graph = self.edges.full
        reps, alphas = {}, []
        for m in self.modalities:
            x = F.normalize(torch.cat([self.pref(m, ablated), items[m]]), dim=1)
            x = refine(x, self.edges.to_users, self.n_routing)
            agg, alpha = graph_attention(x, graph)
            reps[m] = x + agg
            alphas.append(alpha)
        weight = self.edge_weight(torch.stack(alphas, dim=1), graph.src)
        id_rep = weighted_gcn(F.normalize(self.id_emb, dim=1), graph, weight, self.n_id_layers)
        return fused_representation(id_rep, reps, self.modalities, self.n_users)

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        return bpr_and_reg(rep, batch, self.id_emb, self.pref, self.n_users, self.reg_weight)
