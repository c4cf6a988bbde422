"""The Distiller contract: extra named loss terms added to a backbone's own loss by the trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from distillrec.models.base import Batch, Recommender, Representation


class Distiller(nn.Module):
    """Base class. Its own trainable parameters (e.g. a jointly trained teacher) join the optimiser."""

    name: str = ""
    tasks: ClassVar[frozenset[str]] = frozenset({"topk"})  # the model tasks (Recommender.task) it applies to

    def prepare(self, dataset, backbone_factory: Callable[[], Recommender] | None, **context) -> None:  # noqa: ANN001, ANN003
        """Train or load teachers (cached by content hash). `context` holds model name, option groups,
        device and the runs root, for teachers that are themselves runs."""

    def loss(self, student: Recommender, rep: Representation, batch: Batch, epoch: int) -> dict[str, Tensor]:
        """Extra loss terms for this batch, by name."""
        return {}

    def on_epoch_end(self, student: Recommender, epoch: int) -> dict[str, float]:
        """Schedules and re-weighting; returns values to log in the history."""
        return {}
