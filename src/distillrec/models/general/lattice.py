"""LATTICE (Zhang et al., ACM MM 2021): a learned item-item graph on top of a collaborative backbone.

Per modality m the raw features are projected, p_m = W_m f_m + b_m. Two item-item graphs:
- original: the top-k cosine graph of the raw features (similarity-weighted, the item itself among its k,
  D^-1/2 A D^-1/2), fixed;
- learned: the top-k cosine graph of the current projections p_m, mixed over modalities with learned weights
  a = softmax(α), Σ_m a_m S_m, then normalised D^-1/2 (·) D^-1/2 by its row sums.
Item graph A = (1 − λ) · learned + λ · Σ_m a_m original_m (λ = lambda_coeff). Items get h = A^L e_id;
users and items are propagated by LightGCN; the item's final vector is its LightGCN output + h (the paper
and MMRec add h/‖h‖: `normalize_item_graph`, see below).
Loss: BPR + reg · L2 of the batch's final vectors.

The learned graph is sparse, never items x items: for each row chunk the similarities of the projections are
computed without gradient only to pick the k neighbour indices (top-k per row, self included); the n·k edge
values cos(p_i, p_j) are then recomputed with gradient from the gathered rows, so W_m, α (and through them
the degrees of the normalisation) get exactly the gradient of MMRec's dense top-k matrix. The indices are
searched once per epoch, at its first training call, as MMRec does (`knn_every: epoch`; `batch` searches at
every training call), and at every evaluation; the edge values are recomputed with gradient at every call.
A search costs n²·d_proj multiply-adds in chunks of `knn_chunk` rows (on `scientific` it was 40 % of an
epoch when repeated at every batch).

Reference: CRIPAC-DIG/LATTICE and MMRec `src/models/lattice.py` (cf_model lightgcn). Departures, on purpose:
- Any number of modalities, one learned weight each (softmax over all).
- The raw feature matrices are not fine-tuned (the code wraps them in trainable embeddings): features are an
  argument of `represent`; a learnable per-item copy would carry a modality past its ablation and sit in
  front of the projection that SGFD trains. The projections W_m stay trainable, so the learned graph still
  learns; it enters the item graph with weight 1 − λ = 0.1.
- MMRec builds the learned graph with gradient once per epoch (first batch) and reuses it detached, so its
  projections learn from one batch per epoch; here the neighbours are kept for the epoch but the edge
  values are recomputed with gradient at every call, so every batch trains them.
- Similarities below 0 are clipped to 0 so that degrees stay positive (the dense code would take a negative
  row sum to a NaN).
- A mean-ablated modality has all similarities tied: its original graph is the uniform average and its
  learned part spreads its k units of weight evenly over all items (a rank-one term), not a top-k of ties.
- The interaction graph is MMRec's for LATTICE: D^-1 (A + I) (row-normalised with self-loops).
- `normalize_item_graph` defaults to False (h added as is, as FREEDOM does), chosen on validation: on
  scientific the paper's h/‖h‖ made the model peak by epoch ~15 (valid Recall@20 0.209, test 0.160) and so
  did a dense line-by-line transcription of MMRec's forward (test 0.159-0.165), against valid 0.243 /
  test 0.175 without it. The unit-norm term's gradient is scaled by 1/‖h‖ (h averages ~k ID vectors, so
  ‖h‖ is small) and dominates the item embeddings' updates. True gives the paper's model.
LATTICE has no user-side modality parameters, so `ablated` changes nothing beyond the features themselves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import id_embeddings
from distillrec.models.feature_cache import FeatureCache
from distillrec.models.graph import SparseGraph, propagate
from distillrec.models.knn import ItemKnnGraph, is_constant
from distillrec.models.losses import dot_bpr_loss, l2_reg
from distillrec.models.registry import ModelParams, register


@torch.no_grad()
def topk_neighbours(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Indices [n, k] of each row's k most cosine-similar rows (itself included), in row chunks."""
    xn = F.normalize(x.detach(), dim=1)
    k = min(k, xn.shape[0])
    return torch.cat(
        [torch.topk(xn[s : s + chunk] @ xn.T, k, dim=1).indices for s in range(0, len(xn), chunk)]
    )


