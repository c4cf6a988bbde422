"""MostPop: every user gets the items most often seen in training. A floor any model must clear."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.models.base import Features, Recommender, Representation
from distillrec.models.registry import ModelParams, register


@register
class MostPop(Recommender):
    name = "mostpop"
    trainable = False

    class Params(ModelParams):
        pass

    popularity: Tensor
    ones: Tensor

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        pop = np.asarray(dataset.train.sum(0)).ravel().astype(np.float32)
        self.register_buffer("popularity", torch.from_numpy(pop).unsqueeze(1))
        self.register_buffer("ones", torch.ones(dataset.n_users, 1))

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        return Representation(self.ones, self.popularity)
