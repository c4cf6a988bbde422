"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph and a denoised user-item graph.

Item-item graph: per modality, the top-k cosine neighbours of the raw features (binary edges, the item
itself among its k, D^-1/2 A D^-1/2), mixed with fixed modality weights: S = Σ_m w_m S_m. It is built from
the features, never learned (frozen). Items get h = S^L e_id (L = n_mm_layers). Users and items are
propagated by LightGCN over the interaction graph; the item's final vector is its LightGCN output + h.
Degree-sensitive edge pruning: during training, the interaction graph keeps a fraction (1 − dropout) of its
edges, drawn without replacement with probability ∝ 1/sqrt(d_u d_i), then re-normalised, once per epoch as
in the paper and its code (`pre_epoch_processing`; `prune_every: batch` for every batch); evaluation uses
the full graph. Loss: BPR on the final vectors + reg · Σ_m BPR(user, W_m f_m) (each modality's projected
features scored against the final user vectors, the paper's λ-weighted modality BPR).

Reference: enoche/FREEDOM and MMRec `src/models/freedom.py`. Departures, each on purpose:
- Any number of modalities: `modality_weights` gives each named modality its weight (the paper's image
  0.1 / text 0.9); a modality it does not name gets 1/M; the weights are then scaled to sum to 1.
- The raw feature matrices are not fine-tuned (the code wraps them in trainable embeddings, frozen graph
  or not): features are an argument of `represent`. In FREEDOM they reach the scores only through the
  frozen graph, which the code builds once from the untouched features; fine-tuning moves only the
  projections of the λ = 1e-4 modality BPR, a learnable per-item copy of each matrix for a negligible term
  that would also carry a modality past its ablation. The projections W_m stay trainable.
- The graph follows the features argument (`FeatureCache`): built once for the training features, again for
  a mean-ablated view, where the constant modality's graph is the uniform average (all similarities tie).
- The per-epoch pruning is drawn in the epoch hook (`on_epoch_start`) from a generator of its own, seeded by
  the run's seed (the torch seed when the model is built, which the trainer sets) and the epoch number: a
  resumed run draws the same graphs as an uninterrupted one, and the pruning takes nothing from the global
  generators. A training pass before any epoch hook (a model used outside the trainer) draws epoch 0's.
  `prune_every: batch` redraws at every training `represent` call (each batch) from the global generator,
  the per-step DropEdge form earlier versions used.
FREEDOM has no user-side modality parameters, so `ablated` changes nothing beyond the features themselves.
The modality BPR terms score the final user vectors against W_m f_m of the batch's items, projected in the
loss for those items only (MMRec projects every item at every batch; the values are the same).
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.embeddings import id_embeddings
from distillrec.models.feature_cache import FeatureCache
from distillrec.models.graph import SparseGraph, propagate, sym_norm_adjacency, symmetric_spmm
from distillrec.models.knn import ItemKnnGraph
from distillrec.models.losses import dot_bpr_loss
from distillrec.models.registry import ModelParams, register


def modality_mix(modalities: list[str], weights: dict[str, float]) -> dict[str, float]:
    """Weights of the present modalities: named ones as given, others 1/M, then scaled to sum to 1."""
    raw = {m: float(weights.get(m, 1.0 / len(modalities))) for m in modalities}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"modality weights {raw} must have a positive sum")
    return {m: w / total for m, w in raw.items()}


