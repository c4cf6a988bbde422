"""The backbone contract: every recommender, plain or distilled, is trained and evaluated through it.

Item features are an *argument* of `represent`, never a hidden buffer, so that a distiller can ablate or
swap a modality. A `Representation` holds every user and item vector after propagation, computed once
per training step or per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from distillrec.data.dataset import Dataset

if TYPE_CHECKING:
    from distillrec.models.registry import ModelParams  # the registry imports this module

Features = dict[str, Tensor]

# the boolean hyperparameter by which a model declares that it may take item features as input (see
# `Recommender.reads_features`)
OPTIONAL_FEATURE_INPUT = "modality_input"


@dataclass
class Batch:
    """A training batch of BPR triples (user, positive item, negative item), on the model's device.

    `neg` is [B] by default and [B, n] when the training config asks for n > 1 negatives per positive.
    """

    users: Tensor
    pos: Tensor
    neg: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device))


@dataclass
class Representation:
    """All user and item vectors of one forward pass.

    `parts[m] = (user_part, item_part)` are the per-modality pieces where the model has them, so that a
    per-modality score is one product. `extras` carries model-specific tensors its own loss needs.
    """

    user: Tensor
    item: Tensor
    parts: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def mean_row(x: Tensor) -> Tensor:
    """Every row of `x` replaced by their mean: an ablated modality's features, preferences or table."""
    return x.mean(0, keepdim=True).expand_as(x)


def mean_ablate(features: Features, modalities: set[str] | frozenset[str]) -> Features:
    """Replace each named modality's item features by their mean row (the counterfactual 'absent' input)."""
    unknown = set(modalities) - set(features)
    if unknown:
        raise KeyError(f"cannot ablate unknown modalities {sorted(unknown)}; have {sorted(features)}")
    return {m: (mean_row(f) if m in modalities else f) for m, f in features.items()}


class Recommender(nn.Module):
    """Base class of every backbone.

    Subclasses set `name` (registry key) and `task`, build their parameters in `__init__(dataset, params)`
    and implement `represent` and `loss`. `score` defaults to the dot product of user and item vectors.
    A model whose user side has per-modality parameters (preference vectors) honours `ablated` in
    `represent` by replacing those parameters by their mean over users.
    """

    name: ClassVar[str] = ""
    task: str = "topk"  # a class attribute; a wrapper (CKD's uni-modal view) sets its inner model's
    trainable: ClassVar[bool] = True
    uses_features: ClassVar[bool] = False
    Params: ClassVar[type[ModelParams]]  # the hyperparameters, each with its default
    params: ModelParams  # the resolved ones, set by `build_model`

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        raise NotImplementedError

    def score(self, rep: Representation, users: Tensor, items: Tensor | None = None) -> Tensor:
        """Scores of `users` for `items` ([len(users), len(items)]) or for all items when items is None."""
        u = rep.user[users]
        if items is None:
            return u @ rep.item.T
        return u @ rep.item[items].T

    def pair_score(self, rep: Representation, users: Tensor, items: Tensor) -> Tensor:
        """Score of each (users[b], items[b]) pair: [B]."""
        return (rep.user[users] * rep.item[items]).sum(-1)

    def loss(self, rep: Representation, batch: Batch) -> Tensor | dict[str, Tensor]:
        """The backbone's own objective for one batch; a dict names several terms (their sum is optimised)."""
        raise NotImplementedError

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]:
        """What the model's feature extractor makes of each modality: {modality: [n_items, d]}."""
        return {}

    def pre_activation_embeddings(self, features: Features) -> dict[str, Tensor]:
        """The feature extractor's output before its final activation: {modality: [n_items, d]}.

        The place where a distiller (SGFD) pulls the extractor toward a signed target: after, e.g., a leaky
        ReLU the negative coordinates are almost out of reach. Never used by the model's own forward pass. The
        default is `modality_embeddings` itself, right for an extractor that ends in no activation (a Linear
        projection, a table); a model whose extractor ends in one overrides this (GRCN: W x, not leaky(W x)).
        """
        return self.modality_embeddings(features)

    def counterfactual(self, features: Features, keep: str) -> Representation:
        """The representation with every modality but `keep` mean-ablated (a uni-modal view)."""
        others = frozenset(m for m in features if m != keep)
        return self.represent(mean_ablate(features, others), ablated=others)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups, each with a `name`; a model may give a part its own learning rate."""
        return [{"name": "model", "params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def split_param_groups(
        self, lr: float, name: str, part: list[nn.Parameter], part_lr: float
    ) -> list[dict[str, Any]]:
        """Two optimiser groups: `part` (e.g. embedding tables) under `name` at `part_lr`, the rest at `lr`."""
        part = [p for p in part if p.requires_grad]
        ids = {id(p) for p in part}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"name": "model", "params": rest, "lr": lr}]
        if part:
            groups.append({"name": name, "params": part, "lr": part_lr})
        return groups

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        """Per-group factors of the group's base lr for `epoch` (1-based); {} keeps every lr constant."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer once per training epoch (1-based), before its first batch, in training mode;
        also for the epoch a resumed run continues with, so a per-epoch draw (FREEDOM's edge pruning) is the
        same as in an uninterrupted run. A draw here must come from a generator of the model's own, seeded
        from the run's seed and `epoch` (never the global generators: the other draws of the run would move).
        Default: nothing."""

    @classmethod
    def reads_features(cls, params: Any = None) -> bool:
        """Whether a model of this class built with `params` (its resolved Params; None: with some
        configuration) takes the item features as input: always for a feature model (`uses_features`); a model
        whose feature input is optional declares it by a boolean hyperparameter `modality_input` (KDSR's
        Fig. 3 input of an ID model) and reads them when it is on. A distiller's capability checks
        (`distill.base`) read this before any model is built."""
        if cls.uses_features:
            return True
        fields = getattr(getattr(cls, "Params", None), "model_fields", {})
        if OPTIONAL_FEATURE_INPUT not in fields:
            return False
        return params is None or bool(getattr(params, OPTIONAL_FEATURE_INPUT))

    def fit(self, dataset: Dataset) -> None:
        """Called once before training: non-learned baselines build their state here; learned models need
        nothing."""

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")
