"""The Distiller contract: extra named loss terms added to a backbone's own loss by the trainer.

Besides its hooks, a distiller class declares, for the experiment engine:

- `search_space`: the options worth tuning, in the format of `experiment.space` (a list is a categorical
  choice, `{low, high[, log]}` a range). The declared spaces are finite (lists only), and every loss weight
  includes 0, so the off point below is one point of the space.
- `off_point`: the options under which the student is trained exactly as the plain backbone would be (every
  distillation weight 0; a schedule the method imposes on the backbone, such as CDL's warm-up, off). It gives
  a value to every dimension of `search_space` (the irrelevant ones their defaults), so that it is one
  point, not a family of equivalent runs; a key outside the space is an option fixed at that point. At its
  off point a distiller adds no loss term (no gradient reaches the student), draws nothing from the global
  random generators during training and skips the work it would only multiply by 0. The engine evaluates
  this point in every search of the distilled arm.
- `controls`: named control arms, each a dict of options held fixed while the engine searches the rest of
  `search_space` (e.g. SGFD's `shuffled_labels`: the same method with the item labels permuted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from distillrec.models.base import Batch, Recommender, Representation


class Distiller(nn.Module):
    """Base class. Its own trainable parameters (e.g. a jointly trained teacher) join the optimiser."""

    name: str = ""
    tasks: ClassVar[frozenset[str]] = frozenset({"topk"})  # the model tasks (Recommender.task) it applies to
    # the engine's declarations (module docstring); empty: nothing to tune, no off point, no control
    search_space: ClassVar[dict[str, Any]] = {}
    off_point: ClassVar[dict[str, Any]] = {}
    controls: ClassVar[dict[str, dict[str, Any]]] = {}
    # controls that are evaluated, not trained: name -> "module:function" taking (dataset, model, params,
    # train_cfg, seed, device, out) and returning {"valid", "test", "per_user_test", "users"}
    reference_controls: ClassVar[dict[str, str]] = {}

    @classmethod
    def at_off_point(cls, options: Any) -> bool:  # noqa: ANN401 - the class's pydantic Options
        """Whether `options` hold every value of `off_point` (False when the class declares none)."""
        return bool(cls.off_point) and all(getattr(options, k) == v for k, v in cls.off_point.items())

    def prepare(self, dataset, backbone_factory: Callable[[], Recommender] | None, **context) -> None:  # noqa: ANN001, ANN003
        """Train or load teachers (cached by content hash). `context` holds model name, option groups,
        device and the runs root, for teachers that are themselves runs."""

    def loss(self, student: Recommender, rep: Representation, batch: Batch, epoch: int) -> dict[str, Tensor]:
        """Extra loss terms for this batch, by name."""
        return {}

    def on_epoch_end(self, student: Recommender, epoch: int) -> dict[str, float]:
        """Schedules and re-weighting; returns values to log in the history."""
        return {}

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        """Factors of the backbone's named parameter groups' base lr for `epoch` (1-based), applied by the
        trainer over the backbone's own; {} leaves every lr as the backbone sets it."""
        return {}

    def summary(self) -> dict[str, Any]:
        """What the run's metrics.json records about the distiller (`distill_info`), e.g. its teachers."""
        return {}
