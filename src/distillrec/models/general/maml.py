"""MAML (Liu et al., ACM MM 2019): user diverse preference modelling by multimodal attentive metric learning.

Users and items are points in one metric space; a user prefers the items near them. For a pair (u, i), an
attention MLP over [u; i; f_i] gives per-dimension weights a (they sum to d), and

    dist(u, i) = Σ_k a_k² (u_k − i_k)²,      score(u, i) = −dist(u, i).

f_i is the item-feature MLP's projection of the item's modalities (clipped to norm 1). The loss is a
WARP-style hinge on the closest of n sampled negatives, weighted by log(rank + 1) with rank estimated as
n_items × (share of the negatives violating the margin), plus feature_l2_reg · Σ_i ‖e_i − f_i‖² (items
pulled towards their content) plus cov_weight · a covariance regulariser on all user and item embeddings.
User and item embeddings are projected back onto the unit ball after each optimiser step; item embeddings
start at the feature projection. Terms are sums (over the batch, over all items), as in the reference,
so the weights keep their meaning at the reference batch size of 256. Full ranking runs the attention
MLP on every (user, item) pair, in chunks: far costlier than a dot product (about a minute for the
2.9k × 1.6k pairs of `scientific` on one CPU thread).

Feature extractor and its per-modality parts. The reference MLP reads the L2-normalised concatenation of
the raw modalities. Here each modality m first has its own linear layer e_m = W_m x_m (to d), and the MLP
reads the L2-normalised concatenation of the e_m: [e_1; …; e_M] → hidden (relu) → hidden/2 (relu) →
hidden/2 (relu) → d, dropout after each hidden layer and L2-normalisation before the 2nd and 3rd layers, as
in the reference. `modality_embeddings` returns the e_m: each modality's own output of the extractor, the
slot where SGFD's MAML variant places its per-modality student (student outputs concatenated, normalised,
then the same MLP). The two linear maps in a row (W_m, then the first MLP layer) lose nothing: their
product has rank ≤ min(hidden, M·d), the rank of the reference's single first layer when M·d ≥ hidden
(256 = 2 × 128 by default). What changes is where the normalisation sits: after the per-modality layers
rather than on the raw features, so no modality dominates only by the scale of its raw vectors.
MAML has no per-modality user parameters, so `parts` is empty and `ablated` acts through the features only.

Reference: liufancs/MAML MAML.py (TF1). Departures, each towards the paper:
- everything can be trained (feature MLP, per-modality layers, attention MLP, embeddings); the reference
  optimiser updates only the two embedding tables, leaving both MLPs at their random initialisation
  (`legacy_embeddings_only: true` reproduces that);
- dropout is active during training (the reference calls tf.layers.dropout without `training=True`,
  so its dropout never acts); the attention MLP's dropout rate 0.05 is kept;
- the covariance regulariser is the squared Frobenius norm of the off-diagonal covariance (CML's intent);
  the reference sums the signed off-diagonal entries (`legacy_signed_cov: true`);
- the reference declares an L2 regulariser (tf l2_regularizer(100): 100·Σw²/2) on the two attention
  kernels but never adds it to the loss; here it is added (`attention_l2`). It matters once the
  attention is trained: a = d·softmax(·) can put weight up to d on one dimension, so an unregularised
  attention meets the margin by rescaling distances rather than by placing points, and overfits (on
  `scientific`, validation Recall@20 peaks at 0.12 after 6 epochs without it, 0.166 with it).
  Even so, a trained attention does worse there than one left at its random initialisation (which
  is close to uniform, i.e. plain Euclidean CML): 0.166 against 0.228 with `train_attention: false`,
  which keeps it fixed while the feature extractor still trains. The `grid:` compares both on
  validation; it chose false (seed 1: valid Recall@20 0.226 against 0.169; test over seeds 1-3
  0.170), so false is the default and `train_attention: true` gives the paper's fully trained model;
- d = 128 as in SGFD's MAML runs (the public MAML script uses 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, Features, Recommender, Representation
from distillrec.models.registry import ModelParams, register

_SCORE_BUDGET = 1 << 24  # elements of the [users, items, 5d] attention tensor per scoring chunk


def _l2norm(x: Tensor) -> Tensor:
    """Row L2-normalisation as tf.nn.l2_normalize (x / sqrt(max(‖x‖², 1e-12)))."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).clamp_min(1e-12))


