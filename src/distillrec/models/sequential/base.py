"""What next-item backbones share: the sequence-encoding contract and the linear-autoencoder
compression of item features.

A next-item model has no user vectors: `represent(features)` builds its item tables once per step
(`rep.item` = the output table scored against, `rep.extras["input"]` = the input table with a padding
row at index n_items), `encode(rep, items, lengths)` turns left-aligned prefixes into one vector
each, and `score_sequences` ranks every item for them. `correlation_tables(rep)` names, per modality,
the item embeddings a correlation distiller (KDSR's CDL) supervises: the modality tables where the
model has them (`has_modality_tables`), otherwise its ID table (then the distillation is the only way
modality knowledge reaches the model; CDL asks for that explicitly, `cdl.id_only`).

`ModalityInputParams` / `modality_tables` / `fused_input`: KDSR's Figure 3 input for an ID-based
model (GRU4Rec, SASRec with `modality_input: true`): per modality a trainable item table initialised
from the features' linear-autoencoder codes at the codes' own scale (unit mean square, the compressed
features as KDSR copies them in), added to the ID embedding at the input; scores stay dot products
with the ID table. Off by default: the plain models are unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import SeqBatch
from distillrec.errors import ConfigError
from distillrec.models.base import Recommender, Representation, mean_row
from distillrec.models.registry import ModelParams
from distillrec.models.schedules import AsyncWarmup, warmup_factors

MODALITY_GROUP = "modality"

# (content hash of a feature matrix, code width) -> (mean, components, scale); fitted once per process
_AE_CACHE: dict[tuple[str, int], tuple[Tensor, Tensor, float]] = {}


def _content_hash(x: Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()


def fit_linear_autoencoder(features: Tensor, dim: int) -> tuple[Tensor, Tensor, float]:
    """Encoder (mean [w], components [w, k], scale) of the linear autoencoder with a k-wide code.

    Under squared reconstruction error the optimal linear autoencoder spans the top-k principal
    subspace (Baldi & Hornik, 1989), so it is computed exactly by one SVD rather than by gradient steps:
    deterministic and instant. Signs are fixed (largest entry of each component positive) so that
    two fits agree; `scale` brings the codes to unit mean square. Cached per content and width.
    """
    key = (_content_hash(features), int(dim))
    if key not in _AE_CACHE:
        x = features.detach().cpu().double()
        mean = x.mean(0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(int(dim), vh.shape[0])
        comp = vh[:k].T  # [w, k]
        sign = torch.sign(comp.gather(0, comp.abs().argmax(0, keepdim=True)))
        comp = comp * torch.where(sign == 0, torch.ones_like(sign), sign)
        z = (x - mean) @ comp
        scale = float(1.0 / z.pow(2).mean().clamp_min(1e-24).sqrt())
        _AE_CACHE[key] = (mean.float(), comp.float(), scale)
    return _AE_CACHE[key]


class FeatureCompressor(nn.Module):
    """Frozen linear encoder of one modality's features (fitted on the dataset's features at init)."""

    mean: Tensor
    components: Tensor

    def __init__(self, features: Tensor, dim: int) -> None:
        super().__init__()
        mean, comp, scale = fit_linear_autoencoder(features, dim)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("components", comp.clone())
        self.scale = scale
        self.dim = comp.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.components * self.scale


def compress_features(features: Tensor, dim: int) -> Tensor:
    """Codes [n_items, k] of the linear autoencoder fitted on `features`."""
    mean, comp, scale = fit_linear_autoencoder(features, dim)
    return (features.detach().cpu().float() - mean) @ comp * scale


class SeqParams(ModelParams):
    """Settings every next-item model has."""

    max_len: int = Field(50, ge=1, description="newest events kept per input sequence")


class WarmupParams(SeqParams):
    """For models with modality tables: KDSR's asynchronous warm-up of those tables, off by default
    (gamma 1); a CDL run switches it on through the distiller instead."""

    warmup_gamma: float = Field(1.0, ge=1.0)
    warmup_epochs: int = Field(10, ge=0)
    legacy_constant_ratio: bool = False


class ModalityInputParams(WarmupParams):
    """For ID-based models that may take KDSR's modality input (Fig. 3): off by default."""

    modality_input: bool = Field(
        False, description="item input = ID embedding + one trainable table per modality (KDSR Fig. 3)"
    )
    modality_init_scale: float = Field(
        1.0, gt=0, description="modality tables' rms relative to the compressed features' own (unit)"
    )


def modality_tables(dataset: Dataset, width: int, scale: float) -> nn.ParameterDict:
    """One trainable [n_items, width] table per modality, initialised from the features' linear-autoencoder
    codes (width columns; zero columns where a modality has fewer) times `scale` (1: the codes' own unit
    mean square, the features' scale). Deterministic: draws nothing from the random generators."""
    return nn.ParameterDict(
        {
            m: nn.Parameter(pad_columns(compress_features(f, width), width) * scale)
            for m, f in dataset.features.items()
        }
    )


def ablate_tables(tables: nn.ParameterDict | dict[str, Tensor], ablated: frozenset[str]) -> dict[str, Tensor]:
    """The tables with each ablated modality's rows replaced by their mean row."""
    return {m: (mean_row(t) if m in ablated else t) for m, t in tables.items()}


