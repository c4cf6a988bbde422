"""EgoGCN (Chen et al., ACM MM 2022): multimodal graph fusion by edge-wise modulation, built on GRCN.

Per modality m, nodes start as in GRCN: x^m = norm([p_u^m ; leaky(W_m f_i^m)]). Then
- Edge-wise modulation (EM), for each directed edge j → v of the user-item graph:
  α_jv = softmax_{j ∈ N(v)}(x^m_v·x^m_j);
  "hard": the message is the mean of j's views over all modalities where α_jv > `threshold`, else x^m_j;
  "soft": the message is (x^m_j + Σ_{m'≠m} σ(G_{m←m'} x^{m'}_j) ⊙ x^{m'}_j) / M, on every edge;
  with `reattn` the attention is recomputed on the modulated messages; z^m_v = norm(Σ_j α_jv msg_j).
  As in the code, z^m replaces the node's own vector (no residual): a node's own view enters only
  through the attention and its neighbours' messages.
- Routing: `n_routing` rounds of z_v ← norm(z_v + Σ_j α_jv z_j) (GRCN's graph attention, all nodes).
- ID branch: e = norm(ID embedding) propagated over the symmetric-normalised graph, e + Âe + … + Â^L e
  (`id_graph: gcn`, the code's `weight_mode=GCN`), or GRCN's confidence-weighted refined graph
  (`id_graph: confidence`) with the edge attention of the final modality vectors.
Final vector = concat(ID, z^1, …, z^M); score = dot product; loss = BPR + L2 (as GRCN).
The parts shared with GRCN come from `models/refined_graph.py`.
`Representation.parts[m]` holds (user, item) slices of z^m, `extras["id"]` the ID part.

Departures from the reference code (feiyuchen7/EgoGCN Model_routing_21sp.py), and why:
- Any number of modalities with any names: the code hard-wires visual, acoustic and textual (and crashes
  without all three); hard fusion averages over all M views and soft fusion has one gate per ordered pair.
- The ID GCN sums layers 0..L. The code's third layer propagates the first layer's output again
  (x + Âx + 2Â²x); we compute the intended Â³x.
- Preferences are normalised in the forward pass; the code overwrites the parameters' data with their
  normalised rows at every step (a projection the optimiser does not see).
- The code's `central` switch only changes which fusion variants are available; it is left out. Its
  learning-rate decay (×0.8 every 50 epochs, recreating Adam) is not reproduced: the trainer's constant
  rate and early stopping apply as for every model.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import xavier_table
from distillrec.models.graph import SparseGraph, sym_norm_adjacency
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
class EgoGCN(Recommender):
    name = "egogcn"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = Field(64, ge=1)
        latent_size: int = Field(64, ge=1)
        fusion: Literal["hard", "soft"] = "hard"
        threshold: float = 0.4
        reattn: bool = True
        n_routing: int = Field(3, ge=0)
        id_graph: Literal["gcn", "confidence"] = "gcn"
        n_id_layers: int = Field(3, ge=0)
        reg_weight: float = 1e-4

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.edges = UserItemEdges(dataset)
        n_nodes, c = self.edges.n_nodes, params.latent_size
        self.id_emb = xavier_table(n_nodes, params.embedding_size, nn.init.xavier_normal_)
        self.encoder = FeatureEncoder(dataset.feature_dims, c)
        self.pref = UserPreferences(self.modalities, self.n_users, c)
        self.fusion = params.fusion
        self.threshold = params.threshold
        self.reattn = params.reattn
        if params.fusion == "soft":
            self.gates = nn.ModuleDict(
                {
                    m: nn.ModuleDict({o: nn.Linear(c, c) for o in self.modalities if o != m})
                    for m in self.modalities
                }
            )
        self.n_routing = params.n_routing
        self.id_graph = params.id_graph
        self.n_id_layers = params.n_id_layers
        if params.id_graph == "gcn":
            self.graph = SparseGraph(sym_norm_adjacency(dataset.train), symmetric=True)
        else:
            self.edge_weight = ConfidenceEdges(n_nodes, len(self.modalities), "confid", pruning=True)
        self.reg_weight = params.reg_weight

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return self.encoder(features)

    def pre_activation_embeddings(self, features: Features) -> dict[str, Tensor]:
        return self.encoder.pre_activation(features)

    def _soft_views(self, xs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per node and modality m: (x^m + Σ_{m'≠m} σ(G x^{m'}) ⊙ x^{m'}) / M (the gates read the sender only)."""
        out = {}
        for m in self.modalities:
            total = xs[m]
            for o, gate in cast(nn.ModuleDict, self.gates[m]).items():
                total = total + torch.sigmoid(gate(xs[o])) * xs[o]
            out[m] = total / len(self.modalities)
        return out

    def _modulate(self, x: Tensor, view: Tensor, hard: bool) -> Tensor:
        """Edge-wise modulation of one modality: attention, modulated messages, (re-)attention, sum.

        A message is x_j, or view_j on the modulated edges; sums over edges are written as two
        edge-weighted products so that no per-edge [E, d] message tensor is built.
        """
        graph = self.edges.full
        own = graph.dot(x, x)
        alpha = graph.softmax(own)
        if not hard:
            if self.reattn:
                alpha = graph.softmax(graph.dot(view, x))
            return F.normalize(graph.aggregate(view, alpha), dim=1)
        fused = (alpha > self.threshold).to(x.dtype)
        if self.reattn:
            scores = fused * graph.dot(view, x) + (1 - fused) * own
            alpha = graph.softmax(scores)
        out = graph.aggregate(view, alpha * fused) + graph.aggregate(x, alpha * (1 - fused))
        return F.normalize(out, dim=1)

    def _id_branch(self, alphas: list[Tensor]) -> Tensor:
        e = F.normalize(self.id_emb, dim=1)
        if self.id_graph == "confidence":
            graph = self.edges.full
            weight = self.edge_weight(torch.stack(alphas, dim=1), graph.src)
            return weighted_gcn(e, graph, weight, self.n_id_layers)
        out, h = e, e
        for _ in range(self.n_id_layers):
            h = self.graph(h)
            out = out + h
        return out

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        items = self.modality_embeddings(features)
        xs = {m: F.normalize(torch.cat([self.pref(m, ablated), items[m]]), dim=1) for m in self.modalities}
        if self.fusion == "soft":
            views, hard = self._soft_views(xs), False
        else:
            mean_view = torch.stack([xs[m] for m in self.modalities]).mean(0)
            views, hard = dict.fromkeys(self.modalities, mean_view), True
        reps, alphas = {}, []
        for m in self.modalities:
            z = refine(self._modulate(xs[m], views[m], hard), self.edges.full, self.n_routing)
            reps[m] = z
            if self.id_graph == "confidence":
                alphas.append(graph_attention(z, self.edges.full)[1])
        return fused_representation(self._id_branch(alphas), reps, self.modalities, self.n_users)

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        return bpr_and_reg(rep, batch, self.id_emb, self.pref, self.n_users, self.reg_weight)
