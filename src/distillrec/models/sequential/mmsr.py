"""MMSR in the simplified graph form KDSR builds on (Hu et al., CIKM 2023 / ECIR 2024, code class VLGraph).

Per input sequence, its distinct items are the nodes of a small graph whose edges follow consecutive
events, typed 1 self, 2 out, 3 in, 4 both directions. One relational graph-attention layer runs over
the ID embeddings: e_ij = amp_r · LeakyReLU(a_r · (W h_i ⊙ W h_j)) for the relation r of (i, j),
softmax over j, output Σ_j α_ij W h_j. A softmax gate (MLP d → d → 1 per candidate) mixes, per node,
the ID embedding, the attention output and one embedding per modality. The sequence vector is the sum
of the gated states of the last `last_n` events; scores are dot products with the ID table.

The modality tables are trainable and start from the features' linear-autoencoder codes at the codes'
own scale (unit mean square; KDSR copies its pre-compressed features, values in (0, 1), in); they are
the model's modality embeddings and their own lr group. `modality_init: init_std` is the earlier start
at the ID embeddings' scale (rms `init_std` = 0.02, about 25x under the features): there a correlation
distiller's score head sees only its own bias at first (every initial predicted cosine near 0.98).
A repeated item is one node: each position reads the node of its first occurrence. Only the nodes
the read-out uses are attended from and gated (the others' states are never read), and rows are
processed in length buckets, so a batch costs about its real events, not B x longest.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import truncate
from distillrec.models.base import Features, Representation
from distillrec.models.registry import register
from distillrec.models.sequential.base import (
    SequentialRecommender,
    WarmupParams,
    ablate_tables,
    by_length_buckets,
    empty_users,
    modality_tables,
)

N_RELATIONS = 4  # self, out, in, both


class RelationalAttention(nn.Module):
    """One RGAT layer over per-sequence item graphs given as [B, L, L] relation ids (0 = no edge)."""

    def __init__(self, d: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d, d))
        self.a = nn.Parameter(torch.empty(N_RELATIONS, d))
        self.amplifier = nn.Parameter(torch.empty(N_RELATIONS))
        bound = 1.0 / math.sqrt(d)
        for p in (self.W, self.a, self.amplifier):
            nn.init.uniform_(p, -bound, bound)
        self.alpha = alpha
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, rel: Tensor, queries: Tensor) -> Tensor:
        """Outputs [B, n, d] for the query nodes `queries` [B, n] (positions) only."""
        h = h @ self.W
        hq = h.gather(1, queries.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        e = torch.einsum("bid,rd,bjd->brij", hq, self.a, h)  # [B, R, n, L]
        e = F.leaky_relu(e, self.alpha) * self.amplifier[None, :, None, None]
        rel_q = rel.gather(1, queries.unsqueeze(-1).expand(-1, -1, rel.shape[-1]))  # [B, n, L]
        logits = e.gather(1, (rel_q - 1).clamp(min=0).unsqueeze(1)).squeeze(1).masked_fill(rel_q == 0, -1e9)
        return self.drop(torch.softmax(logits, dim=-1)) @ h


def sequence_graph(items: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(node of each position [B, L] = first position holding the same item, relations [B, L, L]).

    Relations live on node positions only: 1 on the diagonal, 2/3/4 for an edge in one direction, the
    other, or both, from consecutive events (t → t+1) within the real length.
    """
    b, n = items.shape
    pos = torch.arange(n, device=items.device)
    valid = pos[None, :] < lengths[:, None]
    same = (items[:, :, None] == items[:, None, :]) & valid[:, None, :]
    node = same.int().argmax(-1)  # first True; padding rows point at themselves or earlier padding
    node = torch.where(valid, node, pos.expand(b, n))
    is_node = valid & (node == pos)
    step = valid[:, 1:]  # transition t -> t+1 is real when t+1 < length
    adj = torch.zeros(b, n, n, dtype=torch.bool, device=items.device)
    bi = torch.arange(b, device=items.device)[:, None].expand(b, n - 1)
    adj[bi[step], node[:, :-1][step], node[:, 1:][step]] = True
    rel = torch.zeros(b, n, n, dtype=torch.long, device=items.device)
    both = adj & adj.transpose(1, 2)
    rel[adj & ~both] = 2
    rel[adj.transpose(1, 2) & ~both] = 3
    rel[both] = 4
    diag = torch.diag_embed(is_node)
    rel[diag] = 1
    return node, rel