def _clip_by_norm(x: Tensor, clip: float) -> Tensor:
    """Rows longer than `clip` are scaled down to norm `clip` (tf.clip_by_norm along the last axis)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x * (clip / torch.maximum(norm, torch.full_like(norm, clip)))


@register
class MAML(Recommender):
    name = "maml"
    uses_features = True

    class Params(ModelParams):
        embedding_size: int = 128
        hidden_size: int = 256
        margin: float = 1.0
        dropout: float = 0.2
        attention_dropout: float = 0.05
        attention_l2: float = 100.0
        feature_l2_reg: float = 1.0
        feature_scale: float = 1.0
        cov_weight: float = 5.0
        clip_norm: float = 1.0
        use_rank_weight: bool = True
        init_items_from_features: bool = True
        train_attention: bool = False
        legacy_signed_cov: bool = False
        legacy_embeddings_only: bool = False

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        d, h = params.embedding_size, params.hidden_size
        self.p = params
        self.d = d
        self.n_items = dataset.n_items
        self.modalities = list(dataset.features)
        self.user_emb = nn.Parameter(torch.randn(dataset.n_users, d) / d**0.5)
        self.item_emb = nn.Parameter(torch.randn(dataset.n_items, d) / d**0.5)
        self.modal = nn.ModuleDict({m: nn.Linear(w, d) for m, w in dataset.feature_dims.items()})
        self.mlp = nn.ModuleList(
            [
                nn.Linear(len(self.modalities) * d, h),
                nn.Linear(h, h // 2),
                nn.Linear(h // 2, h // 2),
                nn.Linear(h // 2, d),
            ]
        )
        self.att1 = nn.Linear(3 * d, 5 * d)
        self.att2 = nn.Linear(5 * d, d)
        for mod in self.modules():  # tf.layers.dense defaults: Glorot-uniform kernel, zero bias
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)
        if params.init_items_from_features:
            was = self.training
            self.eval()
            with torch.no_grad():
                self.item_emb.copy_(self.feature_projection(dataset.features))
            self.train(was)
        if params.legacy_embeddings_only:
            for name, prm in self.named_parameters():
                if name not in ("user_emb", "item_emb"):
                    prm.requires_grad_(False)
        if not params.train_attention:
            for prm in [*self.att1.parameters(), *self.att2.parameters()]:
                prm.requires_grad_(False)

    # ------------------------------------------------------------------ feature extractor
    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return {m: self.modal[m](features[m]) for m in self.modalities}

    def feature_projection(self, features: Features) -> Tensor:
        """f_i for every item: the MLP over the normalised per-modality embeddings, clipped to norm 1."""
        parts = self.modality_embeddings(features)
        x = _l2norm(torch.cat([parts[m] for m in self.modalities], dim=1))
        drop = self.p.dropout
        for k, layer in enumerate(self.mlp[:-1]):
            if k > 0:
                x = _l2norm(x)
            x = F.dropout(F.relu(layer(x)), drop, self.training)
        x = self.mlp[-1](x) * self.p.feature_scale
        return _clip_by_norm(x, self.p.clip_norm)

    # ------------------------------------------------------------------ representation and distances
    @torch.no_grad()
    def _project_embeddings(self) -> None:
        """Put the embeddings back on the unit ball after the last optimiser step (the reference's clip op).

        Idempotent and in place only for rows that are too long, so a second pass in the same step (a
        distiller's counterfactual view) leaves autograd's saved tensors untouched.
        """
        clip = self.p.clip_norm
        for emb in (self.user_emb, self.item_emb):
            norm = emb.norm(dim=1, keepdim=True)
            over = norm > clip * (1 + 1e-6)
            if bool(over.any()):
                emb.mul_(torch.where(over, clip / norm, torch.ones_like(norm)))

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        self._project_embeddings()
        return Representation(
            self.user_emb, self.item_emb, extras={"feature": self.feature_projection(features)}
        )

    def distance(self, u: Tensor, i: Tensor, f: Tensor, attention_dropout: float = 0.0) -> Tensor:
        """Attentive squared distance; u, i, f broadcast against each other ([..., d] -> [...]).

        The attention MLP's first layer reads l2norm([u; i; f]); it is split into its user part and its
        item part so that the full ranking never builds the [users, items, 3d] input.
        """
        d = self.d
        w, b = self.att1.weight, self.att1.bias
        pre_u = u @ w[:, :d].T
        pre_i = i @ w[:, d : 2 * d].T + f @ w[:, 2 * d :].T
        sq = u.pow(2).sum(-1, keepdim=True) + i.pow(2).sum(-1, keepdim=True) + f.pow(2).sum(-1, keepdim=True)
        scale = torch.rsqrt(sq.clamp_min(1e-12))
        if torch.is_grad_enabled():
            hidden = torch.tanh((pre_u + pre_i) * scale + b)
        else:  # full ranking: the [users, items, 5d] tensor is the cost, so work on it in place
            hidden = pre_u + pre_i
            hidden.mul_(scale).add_(b).tanh_()
        if attention_dropout > 0:
            hidden = F.dropout(hidden, attention_dropout, True)
        # att2(l2norm(h)) = (W h) / ‖h‖ + bias: one pass less over the wide tensor
        norm = torch.linalg.vector_norm(hidden, dim=-1, keepdim=True).clamp_min(1e-6)
        logits = F.linear(hidden, self.att2.weight) / norm + self.att2.bias
        att = d * torch.softmax(F.relu(logits), dim=-1)
        return (att.pow(2) * (u - i).pow(2)).sum(-1)

    def pair_score(self, rep: Representation, users: Tensor, items: Tensor) -> Tensor:
        f = rep.extras["feature"]
        return -self.distance(rep.user[users], rep.item[items], f[items])

    def score(self, rep: Representation, users: Tensor, items: Tensor | None = None) -> Tensor:
        it = rep.item if items is None else rep.item[items]
        f = rep.extras["feature"] if items is None else rep.extras["feature"][items]
        u_all = rep.user[users]
        chunk = max(1, _SCORE_BUDGET // max(1, it.shape[0] * 5 * self.d))
        out = [
            -self.distance(u_all[s : s + chunk].unsqueeze(1), it.unsqueeze(0), f.unsqueeze(0))
            for s in range(0, len(users), chunk)
        ]
        return torch.cat(out) if out else u_all.new_zeros(0, it.shape[0])

    # ------------------------------------------------------------------ objective
    def loss(self, rep: Representation, batch: Batch) -> dict[str, Tensor]:
        p = self.p
        f = rep.extras["feature"]
        neg = batch.neg if batch.neg.dim() == 2 else batch.neg.unsqueeze(1)
        u = rep.user[batch.users]
        d_pos = self.distance(u, rep.item[batch.pos], f[batch.pos], p.attention_dropout)
        d_neg = self.distance(u.unsqueeze(1), rep.item[neg], f[neg], p.attention_dropout)
        hinge = F.relu(d_pos - d_neg.min(dim=1).values + p.margin)
        if p.use_rank_weight:
            with torch.no_grad():
                impostors = (d_pos.unsqueeze(1) - d_neg + p.margin > 0).float().mean(1)
                weight = torch.log(impostors * self.n_items + 1)
            hinge = hinge * weight
        feature = p.feature_l2_reg * (rep.item - f).pow(2).sum()
        x = torch.cat([rep.item, rep.user])
        x = x - x.mean(0, keepdim=True)
        cov = x.T @ x / x.shape[0]
        off = cov - torch.diag(torch.diagonal(cov))
        cov_term = off.sum() if p.legacy_signed_cov else off.pow(2).sum()
        terms = {"metric": hinge.sum(), "feature": feature, "cov": p.cov_weight * cov_term}
        if p.attention_l2 > 0 and self.att1.weight.requires_grad:
            # tf's l2_regularizer(scale): scale * Σw²/2, on the two attention kernels
            kernels = self.att1.weight.pow(2).sum() + self.att2.weight.pow(2).sum()
            terms["attention_l2"] = p.attention_l2 * kernels / 2
        return terms
