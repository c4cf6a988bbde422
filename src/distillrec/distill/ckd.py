"""CKD: counterfactual knowledge distillation for modality balance (Zhang et al., MM 2024).

Stage 1 — uni-modal teachers: for each modality m, the same backbone trained with every other modality
mean-ablated (item features -> their mean row; user modality preferences -> their mean row), with the
backbone's own loss and early stopping on validation. Teachers are ordinary run folders, cached by a hash
of the data, backbone, hyperparameters, training settings and seed, and reused by later runs.

Stage 2 — the student (a fresh backbone) is trained with its own loss plus
    λ_kd · Σ_m λ_m (L_SD^m + λ_g · L_GD^m)
- specific L_SD^m = mean over the batch's triples (u, i, j) of max(0, Δt^m − Δs^m), where Δ = s(u,i) − s(u,j),
  t^m the teacher of m, s^m the student's own counterfactual pass keeping only m;
- generic L_GD^m = binary cross-entropy of σ(Δs^m/τ) against σ(Δt^m/τ) on uniformly drawn (u, j, k);
- counterfactual re-weighting (the paper's Eqs. 15–18, per batch, detached):
  δ^m = Δs − Δs^{without m}, ρ^m = max(mean δ^m, ε) / max(mean Δt^m, ε), λ_m = (1 − ρ^m / Σρ) / (M − 1),
  so the weights sum to 1 and the modality whose removal costs the student least gets the larger weight.
Options: the official code's per-sample rule (`reweight: legacy_per_sample`, weights summing to M), no
re-weighting (λ_m = 1/M), no generic term, and the hinge replaced by KL or MSE.

Search space, off point and controls (see `distill.base`): λ_kd ∈ {0, 1e-3, 1e-2, 1e-1, 1}, λ_g ∈ {0, 1, 5, 10};
off at λ_kd = 0 (no teacher is prepared and no term computed: the student is the plain backbone). Controls:
- `self_distillation` (`teacher: full`): one teacher, the plain multimodal backbone itself (same model,
  hyperparameters, training settings and seed, cached like the uni-modal teachers), with the same specific and
  generic terms between the student's and the teacher's full margins and no re-weighting (weight 1). It
  separates "modality balance" from "knowledge transfer from a second model".
- `teacher_ensemble(...)`: the uni-modal teachers' score ensemble evaluated as a model of its own (no
  training), so a reader sees how much of the student's gain an ensemble of its teachers already has.

Backbones (`COUNTERFACTUAL_VIEW`, checked by `registry.check_distill` before any run folder is made): a model
that reads item features and scores under a uni-modal view (the `HasCounterfactualView` protocol); on a model
that ignores the features every uni-modal teacher would be the plain model. The self-distillation control
needs no more than any backbone has.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Capability, Distiller
from distillrec.distill.registry import register_distiller
from distillrec.errors import ConfigError
from distillrec.eval.ranking import Evaluator
from distillrec.models.base import Batch, Features, Recommender, Representation, mean_ablate
from distillrec.models.registry import build_model, model_class, resolve_params
from distillrec.training.checkpoint import load_checkpoint, write_json
from distillrec.training.config import TrainConfig
from distillrec.training.defaults import resolve_train_config
from distillrec.training.ownership import own_run_folder
from distillrec.training.rundir import run_metrics, start_run_dir
from distillrec.training.trainer import Trainer, seed_everything

log = logging.getLogger("distillrec.ckd")


@runtime_checkable
class HasCounterfactualView(Protocol):
    """CKD's student and teachers: a representation of the item features with some modalities mean-ablated
    (`represent(features, ablated)`), the view keeping one modality alone (`counterfactual(features, keep)`)
    and the score of (user, item) pairs (`pair_score`), from which every margin is taken."""

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation: ...

    def counterfactual(self, features: Features, keep: str) -> Representation: ...

    def pair_score(self, rep: Representation, users: Tensor, items: Tensor) -> Tensor: ...


COUNTERFACTUAL_VIEW = Capability(
    "a counterfactual view of the item features (counterfactual, pair_score on a model that reads them)",
    HasCounterfactualView,
    features=True,
)


class UniModalView(Recommender):
    """A backbone that only ever sees one modality: every other one is mean-ablated, in training and
    evaluation alike. This is how a uni-modal teacher is trained."""

    trainable = True

    def __init__(self, inner: Recommender, keep: str) -> None:
        super().__init__()
        self.inner = inner
        self.keep = keep
        self.task = inner.task

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        return self.inner.counterfactual(features, self.keep)

    def score(self, rep: Representation, users: Tensor, items: Tensor | None = None) -> Tensor:
        return self.inner.score(rep, users, items)

    def pair_score(self, rep: Representation, users: Tensor, items: Tensor) -> Tensor:
        return self.inner.pair_score(rep, users, items)

    def loss(self, rep: Representation, batch: Batch) -> Tensor | dict[str, Tensor]:
        return self.inner.loss(rep, batch)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self.inner.param_groups(lr)

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        return self.inner.lr_multipliers(epoch)

    def on_epoch_start(self, epoch: int) -> None:
        self.inner.on_epoch_start(epoch)

    def fit(self, dataset: Dataset) -> None:
        self.inner.fit(dataset)


FULL = "full"  # the teacher name of the self-distillation control (the plain multimodal backbone)


def teacher_key(dataset: Dataset, model: str, params: dict, train: dict, keep: str | None, seed: int) -> str:
    """Content hash of a teacher run; `keep` None is the plain backbone (every modality)."""
    blob = json.dumps(
        {
            "data": dataset.content_hash,
            "model": model,
            "params": params,
            "train": train,
            "keep": keep,
            "seed": seed,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


RETRAIN_TEACHER = "delete the teacher's folder to train it again"


def teacher_dir(root: Path, dataset: Dataset, model: str, keep: str | None, key: str, seed: int) -> Path:
    view = f"only-{keep}" if keep is not None else FULL
    return Path(root) / dataset.name / "_teachers" / f"{model}-{view}-{key}" / f"seed{seed}"


def load_or_train_teacher(
    factory: Callable[[], Recommender],  # a fresh backbone
    dataset: Dataset,
    model: str,
    params: dict,
    train_cfg: TrainConfig,
    keep: str | None,
    seed: int,
    device: torch.device,
    root: Path | None,
) -> tuple[Recommender, Path | None, bool]:
    """The teacher for `keep`: loaded from its cached run folder, else trained there. `keep` names the one
    modality a uni-modal teacher sees (a `UniModalView`); None is the plain backbone on every modality (the
    self-distillation control), the same run a plain training of this model, settings and seed makes.

    Returns (teacher in eval mode with frozen parameters, its run folder, whether it was trained now)."""
    cfg = train_cfg.model_copy(update={"seed": seed})
    key = teacher_key(dataset, model, params, cfg.model_dump(), keep, seed)
    run_dir = teacher_dir(root, dataset, model, keep, key, seed) if root is not None else None
    name = keep if keep is not None else "all modalities"
    seed_everything(seed)
    view = (UniModalView(factory(), keep) if keep is not None else factory()).to(device)
    # teachers are shared by every distilled run with this seed: parallel jobs wait for one to train it
    with own_run_folder(run_dir) if run_dir is not None else contextlib.nullcontext():
        trained = _load_or_train(view, dataset, model, params, cfg, keep, seed, device, run_dir, name)
    view.eval()
    view.requires_grad_(False)
    return view, run_dir, trained


def _load_or_train(
    view: Recommender,
    dataset: Dataset,
    model: str,
    params: dict,
    cfg: TrainConfig,
    keep: str | None,
    seed: int,
    device: torch.device,
    run_dir: Path | None,
    name: str,
) -> bool:
    """Load a finished teacher into `view`, or train it (into `run_dir` when given); True if trained now."""
    if run_dir is not None and (run_dir / "metrics.json").exists():
        view.load_state_dict(load_checkpoint(run_dir / "best.pt", device, RETRAIN_TEACHER)["model"])
        log.info("CKD teacher for %s: reusing %s", name, run_dir)
        return False
    log.info("CKD teacher for %s: training%s", name, f" into {run_dir}" if run_dir else "")
    config = {
        "model": model,
        "params": params,
        "train": cfg.model_dump(),
        "view": {"keep": keep, "ablated": "mean"} if keep is not None else FULL,
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "content_hash": dataset.content_hash,
            "split_hash": dataset.split_hash,
        },
        "seed": seed,
    }
    if run_dir is not None:
        start_run_dir(run_dir, config, dataset, device)
    result = Trainer(view, dataset, cfg, run_dir, device=device, quiet=True).fit(resume=run_dir is not None)
    if run_dir is not None:
        metrics = run_metrics(model, [], dataset, seed, cfg, result)
        metrics["view"] = f"only {keep}" if keep is not None else FULL
        write_json(run_dir / "metrics.json", metrics)
    return True


def margins(model: HasCounterfactualView, rep: Representation, users: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Δ(u, a, b) = s(u, a) − s(u, b)."""
    return model.pair_score(rep, users, a) - model.pair_score(rep, users, b)


