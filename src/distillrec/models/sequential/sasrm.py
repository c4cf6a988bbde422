"""SASRM: SASRec whose item input carries the items' modality features (the KDSR paper's baseline).

Each modality's features pass through the frozen linear-autoencoder encoder (`FeatureCompressor`,
fitted once on the dataset's features) and a trainable projection to the hidden width; the item table
is ID embedding + the sum of the projected modality codes, used both as the Transformer's input and
as the output table scored against (tied, as SASRec ties them). The projections are the model's
modality embeddings: their own lr group, and what a correlation distiller supervises.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import Features, Representation
from distillrec.models.registry import register
from distillrec.models.sequential.base import FeatureCompressor, empty_users
from distillrec.models.sequential.sasrec import SASRec, SASRecArchitecture


@register
class SASRM(SASRec):
    name = "sasrm"
    uses_features = True

    class Params(SASRecArchitecture):
        modality_dim: int = Field(128, ge=1, description="code width of the linear autoencoder")
        warmup_gamma: float = Field(
            1.0, ge=1.0, description="asynchronous warm-up of the projections (1 = off)"
        )
        warmup_epochs: int = Field(10, ge=0)
        legacy_constant_ratio: bool = False

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__(dataset, params)
        d = params.hidden_size
        compress = {m: FeatureCompressor(f, params.modality_dim) for m, f in dataset.features.items()}
        self.compress = nn.ModuleDict(compress)
        proj = {m: nn.Linear(c.dim, d) for m, c in compress.items()}
        self.proj = nn.ModuleDict(proj)
        for m, lin in proj.items():  # projected codes start at the ID embeddings' scale
            nn.init.normal_(lin.weight, 0.0, params.init_std / compress[m].dim ** 0.5)
            nn.init.zeros_(lin.bias)

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        return {m: self.proj[m](self.compress[m](features[m])) for m in self.modalities}

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        mods = self.modality_embeddings(features)
        fused = self.item_emb.weight[: self.n_items] + sum(mods.values())
        table = torch.cat([fused, self.item_emb.weight[self.pad :]])
        return Representation(empty_users(table), fused, extras={"input": table, "modality": mods})

    def correlation_tables(self, rep: Representation) -> dict[str, Tensor]:
        return rep.extras["modality"]

    def modality_parameters(self) -> list[nn.Parameter]:
        return list(self.proj.parameters())
