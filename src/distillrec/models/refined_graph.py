"""Building blocks of the graph-refining backbones, GRCN and EgoGCN, kept apart from either model.

Both start from per-modality node vectors [user preference ; encoded item feature], run GRCN's
parameter-free attention and routing over the user-item edges (`EdgeGraph`), add an ID branch and
concatenate; they share the final fusion and the loss too. Holding the shared parts here lets EgoGCN be
read (and changed) without importing GRCN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Representation, mean_row
from distillrec.models.edge_graph import EdgeGraph, bipartite_edges
from distillrec.models.embeddings import feature_projections, xavier_table
from distillrec.models.losses import dot_bpr_loss, mean_square_reg


class UserItemEdges(nn.Module):
    """The training graph as directed edges, users first then items: `full` holds both directions of
    every interaction, `to_users` only item → user (the edges along which routing updates the users)."""

    def __init__(self, dataset: Dataset) -> None:
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
        self.mlp = feature_projections(feature_dims, dim, nn.init.xavier_normal_)

    def forward(self, features: Features) -> dict[str, Tensor]:
        return {m: F.leaky_relu(lin(features[m])) for m, lin in self.mlp.items()}

    def pre_activation(self, features: Features) -> dict[str, Tensor]:
        """W x per modality: the extractor's output before its leaky ReLU (SGFD's student slot)."""
        return {m: lin(features[m]) for m, lin in self.mlp.items()}


class UserPreferences(nn.Module):
    """One trained preference vector per user and modality; an ablated modality's table → its mean row."""

    def __init__(self, modalities: list[str], n_users: int, dim: int) -> None:
        super().__init__()
        self.table = nn.ParameterDict(
            {m: xavier_table(n_users, dim, nn.init.xavier_normal_) for m in modalities}
        )

    def forward(self, m: str, ablated: frozenset[str] = frozenset()) -> Tensor:
        pref = self.table[m]
        return mean_row(pref) if m in ablated else pref

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
            xavier_table(n_nodes, n_modalities, nn.init.xavier_normal_) if mode == "confid" else None
        )

    def forward(self, alpha: Tensor, src: Tensor) -> Tensor:
        if self.mode == "mean":
            w = alpha.mean(1)
        elif self.mode == "max":
            w = alpha.max(1).values
        else:
            assert self.confidence is not None  # built for this mode
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


def fused_representation(
    id_rep: Tensor, reps: dict[str, Tensor], modalities: list[str], n_users: int
) -> Representation:
    """Final vector = concat(ID, modality 1, …, modality M) per node; `parts[m]` and `extras["id"]` hold
    the (user, item) slices of each piece."""
    final = torch.cat([id_rep] + [reps[m] for m in modalities], dim=1)
    user, item = split_nodes(final, n_users)
    parts = {m: split_nodes(reps[m], n_users) for m in modalities}
    return Representation(user, item, parts=parts, extras={"id": split_nodes(id_rep, n_users)})


def bpr_and_reg(
    rep: Representation, batch: Batch, id_emb: Tensor, pref: UserPreferences, n_users: int, reg_weight: float
) -> dict[str, Tensor]:
    """BPR on dot scores plus the official codes' L2: mean squares of the batch's rows of the node ID table
    (users first, items offset by `n_users`) and of the batch users' preferences."""
    bpr = dot_bpr_loss(rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg])
    e, off = id_emb, n_users
    reg = mean_square_reg(e[batch.users], e[off + batch.pos], e[off + batch.neg]) + pref.reg(batch.users)
    return {"bpr": bpr, "reg": reg_weight * reg}