@register
class MMSR(SequentialRecommender):
    name = "mmsr"
    uses_features = True

    class Params(WarmupParams):
        hidden_size: int = 64
        dropout: float = Field(0.4, description="on the gated node states (KDSR dropout_output)")
        attn_dropout: float = Field(0.2, description="on the attention weights (KDSR dropout_atten)")
        leaky_alpha: float = 0.1
        last_n: int = Field(2, ge=1, description="sequence vector = sum of the last n gated states")
        init_std: float = 0.02
        modality_init: Literal["features", "init_std"] = Field(
            "features",
            description="modality tables start at the compressed features' own scale (rms 1) or, as before, at "
            "init_std",
        )
        modality_init_scale: float = Field(1.0, gt=0, description="factor on the scale `modality_init` gives")

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__(dataset)
        d = params.hidden_size
        self.max_len, self.last_n = params.max_len, params.last_n
        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.pad)
        nn.init.normal_(self.item_emb.weight, 0.0, params.init_std)
        self.item_emb.weight.data[self.pad].zero_()
        base = 1.0 if params.modality_init == "features" else params.init_std
        self.modality = modality_tables(dataset, d, base * params.modality_init_scale)
        self.rgat = RelationalAttention(d, params.leaky_alpha, params.attn_dropout)
        self.gate = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        for lin in [layer for layer in self.gate if isinstance(layer, nn.Linear)]:
            nn.init.normal_(lin.weight, 0.0, params.init_std)
            nn.init.zeros_(lin.bias)
        self.drop = nn.Dropout(params.dropout)

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        mods = ablate_tables(self.modality, ablated)
        table = self.item_emb.weight
        return Representation(
            empty_users(table), table[: self.n_items], extras={"input": table, "modality": mods}
        )

    def encode(self, rep: Representation, items: Tensor, lengths: Tensor) -> Tensor:
        items, lengths = truncate(items, lengths, self.max_len, self.pad)
        return by_length_buckets(lambda it, ln: self._encode(rep, it, ln), items, lengths)

    def _encode(self, rep: Representation, items: Tensor, lengths: Tensor) -> Tensor:
        """Only the nodes of the last `last_n` positions are read, so only they are attended from and gated."""
        node, rel = sequence_graph(items, lengths)
        back = torch.arange(self.last_n, device=items.device)
        pos = lengths[:, None] - 1 - back[None, :]  # [B, n]
        present = pos >= 0
        queries = node.gather(1, pos.clamp(min=0))
        q_items = items.gather(1, queries)
        h_id = rep.extras["input"][items]
        cands = [rep.extras["input"][q_items], self.rgat(h_id, rel, queries)]
        for table in rep.extras["modality"].values():
            cands.append(F.pad(table, (0, 0, 0, 1))[q_items])  # padding row = 0
        stack = torch.stack(cands, dim=2)  # [B, n, C, d]
        weights = torch.softmax(self.gate(stack).squeeze(-1), dim=-1)
        states = self.drop((stack * weights.unsqueeze(-1)).sum(2))  # [B, n, d]
        return (states * present.unsqueeze(-1)).sum(1)

    def id_table(self) -> Tensor:
        return self.item_emb.weight[: self.n_items]

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return dict(self.modality)

    def correlation_tables(self, rep: Representation) -> dict[str, Tensor]:
        return rep.extras["modality"]

    def modality_parameters(self) -> list[nn.Parameter]:
        return list(self.modality.values())
