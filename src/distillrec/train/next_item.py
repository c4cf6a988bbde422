"""The next-item task for the shared trainer: prefix batches from the training events, full-ranking
evaluation of the held-out events.

Optional settings are read from the training config when it has them, so that the config can grow
without this module changing: `max_seq_len` (default 50, RecBole's window) and `mask_history`
(default False, RecBole's protocol).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import PrefixSampler, SeqBatch, check_chronological
from distillrec.errors import ConfigError
from distillrec.eval.next_item import NextItemEvaluator
from distillrec.train.config import TrainConfig


def sequence_score_fn(model, rep):  # noqa: ANN001, ANN201 - a SequentialRecommender and its Representation
    """(items, lengths) -> scores over all items, for one representation."""

    def fn(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return model.score_sequences(rep, model.encode(rep, items, lengths))

    return fn


class NextItemTask:
    """Every training event with a non-empty prefix is one sample per epoch, in a fresh order."""

    def __init__(self, dataset: Dataset, config: TrainConfig, device: torch.device, needs_sampler: bool) -> None:
        if dataset.sequences is None:
            raise ConfigError(
                f"dataset {dataset.name!r} has no ordered histories; next-item models need a <name>.seq.inter"
            )
        check_chronological(dataset.sequences, dataset.name)
        max_len = int(getattr(config, "max_seq_len", 50))
        self.config = config
        self.device = device
        self.samplers = {
            s: PrefixSampler(dataset.sequences, dataset.n_items, s, max_len) for s in ("train", "valid", "test")
        }
        if len(self.samplers["train"]) == 0:
            raise ConfigError(f"dataset {dataset.name!r} has no training event with an earlier event")
        self.evaluator = NextItemEvaluator(
            {"valid": self.samplers["valid"], "test": self.samplers["test"]},
            dataset.n_items,
            config.ks,
            device,
            config.eval_batch_size,
            bool(getattr(config, "mask_history", False)),
        )

    def batches(self, generator: torch.Generator) -> Iterator[SeqBatch]:
        for batch in self.samplers["train"].epoch(self.config.batch_size, generator):
            yield batch.to(self.device)

    @torch.no_grad()
    def evaluate(self, model, features: dict, split: str) -> dict[str, float]:  # noqa: ANN001
        rep = model.represent(features)
        return self.evaluator.evaluate(sequence_score_fn(model, rep), split)
