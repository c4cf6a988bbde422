"""CKD's premise: one modality is under-used by the multimodal model, and a model of the same backbone that
sees that modality alone (its uni-modal teacher) ranks better with it: there is something to distil.

Two measurements on a finished top-K run:

* reliance and headroom (the verdict's quantity): the run's test metric (Recall@20) with every modality
  but m mean-ablated (`experiment.diagnostics.per_modality`, the model's own uni-modal view) beside the
  uni-modal teacher of m (same backbone, settings and seed, trained with the others mean-ablated: taken
  from CKD's teacher cache, or trained into it on request). headroom_m = (teacher_m − inside_m) /
  teacher_m; the quantity is the largest headroom over modalities.
* the imbalance as the CKD paper defines it (Eqs. 15–18, METHODS.md §6): over BPR triples (u, i, j) drawn
  from the training interactions, δ^m = Δ_J − Δ_{J, m mean-ablated}, ρ^m = max(mean δ^m, ε) /
  max(mean Δt^m, ε) with Δt^m the teacher's margin, and λ_m = (1 − ρ^m / Σρ) / (M − 1), the weight CKD
  would give modality m (the under-used modality gets the larger weight). Without a teacher, ρ uses the
  model's own uni-modal margin as denominator (the official code's variant), reported as `rho_own`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.distill.ckd import UniModalView, load_or_train_teacher, margins, paper_weights
from distillrec.eval.ranking import Evaluator
from distillrec.experiment.api import Run
from distillrec.experiment.diagnostics import find_teacher, per_modality
from distillrec.models.base import Recommender, Representation, mean_ablate
from distillrec.models.registry import build_model
from distillrec.training.checkpoint import load_checkpoint, read_yaml
from distillrec.training.config import TrainConfig
from distillrec.training.scoring import model_score_fn

QUANTITY = "largest relative headroom of a modality to its uni-modal teacher"
EPS = 1e-8


def sample_triples(ds: Dataset, n: int = 4096, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """n BPR triples (u, i, j): (u, i) a training interaction, j uniform over the items u has not trained on."""
    rng = np.random.default_rng(seed)
    coo = ds.train.tocoo()
    pick = rng.integers(len(coo.row), size=n)
    u, i = coo.row[pick], coo.col[pick]
    j = rng.integers(ds.n_items, size=n)
    seen = np.asarray(ds.train[u, j]).ravel() > 0
    while seen.any():  # redraw the few negatives that are positives
        j[seen] = rng.integers(ds.n_items, size=int(seen.sum()))
        seen = np.asarray(ds.train[u, j]).ravel() > 0
    u_t, i_t, j_t = (torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (u, i, j))
    return u_t, i_t, j_t


def imbalance(
    model: Recommender,
    features: dict[str, Tensor],
    triples: tuple[Tensor, Tensor, Tensor],
    teachers: dict[str, tuple[Recommender, Representation]] | None = None,
) -> dict[str, Any]:
    """ρ^m and λ_m of the module docstring (the paper's rule) where every modality has a teacher; the own-margin
    variant (`rho_own`, `lambda_own`) always. `teachers`: per modality (scoring model, its representation)."""
    dev = next(iter(features.values())).device
    u, i, j = (t.to(dev) for t in triples)
    with torch.no_grad():
        joint = margins(model, model.represent(features), u, i, j)
        drop, own = {}, {}
        for m in features:
            ablated = model.represent(mean_ablate(features, {m}), ablated=frozenset({m}))
            drop[m] = joint - margins(model, ablated, u, i, j)
            own[m] = margins(model, model.counterfactual(features, m), u, i, j)
        out: dict[str, Any] = {
            "joint_margin": float(joint.mean()),
            "delta": {m: float(d.mean()) for m, d in drop.items()},
            "rho_own": _rho(drop, own),
            "lambda_own": _floats(paper_weights(drop, own, EPS)),
        }
        if teachers and set(teachers) >= set(features):
            t_margin = {m: margins(s, rep, u, i, j) for m, (s, rep) in teachers.items() if m in features}
            out["teacher_margin"] = {m: float(t.mean()) for m, t in t_margin.items()}
            out["rho"] = _rho(drop, t_margin)
            out["lambda"] = _floats(paper_weights(drop, t_margin, EPS))
    return out


def _rho(drop: dict[str, Tensor], denom: dict[str, Tensor]) -> dict[str, float]:
    return {m: float(drop[m].mean().clamp(min=EPS) / denom[m].mean().clamp(min=EPS)) for m in drop}


def _floats(values: dict[str, Tensor]) -> dict[str, float]:
    return {m: float(v) for m, v in values.items()}


def load_teacher(path: Path, ds: Dataset, device: torch.device) -> UniModalView:
    """A cached uni-modal teacher run folder, loaded as its `UniModalView` (built from its own config)."""
    cfg = read_yaml(path / "config.yaml", "delete the teacher's folder to train it again")
    view = UniModalView(build_model(cfg["model"], ds, cfg["params"]), cfg["view"]["keep"]).to(device)
    view.load_state_dict(load_checkpoint(path / "best.pt", device, "delete the teacher's folder")["model"])
    return view.eval()


def _teacher(run: Run, m: str, train: bool) -> tuple[UniModalView | None, Path | None, str]:
    """(teacher view, its folder, 'cache' | 'trained now' | 'none') for modality m of the run."""
    path = find_teacher(run, m)
    if path is not None:
        return load_teacher(path, run.dataset, run.device), path, "cache"
    if not train:
        return None, None, "none"
    cfg = run.config
    view, path, _ = load_or_train_teacher(
        lambda: build_model(cfg["model"], run.dataset, cfg["params"]),
        run.dataset,
        cfg["model"],
        cfg["params"],
        TrainConfig(**cfg["train"]),
        m,
        int(cfg["seed"]),
        run.device,
        run.run_dir.parents[2],  # CKD's cache: <out>/<dataset>/_teachers, beside <out>/<dataset>/<config>
    )
    assert isinstance(view, UniModalView)  # a teacher for one modality is always its uni-modal view
    return view, path, "trained now"


def _metric(results: dict[str, float]) -> str:
    return (
        "recall@20" if "recall@20" in results else sorted(k for k in results if k.startswith("recall@"))[-1]
    )


def modality_reliance(
    run: Run, train_teachers: bool = False, split: str = "test", n_triples: int = 4096, seed: int = 0
) -> dict[str, Any]:
    """Every CKD measurement of a finished multimodal top-K run (see the module docstring). `value` is the
    largest headroom, None where a modality has no teacher (cached, or trained with `train_teachers`)."""
    rows = per_modality(run, split)
    metric = _metric(rows[0]["model"])
    teachers: dict[str, tuple[Recommender, Representation]] = {}
    modalities: dict[str, Any] = {}
    for row in rows[1:]:
        m = row["modality"]
        view, path, origin = _teacher(run, m, train_teachers)
        entry: dict[str, Any] = {"inside": row["model"][metric], "teacher": None, "teacher_from": origin}
        if view is not None:
            with torch.no_grad():
                teachers[m] = (view.inner, view.represent(run.features))
            entry["teacher"] = (
                row["teacher"][metric] if row["teacher"] else view_metric(run, view, split, metric)
            )
            entry["teacher_dir"] = str(path)
            entry["headroom"] = (entry["teacher"] - entry["inside"]) / max(entry["teacher"], EPS)
        modalities[m] = entry
    heads = [e["headroom"] for e in modalities.values() if "headroom" in e]
    value = max(heads) if len(heads) == len(modalities) else None
    triples = sample_triples(run.dataset, n_triples, seed)
    return {
        "value": value,
        "metric": f"{split} {metric}",
        "full": rows[0]["model"][metric],
        "modalities": modalities,
        "imbalance": imbalance(run.model, run.features, triples, teachers or None),
        "n_triples": n_triples,
    }


def view_metric(run: Run, view: UniModalView, split: str, metric: str) -> float:
    """A teacher's metric, evaluated here (a teacher folder without its metrics for this split)."""
    ev = Evaluator(run.dataset, run.train_config.preset, run.train_config.ks, run.device)
    with torch.no_grad():
        return ev.evaluate(model_score_fn(view.inner, view.represent(run.features)), split)[metric]