def specific_term(t: Tensor, s: Tensor, kind: str, tau: float) -> Tensor:
    """Per-triple specific distillation: one-sided hinge (default), or KL / MSE as ablations."""
    if kind == "hinge":
        return F.relu(t - s)
    if kind == "mse":
        return (t - s) ** 2
    # Bernoulli KL(σ(t/τ) ‖ σ(s/τ))
    pt = torch.sigmoid(t / tau)
    return pt * (F.logsigmoid(t / tau) - F.logsigmoid(s / tau)) + (1 - pt) * (
        F.logsigmoid(-t / tau) - F.logsigmoid(-s / tau)
    )


def generic_term(t: Tensor, s: Tensor, tau: float) -> Tensor:
    """Binary cross-entropy of σ(s/τ) against the soft target σ(t/τ) (the paper's Eq. 12), mean."""
    return F.binary_cross_entropy_with_logits(s / tau, torch.sigmoid(t / tau))


def paper_weights(
    delta_drop: dict[str, Tensor], teacher_margin: dict[str, Tensor], eps: float
) -> dict[str, Tensor]:
    """λ_m = (1 − ρ^m / Σρ) / (M − 1), ρ^m = max(mean δ^m, ε) / max(mean Δt^m, ε); sums to 1."""
    names = list(delta_drop)
    if len(names) == 1:
        return {names[0]: torch.ones(())}
    rho = {m: delta_drop[m].mean().clamp(min=eps) / teacher_margin[m].mean().clamp(min=eps) for m in names}
    total = sum(rho.values())
    return {m: (1 - rho[m] / total) / (len(names) - 1) for m in names}


