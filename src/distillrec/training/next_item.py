"""The next-item task for the shared trainer: prefix batches from the training events, full-ranking
evaluation of the held-out events.

The prefixes are cut to the model's own window (`SequentialRecommender.input_window`, its Params'
`max_len`; 50 by default, RecBole's window), so that a batch holds exactly what the model reads. Items of a
user's history stay rankable at evaluation (RecBole's protocol, the `mmrec` preset); the `strict` preset
masks them (every known interaction other than the target, as `strict` does for top-K runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import PrefixSampler, SeqBatch, check_chronological
from distillrec.errors import ConfigError
from distillrec.eval.next_item import NextItemEvaluator
from distillrec.models.base import Features, Recommender, Representation
from distillrec.models.sequential.base import SeqParams, SequentialRecommender, sequential
from distillrec.training.config import TrainConfig

DEFAULT_WINDOW: int = SeqParams.model_fields["max_len"].default  # a next-item model's max_len by default


def sequence_score_fn(
    model: SequentialRecommender, rep: Representation
) -> Callable[[Tensor, Tensor], Tensor]:
    """(items, lengths) -> scores over all items, for one representation."""

    def fn(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return model.score_sequences(rep, model.encode(rep, items, lengths))

    return fn


class NextItemTask:
    """Every training event with a non-empty prefix is one sample per epoch, in a fresh order; prefixes hold
    the newest `max_len` events before their target (the model's `input_window`)."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        device: torch.device,
        needs_sampler: bool,
        max_len: int = DEFAULT_WINDOW,
    ) -> None:
        if dataset.sequences is None:
            raise ConfigError(
                f"dataset {dataset.name!r} has no ordered histories; next-item models need a <name>.seq.inter"
            )
        check_chronological(dataset.sequences, dataset.name)
        self.config = config
        self.device = device
        self.samplers = {
            s: PrefixSampler(dataset.sequences, dataset.n_items, s, max_len)
            for s in ("train", "valid", "test")
        }
        if len(self.samplers["train"]) == 0:
            raise ConfigError(f"dataset {dataset.name!r} has no training event with an earlier event")
        self.evaluator = NextItemEvaluator(
            {"valid": self.samplers["valid"], "test": self.samplers["test"]},
            dataset.n_items,
            config.ks,
            device,
            config.eval_batch_size,
            mask_history=config.preset == "strict",  # mmrec: RecBole's protocol, history stays rankable
        )

    def batches(self, generator: torch.Generator) -> Iterator[SeqBatch]:
        for batch in self.samplers["train"].epoch(self.config.batch_size, generator):
            yield batch.to(self.device)

    @torch.no_grad()
    def evaluate(
        self, model: Recommender, features: Features, split: str, per_user: bool = False
    ) -> dict[str, float]:
        rep = model.represent(features)
        result = self.evaluator.evaluate(
            sequence_score_fn(sequential(model), rep), split, per_sample=per_user
        )
        if per_user:  # one held-out event per sample; the sample's user names it
            users = self.samplers[split].users.astype(np.int64)
            self.last_per_user = (users, {k: v.numpy() for k, v in self.evaluator.last_per_sample.items()})
        return result


@torch.no_grad()
def recommend_next(
    model: SequentialRecommender,
    dataset: Dataset,
    features: dict,
    users: ArrayLike,
    k: int = 10,
    exclude_seen: bool = False,
    max_len: int | None = None,
) -> torch.Tensor:
    """Top-k next items [len(users), k] after each user's whole known history (every split), newest
    `max_len` events as input (None: the model's own window); `exclude_seen` drops items the user already has."""
    from distillrec.data.next_item import gather_prefixes

    max_len = model.input_window if max_len is None else max_len
    seq = dataset.sequences
    if seq is None:
        raise ConfigError(f"dataset {dataset.name!r} has no ordered histories")
    users = np.asarray(users, dtype=np.int64)
    bad = users[(users < 0) | (users >= dataset.n_users)]
    if len(bad):
        raise ConfigError(f"unknown user id {int(bad[0])}: the dataset has users 0..{dataset.n_users - 1}")
    ends = seq.offsets[users + 1]
    starts = np.maximum(seq.offsets[users], ends - max_len)
    if (ends == seq.offsets[users]).any():
        raise ConfigError("a requested user has no history to continue")
    items, lengths = gather_prefixes(seq.items, starts, ends, dataset.n_items)
    model.eval()
    rep = model.represent(features)
    dev = model.device
    scores = sequence_score_fn(model, rep)(torch.from_numpy(items).to(dev), torch.from_numpy(lengths).to(dev))
    if exclude_seen:
        counts = seq.offsets[users + 1] - seq.offsets[users]
        rows = np.repeat(np.arange(len(users)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        idx = seq.items[np.repeat(seq.offsets[users], counts) + (np.arange(int(counts.sum())) - first)]
        scores[torch.from_numpy(rows).to(dev), torch.from_numpy(idx).to(dev)] = -torch.inf
    return torch.topk(scores, k, dim=1).indices.cpu()


@torch.no_grad()
def evaluate_next(
    model: SequentialRecommender,
    dataset: Dataset,
    features: dict,
    split: str = "test",
    ks: tuple[int, ...] | list[int] = (5, 10, 20),
    mask_history: bool = False,
    max_len: int | None = None,
) -> dict[str, float]:
    """One-off next-item evaluation of a model (e.g. a loaded run's best weights); prefixes of the newest
    `max_len` events (None: the model's own window, as the trainer evaluates)."""
    seq = dataset.sequences
    if seq is None:
        raise ConfigError(f"dataset {dataset.name!r} has no ordered histories")
    max_len = model.input_window if max_len is None else max_len
    sampler = PrefixSampler(seq, dataset.n_items, split, max_len)
    evaluator = NextItemEvaluator(
        {split: sampler}, dataset.n_items, ks, model.device, mask_history=mask_history
    )
    model.eval()
    return evaluator.evaluate(sequence_score_fn(model, model.represent(features)), split)
