"""What differs between tasks for the trainer: where batches come from and how a split is evaluated.

`topk` (general recommendation): shuffled training pairs with sampled negatives, full ranking of all
items. Other tasks (next-item) register their own `Task` here, so the training loop stays one loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch

from distillrec.data.dataset import Dataset
from distillrec.data.sampling import NegativeSampler, epoch_batches
from distillrec.errors import ConfigError
from distillrec.eval.ranking import Evaluator
from distillrec.models.base import Batch, Recommender
from distillrec.models.sequential.base import sequential
from distillrec.training.config import TrainConfig
from distillrec.training.next_item import NextItemTask
from distillrec.training.scoring import model_score_fn


class Task(Protocol):
    last_per_user: tuple[np.ndarray, dict[str, np.ndarray]]  # set by `evaluate(..., per_user=True)`

    def batches(self, generator: torch.Generator) -> Iterator[Any]: ...

    def evaluate(
        self, model: Recommender, features: dict, split: str, per_user: bool = False
    ) -> dict[str, float]:
        """Mean metrics; with `per_user`, also keep `last_per_user` = (user ids, {metric: values})."""
        ...


class TopKTask:
    """BPR triples over the training pairs; full-ranking evaluation over all items."""

    def __init__(
        self, dataset: Dataset, config: TrainConfig, device: torch.device, needs_sampler: bool
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.device = device
        self.sampler = NegativeSampler(dataset.train, seed=config.seed) if needs_sampler else None
        self.evaluator = Evaluator(dataset, config.preset, config.ks, device, config.eval_batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        n_neg = self.config.n_negatives
        sampler = self.sampler
        assert sampler is not None, "only a trainable model's task makes training batches"
        for users, pos in epoch_batches(self.dataset.train, self.config.batch_size, generator):
            if n_neg == 1:
                neg = sampler.sample(users, generator)
            else:
                neg = sampler.sample(users.repeat_interleave(n_neg), generator).view(-1, n_neg)
            yield Batch(users, pos, neg).to(self.device)

    @torch.no_grad()
    def evaluate(
        self, model: Recommender, features: dict, split: str, per_user: bool = False
    ) -> dict[str, float]:
        rep = model.represent(features)
        result = self.evaluator.evaluate(model_score_fn(model, rep), split, per_user=per_user)
        if per_user:
            users = self.evaluator.plan(split).users.cpu().numpy()
            self.last_per_user = (users, {k: v.numpy() for k, v in self.evaluator.last_per_user.items()})
        return result


TASKS: dict[str, Callable[..., Task]] = {"topk": TopKTask, "next-item": NextItemTask}


def make_task(
    task: str,
    dataset: Dataset,
    config: TrainConfig,
    device: torch.device,
    trainable: bool,
    model: Recommender | None = None,
) -> Task:
    """The task's batches and evaluation; `model` (the one trained or evaluated) sets a next-item task's
    prefix window to the model's own (`input_window`, its `max_len`)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    if task == "next-item" and model is not None:
        return NextItemTask(dataset, config, device, trainable, sequential(model).input_window)
    return TASKS[task](dataset, config, device, trainable)
