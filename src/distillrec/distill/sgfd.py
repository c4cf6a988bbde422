"""SGFD: semantic-guided feature distillation (Liu et al., MM 2023), as specified in METHODS.md §6.

Per modality m: a teacher T_m (a width-shrinking stack with at least two hidden layers, leaky ReLU between
layers, then L2-normalised; see `teacher_widths`) learns item features from the raw feature and the item
category labels (semantic guidance) and, through a fusion classifier over all teachers' outputs, from the
other modalities (complementary guidance). The student is the backbone's own feature extractor, taken
before its final activation (`Recommender.pre_activation_embeddings`, the official code's place): after a
leaky ReLU the coordinates where the signed, L2-normalised teacher vector is negative are nearly out of
reach (slope 0.01), so part of both distillation terms could never fall to zero. `student_slot: output`
distils the extractor's output (`modality_embeddings`) instead, as earlier versions did. It learns from the
teacher through
    response-based: τ²·KL(softmax(C_m(t_m)/τ) ‖ softmax(C_m(s_m)/τ)), C_m shared by teacher and student;
    feature-based:  MSE(s_m, t_m) (both L2-normalised).
L = L_backbone + ce_weight·(mean_m CE(C_m(t_m), y) + CE(F([t_1;…;t_M]), y)) + kd_weight·(mean_m KL + mean_m MSE).
Items with label −1 are left out of the CE terms. The teacher is detached inside the distillation terms
(knowledge flows teacher → student; the official code's two-way pull is `teacher_receives_kd_grad`), it is
trained jointly by default (`teacher: pretrained` trains and freezes it first), and it is absent at inference.

Search space (see `distill.base`): ce_weight, kd_weight ∈ {0.01, 0.1, 1}, τ = t_decay ∈ {5, 10, 20, 50, 100}
(the values of the official README's commands, none of which sets a weight to 0); off at ce_weight =
kd_weight = 0, where SGFD adds no term and prepares its modules without drawing from the global random
generators: the experiment tries it as one trial beside the space. A point with one weight 0 is not SGFD:
with ce_weight 0 the (detached) teachers never learn from the labels, so the student is pulled toward a fixed
random projection of its input; with kd_weight 0 the teachers learn but teach nothing. Searched with zeros on
each axis, validation chose such points for SGFD on BM3, GRCN and the image-only variant. Control `shuffled_labels` (`labels: shuffled`):
the item label vector under one fixed permutation (`label_shuffle_seed`, independent of the run's seed), so
the label histogram is kept, unknown labels (−1) included, while the labels say nothing about the items; if
SGFD's gain survives it, the gain comes from regularisation, not from the labels' semantics.

Backbones (`FEATURE_EXTRACTOR`, checked by `registry.check_distill` before any run folder is made): a model
that reads item features and defines its own `modality_embeddings` (the `HasModalityEmbeddings` protocol);
an ID model whose feature input is a model option (`modality_input`) has one when it is on. The student's
widths are read off one throwaway backbone in `prepare`: each model names its widths its own way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, cast, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import SeqBatch
from distillrec.distill.base import Capability, Distiller
from distillrec.distill.registry import register_distiller
from distillrec.errors import ConfigError
from distillrec.models.base import Batch, Features, Recommender, Representation

log = logging.getLogger("distillrec.sgfd")


MIN_TEACHER_HIDDEN = 2


@runtime_checkable
class HasModalityEmbeddings(Protocol):
    """SGFD's student: a feature extractor, per modality what the model makes of the item features
    ({modality: [n_items, d]}), also before the extractor's final activation (the default student slot)."""

    def modality_embeddings(self, features: Features) -> dict[str, Tensor]: ...

    def pre_activation_embeddings(self, features: Features) -> dict[str, Tensor]: ...


FEATURE_EXTRACTOR = Capability(
    "a feature extractor (modality_embeddings, which it distils into)",
    HasModalityEmbeddings,
    own=("modality_embeddings",),
    features=True,
)


def shrinking_widths(d_in: int, d: int, factor: int = 4) -> list[int]:
    """Layer widths d_in → ⌊d_in/4⌋ → … → d: stop when the next width would reach or pass below d.

    The official code's rule alone (`teacher_depth: legacy`): on narrow inputs it is as shallow as the
    student, e.g. [512, 128, 64], [384, 96, 64], and [128, 128] (one Linear, the student's own shape) on MAML.
    """
    widths = [d_in]
    w = d_in
    while w // factor > d:
        w = w // factor
        widths.append(w)
    widths.append(d)
    return widths


