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
weighted ID GCN) live here as small functions and modules.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.models.base import Batch, Recommender, Representation
from distillrec.models.layers import EdgeGraph, bipartite_edges, dot_bpr_loss, mean_square_reg
from distillrec.models.registry import ModelParams, register


class UserItemEdges(nn.Module):
    """The training graph as directed edges, users first then items: `full` holds both directions of
    every interaction, `to_users` only item → user (the edges along which routing updates the users)."""

    def __init__(self, dataset) -> None:  # noqa: ANN001
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.n_nodes = self.n_users + self.n_items
        src, dst = bipartite_edges(dataset.train)
        nnz = src.numel() // 2
        self.full = EdgeGraph(src, dst, self.n_nodes)
        self.to_users = EdgeGraph(src[nnz:], dst[nnz:], self.n_nodes)


def graph_attention(x: Tensor, graph: EdgeGraph) -> tuple[Tensor, Tensor]:
    """GRCN's parameter-free graph attention: α_jv = softmax_{j ∈ N(v)}(x_v·x_j); returns (Σ_j α_jv x_j, α)."""
    alpha = graph.softmax(graph.dot(x, x))
    return graph.aggregate(x, alpha), alpha


def refine(x: Tensor, graph: EdgeGraph, n_rounds: int) -> Tensor:
    """`n_rounds` of x_v ← norm(x_v + Σ_j α_jv x_j) along the graph's edges.

    With the item → user edges this is GRCN's routing (items receive nothing and keep their unit
    vectors); with both directions it is EgoGCN's routing on every node.
    """
    for _ in range(n_rounds):
        agg, _ = graph_attention(x, graph)
        x = F.normalize(x + agg, dim=1)
    return x


class FeatureEncoder(nn.Module):
    """f = leaky(W x) per modality: GRCN's and EgoGCN's feature extractor (normalised by the caller)."""

    def __init__(self, feature_dims: dict[str, int], dim: int) -> None:
        super().__init__()
        self.mlp = nn.ModuleDict({m: nn.Linear(w, dim) for m, w in feature_dims.items()})
        for lin in self.mlp.values():
            nn.init.xavier_normal_(lin.weight)

    def forward(self, features) -> dict[str, Tensor]:  # noqa: ANN001
        return {m: F.leaky_relu(lin(features[m])) for m, lin in self.mlp.items()}

    def pre_activation(self, features) -> dict[str, Tensor]:  # noqa: ANN001
        """W x per modality: the extractor's output before its leaky ReLU (SGFD's student slot)."""
        return {m: lin(features[m]) for m, lin in self.mlp.items()}


class UserPreferences(nn.Module):
    """One trained preference vector per user and modality; an ablated modality's table → its mean row."""

    def __init__(self, modalities: list[str], n_users: int, dim: int) -> None:
        super().__init__()
        self.table = nn.ParameterDict(
            {m: nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim))) for m in modalities}
        )

    def forward(self, m: str, ablated: frozenset[str] = frozenset()) -> Tensor:
        pref = self.table[m]
        return pref.mean(0, keepdim=True).expand_as(pref) if m in ablated else pref

    def reg(self, users: Tensor) -> Tensor:
        """Mean squared entries of the batch users' preferences, summed over modalities."""
        return sum(p[users].pow(2).mean() for p in self.table.values())


class ConfidenceEdges(nn.Module):
    """GRCN's refined-graph edge weights from per-modality attention α^m (one column per modality).

    "confid": w_e = max_m α^m_e · c^m_{src(e)} with learned per-node confidences c; "max": max_m α^m_e;
    "mean": mean_m α^m_e. `pruning` clips negative weights to zero (the edge is cut).
    """

    def __init__(self, n_nodes: int, n_modalities: int, mode: str, pruning: bool) -> None:
        super().__init__()
        self.mode = mode
        self.pruning = pruning
        self.confidence = (
            nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, n_modalities)))
            if mode == "confid"
            else None
        )

    def forward(self, alpha: Tensor, src: Tensor) -> Tensor:
        if self.mode == "mean":
            w = alpha.mean(1)
        elif self.mode == "max":
            w = alpha.max(1).values
        else:
            w = (alpha * self.confidence[src]).max(1).values
        return torch.relu(w) if self.pruning else w


def weighted_gcn(x: Tensor, graph: EdgeGraph, weight: Tensor, n_layers: int) -> Tensor:
    """x + Σ_{l=1..L} Ã^l x with Ã the edge-weighted adjacency (GRCN's ID GCN, add aggregation)."""
    out, h = x, x
    for _ in range(n_layers):
        h = graph.aggregate(h, weight)
        out = out + h
    return out


def split_nodes(x: Tensor, n_users: int) -> tuple[Tensor, Tensor]:
    return x[:n_users], x[n_users:]


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

    def __init__(self, dataset, params: Params) -> None:  # noqa: ANN001
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.edges = UserItemEdges(dataset)
        n_nodes = self.edges.n_nodes
        self.id_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, params.embedding_size)))
        self.encoder = FeatureEncoder(dataset.feature_dims, params.latent_size)
        self.pref = UserPreferences(self.modalities, self.n_users, params.latent_size)
        self.edge_weight = ConfidenceEdges(n_nodes, len(self.modalities), params.weight_mode, params.pruning)
        self.n_routing = params.n_routing
        self.n_id_layers = params.n_id_layers
        self.reg_weight = params.reg_weight

    def modality_embeddings(self, features) -> dict[str, Tensor]:  # noqa: ANN001
        return self.encoder(features)

    def pre_activation_embeddings(self, features) -> dict[str, Tensor]:  # noqa: ANN001
        return self.encoder.pre_activation(features)

    def represent(self, features, ablated: frozenset[str] = frozenset()) -> Representation:  # noqa: ANN001
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
        final = torch.cat([id_rep] + [reps[m] for m in self.modalities], dim=1)
        user, item = split_nodes(final, self.n_users)
        parts = {m: split_nodes(reps[m], self.n_users) for m in self.modalities}
        return Representation(user, item, parts=parts, extras={"id": split_nodes(id_rep, self.n_users)})

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        bpr = dot_bpr_loss(rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg])
        e, off = self.id_emb, self.n_users
        reg = mean_square_reg(e[batch.users], e[off + batch.pos], e[off + batch.neg]) + self.pref.reg(
            batch.users
        )
        return {"bpr": bpr, "reg": self.reg_weight * reg}
