"""SASRec (Kang & McAuley, ICDM 2018) as RecBole 1.2.1 builds it, the reference our figures are held to.

item + learned position embedding → LayerNorm → dropout → causal post-LN Transformer blocks (GELU
feed-forward) → the hidden state at the last real position; scores = dot product with the same item
embedding table; cross-entropy over all items. Initialisation N(0, 0.02), LayerNorm eps 1e-12, as
RecBole. Prefixes are left-aligned, so causal attention alone keeps real positions off the padding.

`modality_input: true` is KDSR's Figure 3 form: the item input is the ID embedding plus one trainable
table per modality, initialised from the features' linear-autoencoder codes at the features' scale
(`models.sequential.base.modality_tables`); scores stay dot products with the ID table. Those tables
are the model's modality embeddings, their own lr group (the asynchronous warm-up) and what a
correlation distiller supervises. Off by default: the plain model is RecBole's, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import truncate
from distillrec.errors import ConfigError
from distillrec.models.base import Features, Representation
from distillrec.models.registry import register
from distillrec.models.sequential.base import (
    ModalityInputParams,
    SeqParams,
    SequentialRecommender,
    ablate_tables,
    empty_users,
    fused_input,
    length_buckets,
    modality_tables,
)


class Layout:
    """Where the real tokens of a left-aligned [B, L] batch are, and length buckets for attention.

    Per-token layers run on the N real tokens only (N = sum of lengths). Attention runs per bucket of
    rows whose lengths lie in (w/2, w], padded to w, so its cost is at most 4 x sum(length^2) instead
    of B x L^2: on `scientific` the mean prefix is 3.4 events while a batch's longest is about 30.
    Grouping rows changes nothing in the result: each row attends only to its own tokens.
    """

    def __init__(self, lengths: Tensor, width: int) -> None:
        dev = lengths.device
        self.batch, self.width, self.lengths = len(lengths), width, lengths
        mask = torch.arange(width, device=dev) < lengths[:, None]
        self.rows, self.cols = mask.nonzero(as_tuple=True)  # row-major: each row's tokens in order
        self.n = len(self.rows)
        self.last = lengths.cumsum(0) - 1  # flat index of each row's last token
        first = self.last - lengths + 1
        self.buckets: list[tuple[Tensor, Tensor, Tensor]] = []  # (rows, flat index [b, w] (n = pad), mask)
        order = []
        for rows, w in length_buckets(lengths, width):
            cols = torch.arange(w, device=dev)
            valid = cols[None, :] < lengths[rows, None]
            idx = torch.where(
                valid, first[rows, None] + cols[None, :], torch.full_like(valid, self.n, dtype=torch.long)
            )
            self.buckets.append((rows, idx, valid))
            order.append(idx[valid])
        self.inverse = torch.argsort(torch.cat(order))  # bucket-major token order -> flat order


class TransformerBlock(nn.Module):
    """Post-LN block: x = LN(x + drop(attn(x))); x = LN(x + drop(W2 gelu(W1 x))), on the flat real
    tokens [N, d]. With `last_only` the queries are each row's last token alone (the final block:
    nothing else is read) and the output is [B, d]."""

    def __init__(
        self, d: int, heads: int, inner: int, hidden_dropout: float, attn_dropout: float, eps: float
    ):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden size {d} is not a multiple of the {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ffn1 = nn.Linear(d, inner)
        self.ffn2 = nn.Linear(inner, d)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.drop = nn.Dropout(hidden_dropout)

    def forward(self, x: Tensor, layout: Layout, last_only: bool = False) -> Tensor:
        d = x.shape[1]
        h, dh = self.heads, d // self.heads
        qkv = torch.cat([self.qkv(x), x.new_zeros(1, 3 * d)])  # row n = padding
        p = self.attn_dropout if self.training else 0.0
        parts = []
        for rows, idx, valid in layout.buckets:
            b, w = idx.shape
            q, k, v = qkv[idx].view(b, w, 3, h, dh).permute(2, 0, 3, 1, 4)  # [b, h, w, dh] each
            if last_only:
                q = q.gather(2, (layout.lengths[rows] - 1).view(-1, 1, 1, 1).expand(-1, h, 1, dh))
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :], dropout_p=p)
                parts.append((rows, a.reshape(b, d)))
            else:
                a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
                parts.append((rows, a.transpose(1, 2)[valid].reshape(-1, d)))
        if last_only:
            rows = torch.cat([r for r, _ in parts])
            a = torch.cat([a for _, a in parts])[torch.argsort(rows)]
            x = x[layout.last]
        else:
            a = torch.cat([a for _, a in parts])[layout.inverse]
        x = self.ln1(x + self.drop(self.out(a)))
        return self.ln2(x + self.drop(self.ffn2(F.gelu(self.ffn1(x)))))


class SASRecArchitecture(SeqParams):
    """The Transformer's settings (shared with SASRM, which has its own modality input)."""

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02


@register
class SASRec(SequentialRecommender):
    name = "sasrec"

    class Params(SASRecArchitecture, ModalityInputParams):
        pass

    def __init__(self, dataset: Dataset, params: SASRecArchitecture) -> None:
        super().__init__(dataset)
        d = params.hidden_size
        self.max_len = params.max_len
        self.item_emb = nn.Embedding(self.n_items + 1, d, padding_idx=self.pad)
        self.pos_emb = nn.Embedding(params.max_len, d)
        self.ln = nn.LayerNorm(d, eps=params.layer_norm_eps)
        self.drop = nn.Dropout(params.hidden_dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d,
                params.n_heads,
                params.inner_size,
                params.hidden_dropout,
                params.attn_dropout,
                params.layer_norm_eps,
            )
            for _ in range(params.n_layers)
        )
        self._init(params.init_std)
        # SASRM's Params share the architecture but take the features their own way (no modality_input)
        modality = params if isinstance(params, ModalityInputParams) and params.modality_input else None
        if modality is not None and not self.modalities:
            raise ConfigError(
                f"{self.name}: modality_input needs item features; dataset {dataset.name!r} has none"
            )
        self.modality = (
            modality_tables(dataset, d, modality.modality_init_scale) if modality is not None else None
        )

    def _init(self, std: float) -> None:
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, std)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def item_inputs(self, features: Features, ablated: frozenset[str]) -> Tensor:
        """The input/output item table [n_items + 1, d] (row n_items = padding)."""
        return self.item_emb.weight

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        table = self.item_inputs(features, ablated)
        if self.modality is None:
            return Representation(empty_users(table), table[: self.n_items], extras={"input": table})
        mods = ablate_tables(self.modality, ablated)
        extras = {"input": fused_input(table, self.n_items, mods), "modality": mods}
        return Representation(empty_users(table), table[: self.n_items], extras=extras)

    def encode(self, rep: Representation, items: Tensor, lengths: Tensor) -> Tensor:
        items, lengths = truncate(items, lengths, self.max_len, self.pad)
        layout = Layout(lengths, items.shape[1])
        x = rep.extras["input"][items[layout.rows, layout.cols]] + self.pos_emb.weight[layout.cols]
        x = self.drop(self.ln(x))
        for i, block in enumerate(self.blocks):
            x = block(x, layout, last_only=i == len(self.blocks) - 1)
        return x if self.blocks else x[layout.last]

    def id_table(self) -> Tensor:
        return self.item_emb.weight[: self.n_items]

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return dict(self.modality) if self.modality is not None else {}

    def modality_parameters(self) -> list[nn.Parameter]:
        return list(self.modality.values()) if self.modality is not None else []