def row_norm_adjacency_with_self_loops(train: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1 (A + I) of the bipartite user-item graph, users first then items (MMRec's LATTICE graph)."""
    r = train.tocsr().astype(np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32) + sp.identity(
        sum(r.shape), format="csr"
    )
    deg = np.asarray(adj.sum(1)).ravel()
    return (sp.diags(1.0 / deg) @ adj).tocsr().astype(np.float32)


class LearnedGraph:
    """x -> D^-1/2 (Σ_m a_m S_m) D^-1/2 x with S_m sparse top-k similarity rows, plus uniform parts.

    `edges` are (rows, cols, a_m-weighted values) per non-constant modality; `uniform` holds a_m per
    constant modality, whose all-ties top-k is k units of weight spread evenly over every item.
    """

    def __init__(
        self, n: int, edges: list[tuple[Tensor, Tensor, Tensor]], uniform: list[Tensor], k: int, like: Tensor
    ) -> None:
        deg = like.new_zeros(n)
        if edges:
            rows, cols, vals = (torch.cat([e[c] for e in edges]) for c in range(3))
            deg = deg.index_add(0, rows, vals)
        self.uniform = sum(w * k / n for w in uniform) if uniform else None
        if self.uniform is not None:
            deg = deg + self.uniform * n
        self.dinv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
        # (rows, cols, normalised values) of the sparse parts
        self.sparse = (rows, cols, vals * self.dinv[rows] * self.dinv[cols]) if edges else None

    def __call__(self, x: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        if self.sparse is not None:
            rows, cols, vals = self.sparse
            out = out.index_add(0, rows, vals.unsqueeze(1) * x[cols])
        if self.uniform is not None:
            out = out + self.uniform * self.dinv.unsqueeze(1) * (self.dinv.unsqueeze(1) * x).sum(
                0, keepdim=True
            )
        return out


@register
class LATTICE(Recommender):
    name = "lattice"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 64
        feat_embed_dim: int = 64
        n_ui_layers: int = 2
        n_item_layers: int = 1
        knn_k: int = 10
        lambda_coeff: float = 0.9
        reg_weight: float = 1e-4
        normalize_item_graph: bool = False
        knn_every: Literal["epoch", "batch"] = "epoch"
        knn_chunk: int = 2048

    params: Params

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        d = params.embedding_size
        self.params = params
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.user_emb, self.item_emb = id_embeddings(self.n_users, self.n_items, d)
        self.proj = nn.ModuleDict(
            {m: nn.Linear(w, params.feat_embed_dim) for m, w in dataset.feature_dims.items()}
        )
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.graph = SparseGraph(row_norm_adjacency_with_self_loops(dataset.train), symmetric=False)
        self._original = FeatureCache()
        self._neighbours = FeatureCache()
        self._constant = FeatureCache()

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        """The projections p_m = W_m f_m + b_m from which the learned graph is built."""
        return {m: self.proj[m](features[m]) for m in self.modalities}

    def on_epoch_start(self, epoch: int) -> None:
        """A new epoch searches the learned graph's neighbours again (at its first training call)."""
        self._neighbours = FeatureCache()

    def _neighbour_indices(self, m: str, raw: Tensor, proj: Tensor) -> Tensor:
        """Top-k indices of the projections: in training, searched once per epoch per feature tensor (a
        counterfactual view has its own) or at every call (`knn_every: batch`); at every evaluation."""

        def search(_: Tensor) -> Tensor:
            return topk_neighbours(proj, self.params.knn_k, self.params.knn_chunk)

        if not self.training or self.params.knn_every == "batch":
            return search(raw)
        return self._neighbours.get(m, raw, search)

    def learned_graph(self, features: Features, weights: Tensor) -> LearnedGraph:
        edges, uniform = [], []
        for j, (m, p) in enumerate(self.modality_embeddings(features).items()):
            if self._constant.get(m, features[m], is_constant):
                uniform.append(weights[j])
                continue
            idx = self._neighbour_indices(m, features[m], p)
            pn = F.normalize(p, dim=1)
            sims = (pn.unsqueeze(1) * pn[idx]).sum(-1).clamp_min(0.0)  # [n, k], with gradient
            rows = torch.arange(len(p), device=p.device).repeat_interleave(idx.shape[1])
            edges.append((rows, idx.reshape(-1), weights[j] * sims.reshape(-1)))
        return LearnedGraph(self.n_items, edges, uniform, min(self.params.knn_k, self.n_items), weights)

    def _original_graph(self, m: str, features: Tensor) -> ItemKnnGraph:
        return self._original.get(m, features, lambda f: ItemKnnGraph(f, self.params.knn_k, weighted=True))

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        weights = torch.softmax(self.modal_weight, dim=0)
        learned = self.learned_graph(features, weights)
        original = [self._original_graph(m, features[m]) for m in self.modalities]
        lam = self.params.lambda_coeff
        h = self.item_emb.weight
        for _ in range(self.params.n_item_layers):
            h = (1 - lam) * learned(h) + lam * sum(w * g(h) for w, g in zip(weights, original, strict=True))
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        user, item = torch.split(
            propagate(self.graph, ego, self.params.n_ui_layers), [self.n_users, self.n_items]
        )
        return Representation(user, item + (F.normalize(h, dim=1) if self.params.normalize_item_graph else h))

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        u, p, n = rep.user[batch.users], rep.item[batch.pos], rep.item[batch.neg]
        return {"bpr": dot_bpr_loss(u, p, n), "reg": self.params.reg_weight * l2_reg(u, p, n)}
