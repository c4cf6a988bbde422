"""The Distiller contract: extra named loss terms added to a backbone's own loss by the trainer.

Besides its hooks, a distiller class declares, for the experiment engine:

- `search_space`: the options worth tuning, in the format of `models.space` (a list is a categorical
  choice, `{low, high[, log]}` a range). The declared spaces are finite (lists only), and every loss weight
  includes 0, so the off point below is one point of the space.
- `off_point`: the options under which the student is trained exactly as the plain backbone would be (every
  distillation weight 0; a schedule the method imposes on the backbone, such as CDL's warm-up, off). It gives
  a value to every dimension of `search_space` (the irrelevant ones their defaults), so that it is one
  point, not a family of equivalent runs; a key outside the space is an option fixed at that point. At its
  off point a distiller adds no loss term (no gradient reaches the student), draws nothing from the global
  random generators during training and skips the work it would only multiply by 0. The engine evaluates
  this point in every search of the distilled arm.
- `off_when`: options that alone put the student at its off point, whatever the other dimensions (CKD's
  `lambda_kd = 0`: no teacher and no term, so every `lambda_g` trains the plain backbone). A search treats
  every such point as the off point (`canonical_point`), so it does not spend a trial on it twice.
- `controls`: named control arms, each a dict of options held fixed while the engine searches the rest of
  `search_space` (e.g. SGFD's `shuffled_labels`: the same method with the item labels permuted).

What a distiller needs of a backbone is a `Capability`: a `typing.Protocol` naming the members the distiller
calls (declared in the distiller's module, e.g. SGFD's `HasModalityEmbeddings`, CDL's `HasCorrelationTables`,
CKD's `HasCounterfactualView`), with a test against the model's class and its resolved hyperparameters,
so that `registry.check_distill` refuses a backbone before any model is built or run folder made. A
distiller names capabilities, never backbones: `backbone_needs(options)`.

Every hook the trainer or the API calls is declared below with a no-op default (`prepare`, `loss`,
`on_epoch_end`, `lr_multipliers`, `summary`), so callers call them plainly, never probe for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.models.base import OPTIONAL_FEATURE_INPUT, Batch, Recommender, Representation
from distillrec.models.registry import ModelParams


def protocol_members(protocol: type) -> list[str]:
    """The public members a Protocol declares: its annotated attributes, then its methods and properties."""
    names = list(getattr(protocol, "__annotations__", {}))
    return names + [n for n in vars(protocol) if not n.startswith("_") and n not in names]


@dataclass(frozen=True)
class Capability:
    """What a distiller needs of a backbone, testable on the model's class before any model is built.

    `protocol`: a runtime-checkable Protocol of the members the distiller calls (isinstance works on a built
    model); `words`: the capability as a refusal names it ("a feature extractor (…)"); `own`: members the
    model must define itself, because `Recommender`'s default of them means "none" (`modality_embeddings`
    returns {}); `features`: the members feed on item features, so the model must take them as input with its
    resolved hyperparameters (`Recommender.reads_features`); `otherwise`: the distiller's own way around a
    refusal, appended to it (e.g. CDL's `id_only`).
    """

    words: str
    protocol: type
    own: tuple[str, ...] = ()
    features: bool = False
    otherwise: str = ""

    def lacking(self, model_cls: type[Recommender], params: ModelParams | None = None) -> str | None:
        """What a model of class `model_cls` built with `params` (None: with some configuration) lacks of this
        capability, in words naming the model; None when it has it."""
        name = model_cls.name
        if self.features and not model_cls.reads_features(params):
            if params is not None and model_cls.reads_features(None):  # a model option gives it the input
                return (
                    f"{name!r} takes no item features with these options: set {OPTIONAL_FEATURE_INPUT}=true "
                    "(a model option: for the plain run compared with it too)"
                )
            return f"{name!r} takes no item features"
        absent = [m for m in protocol_members(self.protocol) if not hasattr(model_cls, m)]
        if absent:
            return f"{name!r} has no {', '.join(absent)}"
        inherited = [m for m in self.own if getattr(model_cls, m) is getattr(Recommender, m, None)]
        if inherited:
            return f"{name!r} has no {', '.join(inherited)} of its own"
        return None


class Distiller(nn.Module):
    """Base class. Its own trainable parameters (e.g. a jointly trained teacher) join the optimiser."""

    name: str = ""
    Options: ClassVar[type[BaseModel]]  # its typed options (`extra="forbid"`, each with a description)
    tasks: ClassVar[frozenset[str]] = frozenset({"topk"})  # the model tasks (Recommender.task) it applies to
    # the engine's declarations (module docstring); empty: nothing to tune, no off point, no control
    search_space: ClassVar[dict[str, Any]] = {}
    off_point: ClassVar[dict[str, Any]] = {}
    off_when: ClassVar[dict[str, Any]] = {}
    controls: ClassVar[dict[str, dict[str, Any]]] = {}
    # controls that are evaluated, not trained: name -> "module:function" taking (dataset, model, params,
    # train_cfg, seed, device, out) and returning {"valid", "test", "per_user_test", "users"}
    reference_controls: ClassVar[dict[str, str]] = {}
    # the capabilities every backbone of this method must have (`backbone_needs` may depend on the options)
    needs: ClassVar[tuple[Capability, ...]] = ()

    @classmethod
    def at_off_point(cls, options: BaseModel) -> bool:
        """Whether `options` hold every value of `off_point` (False when the class declares none)."""
        return bool(cls.off_point) and all(getattr(options, k) == v for k, v in cls.off_point.items())

    @classmethod
    def canonical_point(cls, point: dict[str, Any]) -> dict[str, Any]:
        """The point a search counts `point` as: the off point's values (on the dimensions `point` has)
        where `off_when` holds, since those points train the same model; else `point` itself."""
        if cls.off_when and all(k in point and point[k] == v for k, v in cls.off_when.items()):
            return {**point, **{k: v for k, v in cls.off_point.items() if k in point}}
        return point

    @classmethod
    def backbone_needs(cls, options: Any) -> tuple[Capability, ...]:  # Any: each class's own Options
        """The capabilities a backbone must have for this method with `options` (default: `needs`)."""
        return cls.needs

    @classmethod
    def check_backbone(
        cls, model_cls: type[Recommender], params: ModelParams | None, options: BaseModel
    ) -> str | None:
        """Why a backbone of class `model_cls` with resolved `params` (None: with some configuration) cannot
        take this method with `options`, in one line; None when it can. Called by `registry.check_distill`."""
        for need in cls.backbone_needs(options):
            lacks = need.lacking(model_cls, params)
            if lacks is not None:
                return f"{cls.name} needs a backbone with {need.words}; {lacks}{need.otherwise}"
        return None

    def prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
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