def legacy_weights(delta_drop: dict[str, Tensor], own_margin: dict[str, Tensor]) -> dict[str, Tensor]:
    """The official code's per-sample rule: c_m = clip(δ^m / Δs^m, 1e-8, 10), w_m = M (1 − c_m / Σc) / (M − 1);
    for two modalities w_t = 2 c_v / (c_t + c_v). Weights sum to M per sample."""
    names = list(delta_drop)
    if len(names) == 1:
        return {names[0]: torch.ones_like(delta_drop[names[0]])}
    c = {m: (delta_drop[m] / own_margin[m]).nan_to_num(1e-8).clamp(1e-8, 10) for m in names}
    total = sum(c.values())
    return {m: len(names) * (1 - c[m] / total) / (len(names) - 1) for m in names}


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generators `torch.random.fork_rng` must save along the CPU's."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@register_distiller
class CKD(Distiller):
    name = "ckd"
    search_space = {"lambda_kd": [0.0, 1e-3, 1e-2, 1e-1, 1.0], "lambda_g": [0.0, 1.0, 5.0, 10.0]}
    off_point = {"lambda_kd": 0.0, "lambda_g": 0.0}
    off_when = {"lambda_kd": 0.0}  # no teacher, no term: lambda_g changes nothing
    controls = {"self_distillation": {"teacher": FULL}}
    reference_controls = {"teacher_ensemble": "distillrec.distill.ckd:teacher_ensemble"}
    needs = (COUNTERFACTUAL_VIEW,)

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        lambda_kd: float = Field(0.01, ge=0, description="weight of the whole distillation term (0: off)")
        lambda_g: float = Field(5.0, ge=0, description="weight of the generic term (the code's `kl`)")
        temperature: float = Field(0.1, gt=0, description="τ of the soft margins (the code's pred_temp)")
        n_generic: int = Field(
            5000, ge=1, description="uniform (u, j, k) triples per batch for the generic term"
        )
        reweight: Literal["paper", "legacy_per_sample", "none"] = "paper"
        specific_loss: Literal["hinge", "kl", "mse"] = "hinge"
        use_generic: bool = True
        teacher: Literal["unimodal", "full"] = Field(
            "unimodal",
            description="unimodal: one teacher per modality (CKD); full: the plain multimodal backbone as the "
            "single teacher, weight 1 (the self-distillation control)",
        )
        teacher_seed: int | None = Field(
            None, description="seed of the teachers (default: the student's seed)"
        )
        eps: float = 1e-8

    def __init__(self, options: Options) -> None:
        super().__init__()
        self.options = options
        self.teachers: dict[str, Recommender] = {}
        self.teacher_dirs: dict[str, str | None] = {}
        self.trained_now: dict[str, bool] = {}
        self._weight_log: dict[str, list[float]] = {}

    @classmethod
    def backbone_needs(cls, options: CKD.Options) -> tuple[Capability, ...]:
        """Uni-modal teachers need the counterfactual view; the self-distillation control only pair scores."""
        return () if options.teacher == FULL else cls.needs

    @property
    def full(self) -> bool:
        return self.options.teacher == FULL

    def prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
        if not self.full and len(dataset.features) < 2:
            raise ConfigError(
                f"CKD balances modalities and needs at least two; dataset {dataset.name!r} has {dataset.modalities}"
            )
        if backbone_factory is None:
            raise ConfigError("CKD needs a backbone factory to train its teachers")
        if self.options.lambda_kd == 0:
            log.info(
                "CKD at lambda_kd = 0 (its off point): no teacher is prepared, the student trains as the plain backbone"
            )
            return
        model = context["model"]
        groups = context.get("groups", {})
        device = torch.device(context.get("device", "cpu"))
        out = context.get("out")
        student_cfg = resolve_train_config(model, groups.get("train", {}))
        seed = (
            self.options.teacher_seed
            if self.options.teacher_seed is not None
            else context.get("seed", student_cfg.seed)
        )
        params = resolve_params(model, groups.get("model", {})).model_dump()
        # The generators (CPU and the run's CUDA device) are restored around teacher training so the student's
        # run does not depend on whether its teachers came from the cache.
        keeps: list[str | None] = [None] if self.full else list(dataset.modalities)
        with torch.random.fork_rng(devices=_rng_devices(device)):
            for keep in keeps:
                name = keep if keep is not None else FULL
                view, run_dir, trained = load_or_train_teacher(
                    backbone_factory,
                    dataset,
                    model,
                    params,
                    student_cfg,
                    keep,
                    seed,
                    device,
                    Path(out) if out else None,
                )
                self.teachers[name] = view
                self.teacher_dirs[name] = str(run_dir) if run_dir else None
                self.trained_now[name] = trained
        self.features = {m: f.to(device) for m, f in dataset.features.items()}
        with torch.no_grad():
            self.teacher_reps = {m: t.represent(self.features) for m, t in self.teachers.items()}
        self.users_with_data = (
            torch.from_numpy((dataset.train.getnnz(axis=1) > 0).nonzero()[0]).long().to(device)
        )
        self.n_items = dataset.n_items

    def summary(self) -> dict[str, Any]:
        return {"teachers": self.teacher_dirs, "options": self.options.model_dump()}

    def _scorer(self, m: str) -> Recommender:
        """The model whose pair scores are teacher m's (a uni-modal view scores through its backbone)."""
        t = self.teachers[m]
        return t.inner if isinstance(t, UniModalView) else t

    def loss(self, student: Recommender, rep: Representation, batch: Batch, epoch: int) -> dict[str, Tensor]:
        o = self.options
        if o.lambda_kd == 0:  # the off point: no term, no work, no draw from the global generators
            return {}
        u, i = batch.users, batch.pos
        j = batch.neg if batch.neg.dim() == 1 else batch.neg[:, 0]
        names = list(self.teachers)
        if self.full:  # self-distillation: the student's own full margins against the plain teacher's
            views = {FULL: rep}
        else:
            views = {m: student.counterfactual(self.features, m) for m in names}
        delta_s = {m: margins(student, views[m], u, i, j) for m in names}
        with torch.no_grad():
            delta_t = {m: margins(self._scorer(m), self.teacher_reps[m], u, i, j) for m in names}
        use_generic = o.use_generic and o.lambda_g > 0
        # generic triples: users with training data, items uniform over all items
        dev = u.device
        if use_generic:
            gu = self.users_with_data[torch.randint(len(self.users_with_data), (o.n_generic,), device=dev)]
            gj = torch.randint(self.n_items, (o.n_generic,), device=dev)
            gk = torch.randint(self.n_items, (o.n_generic,), device=dev)
        if self.full:
            weights = {FULL: torch.ones((), device=dev)}
        else:
            weights = self._weights(student, rep, views, delta_s, delta_t, u, i, j)
        specific = torch.zeros((), device=dev)
        generic = torch.zeros((), device=dev)
        for m in names:
            w = weights[m]
            per_triple = specific_term(delta_t[m], delta_s[m], o.specific_loss, o.temperature)
            specific = specific + (w * per_triple).mean()
            if use_generic:
                with torch.no_grad():
                    gt = margins(self._scorer(m), self.teacher_reps[m], gu, gj, gk)
                gs = margins(student, views[m], gu, gj, gk)
                generic = generic + w.mean() * generic_term(gt, gs, o.temperature)
        if not self.full:
            for m in names:
                self._weight_log.setdefault(m, []).append(float(weights[m].mean()))
        out = {"ckd_specific": o.lambda_kd * specific}
        if use_generic:
            out["ckd_generic"] = o.lambda_kd * o.lambda_g * generic
        return out

    def _weights(
        self,
        student: HasCounterfactualView,
        rep: Representation,
        views: dict[str, Representation],
        delta_s: dict[str, Tensor],
        delta_t: dict[str, Tensor],
        u: Tensor,
        i: Tensor,
        j: Tensor,
    ) -> dict[str, Tensor]:
        names = list(views)
        mode = self.options.reweight
        if mode == "none":
            return {m: torch.full((), 1.0 / len(names), device=u.device) for m in names}
        with torch.no_grad():
            joint = margins(student, rep, u, i, j)
            drop = {}
            for m in names:
                if len(names) == 2:  # without m = keeping the other one
                    other = next(n for n in names if n != m)
                    without = delta_s[other]
                else:
                    ablated = student.represent(mean_ablate(self.features, {m}), ablated=frozenset({m}))
                    without = margins(student, ablated, u, i, j)
                drop[m] = joint - without
            if mode == "paper":
                return paper_weights(drop, delta_t, self.options.eps)
            return legacy_weights(drop, {m: delta_s[m].detach() for m in names})

    def on_epoch_end(self, student: Recommender, epoch: int) -> dict[str, float]:
        out = {f"ckd_lambda_{m}": sum(v) / len(v) for m, v in self._weight_log.items() if v}
        self._weight_log = {}
        return out


