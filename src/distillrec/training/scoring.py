"""A model's scores as the evaluator takes them. The evaluator (`distillrec.eval.ranking`) is given a score
function and knows nothing of models; the choice between a model's own `score` and the buffered dot product
is made here, where models are known."""

from __future__ import annotations

import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.eval.ranking import Evaluator, ScoreFn, buffered_score_fn, dot_score_fn
from distillrec.models.base import Recommender, Representation


def model_score_fn(model: Recommender, rep: Representation) -> ScoreFn:
    """Score function for any model: the fast buffered product when it scores by dot product."""
    if type(model).score is Recommender.score and rep.user.dtype == torch.float32:
        return dot_score_fn(rep.user, rep.item)
    return buffered_score_fn(lambda users: model.score(rep, users))


def evaluate(
    model: Recommender,
    rep: Representation,
    dataset: Dataset,
    split: str = "test",
    preset: str = "mmrec",
    ks: tuple[int, ...] = (10, 20, 50),
) -> dict[str, float]:
    """One-off evaluation; a trainer keeps an `Evaluator` to reuse its prepared masks."""
    return Evaluator(dataset, preset, ks, device=rep.user.device).evaluate(model_score_fn(model, rep), split)


def rank_topk(
    model: Recommender,
    rep: Representation,
    dataset: Dataset,
    users: Tensor,
    k: int,
    split: str = "test",
    preset: str = "mmrec",
) -> Tensor:
    """Top-k items for `users`, masking exactly what the `split` evaluation masks under `preset`."""
    ev = Evaluator(dataset, preset, (k,), device=rep.user.device)
    return ev.topk(model_score_fn(model, rep), split, k, users=users)[1]