@register
class FREEDOM(Recommender):
    name = "freedom"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 64
        n_ui_layers: int = 2
        n_mm_layers: int = 1
        knn_k: int = 10
        dropout: float = 0.8
        reg_weight: float = 1e-4
        modality_weights: dict[str, float] = {}
        prune_every: Literal["epoch", "batch"] = Field(
            "epoch",
            description="redraw the degree-sensitive edge pruning once per epoch (the paper) or at every batch "
            "(earlier versions)",
        )

    params: Params
    edge_users: Tensor
    edge_items: Tensor
    edge_prob: Tensor

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        if not 0.0 <= params.dropout < 1.0:
            raise ValueError(
                f"dropout (the fraction of interaction edges pruned) must be in [0, 1), got {params.dropout}"
            )
        d = params.embedding_size
        self.params = params
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.modalities = list(dataset.features)
        self.mix = modality_mix(self.modalities, params.modality_weights)
        self.user_emb, self.item_emb = id_embeddings(self.n_users, self.n_items, d)
        self.proj = nn.ModuleDict({m: nn.Linear(w, d) for m, w in dataset.feature_dims.items()})
        self.graph = SparseGraph(sym_norm_adjacency(dataset.train), symmetric=True)
        coo = dataset.train.tocoo()
        deg_u = np.asarray(dataset.train.sum(1)).ravel()
        deg_i = np.asarray(dataset.train.sum(0)).ravel()
        self.register_buffer("edge_users", torch.from_numpy(coo.row.astype(np.int64)), persistent=False)
        self.register_buffer("edge_items", torch.from_numpy(coo.col.astype(np.int64)), persistent=False)
        prob = (deg_u[coo.row] * deg_i[coo.col]) ** -0.5
        self.register_buffer("edge_prob", torch.from_numpy(prob.astype(np.float32)), persistent=False)
        self._graphs = FeatureCache()
        self.prune_seed = (
            torch.initial_seed()
        )  # the run's seed: the trainer seeds torch before building a model
        self._epoch_graph: tuple[int, Tensor] | None = None  # (epoch, its pruned adjacency)

    def _item_graph(self, m: str, features: Tensor) -> ItemKnnGraph:
        return self._graphs.get(m, features, lambda f: ItemKnnGraph(f, self.params.knn_k, weighted=False))

    def pruned_adjacency(self, generator: torch.Generator | None = None) -> Tensor:
        """A degree-sensitively pruned, re-normalised interaction graph (symmetric CSR, users then items), drawn
        from `generator` (None: the global generator)."""
        n_keep = max(1, int(len(self.edge_prob) * (1.0 - self.params.dropout)))
        keep = torch.multinomial(self.edge_prob, n_keep, replacement=False, generator=generator)
        users, items = self.edge_users[keep], self.edge_items[keep]
        du = torch.bincount(users, minlength=self.n_users).float()
        di = torch.bincount(items, minlength=self.n_items).float()
        values = (du[users] * di[items]).rsqrt()
        items = items + self.n_users
        n = self.n_users + self.n_items
        adj = torch.sparse_coo_tensor(
            torch.stack([torch.cat([users, items]), torch.cat([items, users])]),
            torch.cat([values, values]),
            (n, n),
        )
        return adj.coalesce().to_sparse_csr()

    def pruning_generator(self, epoch: int) -> torch.Generator:
        """The generator of epoch `epoch`'s pruning: seeded by the run's seed and the epoch alone."""
        seed = np.random.SeedSequence([self.prune_seed, epoch]).generate_state(1, np.uint64)[0]
        return torch.Generator(device=self.edge_prob.device).manual_seed(int(seed))

    def on_epoch_start(self, epoch: int) -> None:
        """Draws this epoch's pruned interaction graph (`prune_every: epoch`)."""
        if self.params.prune_every == "epoch" and self.params.dropout > 0:
            self._epoch_graph = (epoch, self.pruned_adjacency(self.pruning_generator(epoch)))

    def training_adjacency(self) -> Tensor:
        """The pruned interaction graph a training pass propagates over."""
        if self.params.prune_every == "batch":
            return self.pruned_adjacency()
        if self._epoch_graph is None or self._epoch_graph[1].device != self.edge_prob.device:
            self.on_epoch_start(self._epoch_graph[0] if self._epoch_graph is not None else 0)
        assert self._epoch_graph is not None, "a training pass with edge dropout draws its graph first"
        return self._epoch_graph[1]

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        """The Linear projection W_m f_m + b_m of each modality (scored by the modality BPR terms)."""
        return {m: self.proj[m](features[m]) for m in self.modalities}

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        h = self.item_emb.weight
        graphs = {m: self._item_graph(m, features[m]) for m in self.modalities}
        for _ in range(self.params.n_mm_layers):
            h = cast(Tensor, sum(self.mix[m] * graphs[m](h) for m in self.modalities))
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        if self.training and self.params.dropout > 0:
            adj = self.training_adjacency()
            final = propagate(lambda x: symmetric_spmm(adj, x), ego, self.params.n_ui_layers)
        else:
            final = propagate(self.graph, ego, self.params.n_ui_layers)
        user, item = torch.split(final, [self.n_users, self.n_items])
        # the modality BPR terms read only the batch's items: their features are projected in `loss`
        return Representation(user, item + h, extras={"features": features})

    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        u = rep.user[batch.users]
        out = {"bpr": dot_bpr_loss(u, rep.item[batch.pos], rep.item[batch.neg])}
        # W_m f_m for the batch's distinct items only (not all items at every batch: on Elec-sized data the
        # projection of every item's 4096-d image features was most of an epoch)
        items, where = torch.unique(torch.cat([batch.pos, batch.neg.reshape(-1)]), return_inverse=True)
        pos, neg = where[: len(batch.pos)], where[len(batch.pos) :].view(batch.neg.shape)
        features = rep.extras["features"]
        modal = cast(
            Tensor,
            sum(
                dot_bpr_loss(u, e[pos], e[neg])
                for e in (self.proj[m](features[m][items]) for m in self.modalities)
            ),
        )
        out["modal_bpr"] = self.params.reg_weight * modal
        return out