# --------------------------------------------------------------------------- the ensemble control
def zscore_rows(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Each row minus its mean, over its standard deviation (over all items; a constant row becomes 0)."""
    centred = scores - scores.mean(dim=1, keepdim=True)
    return centred / scores.std(dim=1, unbiased=False, keepdim=True).clamp_min(eps)


def teacher_ensemble(
    dataset: Dataset,
    model: str,
    params: dict,
    train_cfg: TrainConfig | dict,
    seed: int,
    device: torch.device | str,
    out: Path | str | None,
) -> dict[str, Any]:
    """CKD's uni-modal teachers as one model of their own (a control arm; nothing is trained beyond them).

    The teachers are the ones CKD distils from: loaded from the teachers' cache under `out` (the runs root;
    None: trained in memory), else trained and cached there, with `params` (the model's hyperparameters,
    defaults filled in), `train_cfg` (a TrainConfig or its overrides) and `seed` — the same cache keys a CKD
    run of that backbone, settings and teacher seed uses, so the two share the teachers.

    The ensemble's score of (u, i) is the mean over the modalities m of teacher m's scores of u z-scored over
    all items: z^m(u, i) = (s^m(u, i) − mean_i s^m(u, ·)) / std_i s^m(u, ·). A plain mean of the raw scores
    would weigh each teacher by the spread of its scores — separately trained models score on scales of their
    own (embedding norms, item biases), so the teacher with the widest margins would decide the ranking alone.
    Per-user z-scoring is an increasing affine map of each teacher's row, so every teacher alone ranks exactly
    as before, and the mean gives each teacher an equal say in each user's ranking (the uni-modal counterpart
    of CKD's λ_m = 1/M).

    Evaluated as a run is: `distillrec.eval.ranking.Evaluator` with the preset and ks of the training
    settings, on valid and test. Returns {"valid": {metric: mean}, "test": {metric: mean},
    "per_user_test": {metric: np.ndarray over the test users}, "users": np.ndarray of those user ids (the
    evaluator's `plan("test").users`), "teachers": {modality: run folder or None}}.
    """
    if model_class(model).task != "topk":
        raise ConfigError(
            f"the teacher ensemble ranks items for users; {model!r} is a {model_class(model).task} model"
        )
    if len(dataset.features) < 2:
        raise ConfigError(
            f"the teacher ensemble needs at least two modalities; dataset {dataset.name!r} has {dataset.modalities}"
        )
    device = torch.device(device)
    resolved = resolve_params(model, params).model_dump()
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else resolve_train_config(model, dict(train_cfg))
    teachers: dict[str, Recommender] = {}
    dirs: dict[str, str | None] = {}
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=_rng_devices(device)):
            for m in dataset.modalities:
                view, run_dir, _ = load_or_train_teacher(
                    lambda: build_model(model, dataset, resolved),
                    dataset,
                    model,
                    resolved,
                    cfg,
                    m,
                    seed,
                    device,
                    Path(out) if out is not None else None,
                )
                teachers[m], dirs[m] = view, str(run_dir) if run_dir else None
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    features = {m: f.to(device) for m, f in dataset.features.items()}
    with torch.no_grad():
        reps = {m: t.represent(features) for m, t in teachers.items()}

    def score_fn(users: Tensor, buffer: Tensor | None) -> Tensor:
        total: Tensor | None = None
        for m, t in teachers.items():
            z = zscore_rows(t.score(reps[m], users).float())
            total = z if total is None else total + z
        assert total is not None  # CKD has a teacher per modality, two at least
        return total / len(teachers)

    evaluator = Evaluator(dataset, cfg.preset, cfg.ks, device, cfg.eval_batch_size)
    valid = evaluator.evaluate(score_fn, "valid")
    test = evaluator.evaluate(score_fn, "test", per_user=True)
    return {
        "valid": valid,
        "test": test,
        "per_user_test": {k: v.numpy() for k, v in evaluator.last_per_user.items()},
        "users": evaluator.plan("test").users.cpu().numpy(),
        "teachers": dirs,
    }