def fused_input(id_weight: Tensor, n_items: int, mods: dict[str, Tensor]) -> Tensor:
    """The input table [n_items + 1, d]: ID embedding + the sum of the modality tables, padding row kept."""
    fused = id_weight[:n_items] + sum(mods.values())
    return torch.cat([fused, id_weight[n_items:]])


def pad_columns(x: Tensor, d: int) -> Tensor:
    """Zero columns up to width d (a modality narrower than the hidden size)."""
    return F.pad(x, (0, d - x.shape[1])) if x.shape[1] < d else x


class SequentialRecommender(Recommender):
    """Base of next-item backbones; subclasses implement `represent` and `encode`."""

    task = "next-item"
    max_len: (
        int  # newest events of a sequence the model reads; each subclass sets it from its Params (SeqParams)
    )

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        if dataset.sequences is None:
            raise ConfigError(f"dataset {dataset.name!r} has no ordered histories; {self.name} needs them")
        self.n_items = int(dataset.n_items)
        self.pad = self.n_items
        self.modalities = list(dataset.features)

    # ----------------------------------------------------------------- contract
    def encode(self, rep: Representation, items: Tensor, lengths: Tensor) -> Tensor:
        """One vector per left-aligned prefix: [B, d]."""
        raise NotImplementedError

    def score_sequences(self, rep: Representation, h: Tensor) -> Tensor:
        """Scores of every item for each sequence vector: [B, n_items]."""
        return h @ rep.item.T

    def loss(self, rep: Representation, batch: SeqBatch) -> Tensor:  # type: ignore[override]  # next-item batches
        """Cross-entropy of the next item over all items (RecBole's CE loss)."""
        logits = self.score_sequences(rep, self.encode(rep, batch.items, batch.lengths))
        return F.cross_entropy(logits, batch.target)

    def id_table(self) -> Tensor:
        """The item ID embeddings [n_items, d] (the forgetting diagnostic's ID-only reference)."""
        raise NotImplementedError

    def correlation_tables(self, rep: Representation) -> dict[str, Tensor]:
        """Per modality, the item embeddings [n_items, d] that correlation distillation supervises: the
        modality tables where the model has them (`rep.extras["modality"]`), otherwise the ID input table."""
        if "modality" in rep.extras:
            return rep.extras["modality"]
        table = rep.extras["input"][: self.n_items]
        return {m: table for m in self.modalities}

    @property
    def has_modality_tables(self) -> bool:
        """Whether the model has trainable per-item modality embeddings (its `correlation_tables`);
        False: `correlation_tables` stands its ID table in for every modality."""
        return bool(self.modality_parameters())

    @property
    def input_window(self) -> int:
        """The newest events of a sequence the model reads (its Params' `max_len`): the window the next-item
        samplers cut prefixes to, so that a batch holds exactly what the model sees."""
        return int(self.max_len)

    @property
    def correlation_dim(self) -> int:
        """Width of the `correlation_tables` rows."""
        return int(self.id_table().shape[1])

    def score(self, rep: Representation, users: Tensor, items: Tensor | None = None) -> Tensor:
        raise ConfigError(
            f"{self.name} ranks items for a sequence, not a user id: use score_sequences(rep, encode(...))"
        )

    def pair_score(self, rep: Representation, users: Tensor, items: Tensor) -> Tensor:
        return self.score(rep, users, items)

    # ----------------------------------------------------------------- optimisation
    def modality_parameters(self) -> list[nn.Parameter]:
        """Parameters of the modality tables/projections (their own lr group)."""
        return []

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self.split_param_groups(lr, MODALITY_GROUP, list(self.modality_parameters()), lr)

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        p = getattr(self, "params", None)
        if p is None or getattr(p, "warmup_gamma", 1.0) <= 1.0 or not self.modality_parameters():
            return {}
        schedule = AsyncWarmup(
            gamma=p.warmup_gamma, epochs=p.warmup_epochs, legacy_constant_ratio=p.legacy_constant_ratio
        )
        return warmup_factors(schedule, (MODALITY_GROUP,), epoch)


def sequential(model: Recommender) -> SequentialRecommender:
    """A next-item model as the sequential contract every next-item backbone implements."""
    if not isinstance(model, SequentialRecommender):
        raise TypeError(f"{type(model).__name__} is a next-item model outside SequentialRecommender")
    return model


def empty_users(table: Tensor) -> Tensor:
    """The (empty) user matrix of a next-item Representation."""
    return table.new_zeros(0, table.shape[1])


def length_buckets(lengths: Tensor, width: int) -> list[tuple[Tensor, int]]:
    """Rows grouped by length into (w/2, w] buckets (w a power of two, capped at `width`): a model that
    needs a padded [rows, w] layout pays at most twice each row's own length, not the batch's longest."""
    widths = torch.pow(2, torch.ceil(torch.log2(lengths.clamp(min=1).float())).long()).clamp(max=width)
    return [((widths == w).nonzero(as_tuple=True)[0], int(w)) for w in torch.unique(widths).tolist()]


def by_length_buckets(fn: Callable[[Tensor, Tensor], Tensor], items: Tensor, lengths: Tensor) -> Tensor:
    """fn((items, lengths) -> [b, d]) applied per length bucket to left-aligned rows trimmed to the bucket's
    width; rows back in order."""
    parts, order = [], []
    for rows, w in length_buckets(lengths, items.shape[1]):
        parts.append(fn(items[rows, :w], lengths[rows]))
        order.append(rows)
    return torch.cat(parts)[torch.argsort(torch.cat(order))]
