"""GRU4Rec (Hidasi et al., ICLR 2016) as RecBole 1.2.1 builds it: item embedding → dropout → GRU →
Linear back to the embedding width → the state at the last real position; scores = dot product with
the item table; cross-entropy over all items. Xavier-normal embeddings, Xavier-uniform GRU weights.

`modality_input: true` gives it KDSR's Figure 3 item input, exactly as for SASRec (see that module's
docstring): ID embedding plus trainable modality tables, which a correlation distiller supervises. Off by
default, so the plain model is RecBole's.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import truncate
from distillrec.errors import ConfigError
from distillrec.models.base import Features, Representation
from distillrec.models.registry import register
from distillrec.models.sequential.base import (
    ModalityInputParams,
    SequentialRecommender,
    ablate_tables,
    empty_users,
    fused_input,
    modality_tables,
)


@register
class GRU4Rec(SequentialRecommender):
    name = "gru4rec"

    class Params(ModalityInputParams):
        embedding_size: int = 64
        hidden_size: int = 128
        num_layers: int = 1
        dropout: float = 0.3

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__(dataset)
        self.max_len = params.max_len
        self.item_emb = nn.Embedding(self.n_items + 1, params.embedding_size, padding_idx=self.pad)
        self.drop = nn.Dropout(params.dropout)
        self.gru = nn.GRU(
            params.embedding_size, params.hidden_size, params.num_layers, bias=False, batch_first=True
        )
        self.dense = nn.Linear(params.hidden_size, params.embedding_size)
        nn.init.xavier_normal_(self.item_emb.weight)
        for name, w in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(w)
        self.item_emb.weight.data[self.pad].zero_()
        if params.modality_input and not self.modalities:
            raise ConfigError(
                f"{self.name}: modality_input needs item features; dataset {dataset.name!r} has none"
            )
        self.modality = (
            modality_tables(dataset, params.embedding_size, params.modality_init_scale)
            if params.modality_input
            else None
        )

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        table = self.item_emb.weight
        if self.modality is None:
            return Representation(empty_users(table), table[: self.n_items], extras={"input": table})
        mods = ablate_tables(self.modality, ablated)
        extras = {"input": fused_input(table, self.n_items, mods), "modality": mods}
        return Representation(empty_users(table), table[: self.n_items], extras=extras)

    def encode(self, rep: Representation, items: Tensor, lengths: Tensor) -> Tensor:
        items, lengths = truncate(items, lengths, self.max_len, self.pad)
        x = self.drop(rep.extras["input"][items])
        # packed: the recurrence runs over real events only, and h_n is each row's last real state
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return self.dense(h_n[-1])

    def id_table(self) -> Tensor:
        return self.item_emb.weight[: self.n_items]

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return dict(self.modality) if self.modality is not None else {}

    def modality_parameters(self) -> list[nn.Parameter]:
        return list(self.modality.values()) if self.modality is not None else []