def teacher_widths(d_in: int, d: int, hidden: list[int] | None = None) -> list[int]:
    """Layer widths of a teacher over d_in-wide features with d-wide output; at least two hidden layers.

    Why deep: SGFD's premise is a teacher that can know more than the student and pass it on. The paper's
    teacher is a deep extractor over 4096-d inputs (4096 → 1024 → 256 → 128), while the student is one Linear
    layer; a teacher no deeper than the student (what the ÷4 rule alone gives on the 384/512-d inputs we have,
    and on MAML's d = 128 a single Linear identical to the student) has the same hypothesis class and cannot
    know more than it. So: `hidden` when given (explicit hidden widths, used as they are); else the ÷4 rule's
    widths when they have at least two hidden layers (the paper's case); else two hidden layers at the
    geometric steps between d_in and d, never narrower than d (512 → 256 → 128 → 64, 384 → 211 → 116 → 64,
    128 → 128 → 128 → 128, and 32 → 64 → 64 → 64 for an input narrower than the output).
    """
    if hidden is not None:
        return [d_in, *hidden, d]
    widths = shrinking_widths(d_in, d)
    if len(widths) - 2 >= MIN_TEACHER_HIDDEN:
        return widths
    steps = MIN_TEACHER_HIDDEN + 1
    inner = [max(d, round(d_in ** (1 - k / steps) * d ** (k / steps))) for k in range(1, steps)]
    return [d_in, *inner, d]


class Teacher(nn.Module):
    """The deep extractor of one modality: Linear stack with leaky ReLU between layers, L2-norm.

    `widths` (input, hidden…, output) default to `teacher_widths(d_in, d)`.
    """

    def __init__(self, d_in: int, d: int, activation: bool = True, widths: list[int] | None = None) -> None:
        super().__init__()
        widths = teacher_widths(d_in, d) if widths is None else widths
        if widths[0] != d_in or widths[-1] != d:
            raise ValueError(f"teacher widths {widths} must run from {d_in} to {d}")
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if self.activation and k < len(self.layers) - 1:
                x = F.leaky_relu(x)
        return F.normalize(x, dim=-1)


def shuffled_order(n: int, seed: int) -> Tensor:
    """One fixed permutation of range(n), drawn from its own generator (not the run's): `labels[order]` keeps
    the label histogram exactly, unknown labels (−1) included."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(n)).long()


def response_kd(teacher_logits: Tensor, student_logits: Tensor, tau: float) -> Tensor:
    """τ²·KL(softmax(t/τ) ‖ softmax(s/τ)), averaged over items."""
    log_pt = F.log_softmax(teacher_logits / tau, dim=-1)
    log_ps = F.log_softmax(student_logits / tau, dim=-1)
    return tau**2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


def labelled_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy on logits over the items whose label is known (≥ 0); zero when there are none."""
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known])


def batch_items(batch: Batch | SeqBatch, positives_only: bool = False) -> Tensor:
    """The distinct items a training batch touches, which SGFD distils on.

    Top-K batches (`Batch`): positives and sampled negatives (or positives only). Next-item batches
    (`SeqBatch`): every item of the input prefixes and the targets (or the targets only).
    """
    if isinstance(batch, Batch):
        parts = [batch.pos] if positives_only else [batch.pos, batch.neg.reshape(-1)]
    elif isinstance(batch, SeqBatch):
        parts = [batch.target] if positives_only else [batch.items[batch.mask], batch.target]
    else:
        raise TypeError(
            f"SGFD reads top-K (Batch) or next-item (SeqBatch) batches, not {type(batch).__name__}"
        )
    return torch.unique(torch.cat(parts))


@register_distiller
class SGFD(Distiller):
    name = "sgfd"
    tasks = frozenset({"topk", "next-item"})
    search_space = {
        "ce_weight": [0.01, 0.1, 1.0],
        "kd_weight": [0.01, 0.1, 1.0],
        "t_decay": [5.0, 10.0, 20.0, 50.0, 100.0],
    }
    off_point = {"ce_weight": 0.0, "kd_weight": 0.0, "t_decay": 10.0}
    controls = {"shuffled_labels": {"labels": "shuffled"}}
    needs = (FEATURE_EXTRACTOR,)

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        ce_weight: float = Field(0.1, ge=0, description="weight of the teachers' classification terms")
        kd_weight: float = Field(0.1, ge=0, description="weight of the two distillation terms")
        t_decay: float = Field(10.0, gt=0, description="temperature τ of the response-based term")
        teacher: Literal["joint", "pretrained"] = "joint"
        pretrain_epochs: int = Field(
            100, ge=1, description="epochs of teacher pre-training (teacher=pretrained)"
        )
        teacher_receives_kd_grad: bool = False
        activation: bool = Field(True, description="leaky ReLU between teacher layers (the code has none)")
        label_free: bool = Field(
            False,
            description="no labels: teachers learn to reconstruct their input; feature distillation only",
        )
        items: Literal["batch", "positives"] = Field(
            "batch",
            description="items fed to SGFD: all the batch's items, or its positives (next-item: targets)",
        )
        labels: Literal["given", "shuffled"] = Field(
            "given", description="the dataset's item labels, or one fixed permutation of them (a control)"
        )
        label_shuffle_seed: int = Field(0, description="seed of the label permutation (labels=shuffled)")
        student_slot: Literal["pre_activation", "output"] = Field(
            "pre_activation",
            description="distil the extractor's output before its final activation (pre_activation), or "
            "after it (output: earlier versions)",
        )
        teacher_depth: Literal["deep", "legacy"] = Field(
            "deep",
            description="deep: at least two hidden layers whatever the input width; legacy: the ÷4 rule "
            "alone (as shallow as the student on narrow inputs; earlier versions)",
        )
        teacher_hidden: list[Annotated[int, Field(ge=1)]] | None = Field(
            None, description="explicit hidden widths of every teacher (teacher_depth=deep); None: the rule"
        )

        @model_validator(mode="after")
        def _one_width_rule(self) -> SGFD.Options:
            if self.teacher_hidden is not None and self.teacher_depth == "legacy":
                raise ValueError("sgfd.teacher_hidden sets the widths itself; it needs teacher_depth=deep")
            return self

    def __init__(self, options: Options) -> None:
        super().__init__()
        self.options = options
        self.label_permutation: Tensor | None = None
        self.teacher_layer_widths: dict[str, list[int]] = {}

    @property
    def off(self) -> bool:
        """No term at all: no distillation and no jointly trained teacher (the off point, whatever τ)."""
        o = self.options
        return o.kd_weight == 0 and (o.ce_weight == 0 or o.teacher != "joint")

    def prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
        if self.off:
            # Off: the modules are built (cheap) from a forked generator, so the student's random stream is
            # the plain backbone's; nothing is pre-trained.
            with torch.random.fork_rng():
                self._prepare(dataset, backbone_factory, **context)
        else:
            self._prepare(dataset, backbone_factory, **context)

    def _prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
        o = self.options
        if not dataset.features:
            raise ConfigError(f"SGFD distils item features; dataset {dataset.name!r} has none")
        if dataset.labels is None or int((dataset.labels >= 0).sum()) == 0:
            if not o.label_free:
                raise ConfigError(
                    f"SGFD needs item category labels (category_label.npy); dataset {dataset.name!r} has none — "
                    "set sgfd.label_free=true for label-free use (feature distillation only)"
                )
        if o.labels == "shuffled" and (o.label_free or dataset.labels is None):
            raise ConfigError(
                "sgfd.labels=shuffled permutes the item labels; it needs them (and label_free off)"
            )
        if backbone_factory is None:
            raise ConfigError("SGFD needs a backbone factory to read the student's widths")
        device = torch.device(context.get("device", "cpu"))
        # The student's widths, read off one throwaway backbone (each model names its widths its own way);
        # built here, it is part of the run's random stream, as it always was (forked at the off point).
        probe = backbone_factory()
        with torch.no_grad():
            student = self._student_slot(probe)(dataset.features)
        del probe
        if not student:
            raise ConfigError(
                f"SGFD needs a backbone with a feature extractor; {context.get('model')!r} has none"
            )
        self.modalities = list(student)
        self.dims = {m: int(e.shape[1]) for m, e in student.items()}
        self.features = {m: f.to(device) for m, f in dataset.features.items()}
        labels = dataset.labels if dataset.labels is not None else torch.full((dataset.n_items,), -1)
        if o.labels == "shuffled":
            self.label_permutation = shuffled_order(len(labels), o.label_shuffle_seed)
            shuffled = labels[self.label_permutation]
            self._labels_changed = float((shuffled != labels).float().mean())
            labels = shuffled
        self.labels = labels.to(device)
        n_cls = max(1, int(self.labels.max()) + 1)
        self.teacher_layer_widths = {
            m: self._teacher_widths(dataset.feature_dims[m], self.dims[m]) for m in self.modalities
        }
        self.teachers = nn.ModuleDict(
            {
                m: Teacher(dataset.feature_dims[m], self.dims[m], o.activation, self.teacher_layer_widths[m])
                for m in self.modalities
            }
        )
        self.classifiers = nn.ModuleDict({m: nn.Linear(self.dims[m], n_cls) for m in self.modalities})
        fused = sum(self.dims.values())
        self.fusion = nn.Sequential(
            nn.Linear(fused, fused // len(self.dims)),
            nn.LeakyReLU(),
            nn.Linear(fused // len(self.dims), n_cls),
        )
        self.decoders = (
            nn.ModuleDict({m: nn.Linear(self.dims[m], dataset.feature_dims[m]) for m in self.modalities})
            if o.label_free
            else None
        )
        self.to(device)
        if o.teacher == "pretrained" and not self.off:
            self._pretrain(device)

    def _student_slot(self, student: HasModalityEmbeddings) -> Callable[[Features], dict[str, Tensor]]:
        """Where the student is read: before the extractor's final activation, or its output."""
        if self.options.student_slot == "pre_activation":
            return student.pre_activation_embeddings
        return student.modality_embeddings

    def _teacher_widths(self, d_in: int, d: int) -> list[int]:
        if self.options.teacher_depth == "legacy":
            return shrinking_widths(d_in, d)
        return teacher_widths(d_in, d, self.options.teacher_hidden)

    def summary(self) -> dict[str, Any]:
        """The labels the teachers learnt from (given, or shuffled: the share of items whose label moved)
        and each teacher's layer widths."""
        widths = {"teacher_widths": dict(self.teacher_layer_widths)}
        if self.label_permutation is None:
            return {"labels": "given", **widths}
        return {
            "labels": "shuffled",
            "label_shuffle_seed": self.options.label_shuffle_seed,
            "labels_changed": round(self._labels_changed, 4),
            **widths,
        }

    def teacher_terms(self, items: Tensor, supervise: bool = True) -> tuple[dict[str, Tensor], Tensor | None]:
        """Teacher outputs for `items` and their supervision loss (CE, or reconstruction when label-free);
        the loss is None when `supervise` is off."""
        t = {m: self.teachers[m](self.features[m][items]) for m in self.modalities}
        if not supervise:
            return t, None
        if self.options.label_free:
            decoders = self.decoders
            assert decoders is not None  # built for label-free use
            loss = cast(
                Tensor, sum(F.mse_loss(decoders[m](t[m]), self.features[m][items]) for m in self.modalities)
            )
            return t, loss / len(self.modalities)
        y = self.labels[items]
        cls = cast(Tensor, sum(labelled_ce(self.classifiers[m](t[m]), y) for m in self.modalities))
        cls = cls / len(self.modalities)
        fuse = labelled_ce(self.fusion(torch.cat([t[m] for m in self.modalities], dim=-1)), y)
        return t, cls + fuse

    def _pretrain(self, device: torch.device) -> None:
        known = torch.arange(len(self.labels), device=device)
        if not self.options.label_free:
            known = known[self.labels >= 0]
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        for _ in range(self.options.pretrain_epochs):
            for chunk in torch.randperm(len(known), device=device).split(1024):
                _, loss = self.teacher_terms(known[chunk])
                assert loss is not None  # supervised
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.requires_grad_(False)
        log.info("SGFD teachers pre-trained for %d epochs and frozen", self.options.pretrain_epochs)

    def loss(
        self, student: Recommender, rep: Representation, batch: Batch | SeqBatch, epoch: int
    ) -> dict[str, Tensor]:
        o = self.options
        if self.off:  # nothing to add (the off point): no term, no work
            return {}
        supervise = o.teacher == "joint" and o.ce_weight > 0
        items = batch_items(batch, positives_only=o.items == "positives")
        s_all = self._student_slot(student)(self.features) if o.kd_weight > 0 else None
        t, supervision = self.teacher_terms(items, supervise)
        out: dict[str, Tensor] = {}
        if supervise:
            assert supervision is not None  # asked for
            out["sgfd_ce"] = o.ce_weight * supervision
        if o.kd_weight == 0:
            return out
        assert s_all is not None  # read above when kd_weight > 0
        kl: Tensor | float = 0.0
        mse: Tensor | float = 0.0
        for m in self.modalities:
            s = F.normalize(s_all[m][items], dim=-1)
            target = t[m] if o.teacher_receives_kd_grad else t[m].detach()
            mse = mse + F.mse_loss(s, target)
            if not o.label_free:
                t_logits = self.classifiers[m](target)
                if not o.teacher_receives_kd_grad:
                    t_logits = t_logits.detach()
                kl = kl + response_kd(t_logits, self.classifiers[m](s), o.t_decay)
        n = len(self.modalities)
        out["sgfd_feature"] = cast(Tensor, o.kd_weight * mse / n)  # a tensor: there is a modality
        if not o.label_free:
            out["sgfd_response"] = cast(Tensor, o.kd_weight * kl / n)
        return out
