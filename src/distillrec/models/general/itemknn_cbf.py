"""ItemKNN-CBF: content-based item kNN. score(u, i) = Σ_{j in train(u)} sim(i, j) over i's top-k neighbours.

Similarity is the mean over the chosen modalities of the cosine between item features; the neighbour
graph is sparse (top-k per row, built in chunks), so it scales to many items.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.errors import ConfigError
from distillrec.models.base import Features, Recommender, Representation
from distillrec.models.knn import knn_graph
from distillrec.models.registry import ModelParams, register


@register
class ItemKNNCBF(Recommender):
    name = "itemknn_cbf"
    trainable = False
    uses_features = True

    class Params(ModelParams):
        k: int = 50
        modalities: list[str] | None = None  # None = every modality of the dataset

    _device_marker: Tensor

    def __init__(self, dataset: Dataset, params: Params) -> None:
        super().__init__()
        names = params.modalities or list(dataset.features)
        missing = [m for m in names if m not in dataset.features]
        if not names or missing:
            raise ConfigError(
                f"itemknn_cbf needs item features; asked for {missing or 'any'}, dataset has {dataset.modalities}"
            )
        self.modalities = names
        self.k = params.k
        self.train_matrix = dataset.train
        self.register_buffer("_device_marker", torch.zeros(0))

    def represent(self, features: Features, ablated: frozenset[str] = frozenset()) -> Representation:
        """The neighbour graph is built from the features given, so ablating a modality changes it."""
        x = torch.cat([F.normalize(features[m].float(), dim=1) for m in self.modalities], dim=1)
        sim = knn_graph(x.cpu() / len(self.modalities) ** 0.5, self.k, normalise="none")  # = mean cosine
        # scores = R @ S^T with S[i, j] = similarity of item i to its neighbour j
        return Representation(self._device_marker, self._device_marker, extras={"sim_t": sim.T.tocsr()})

    def score(
        self, rep: Representation, users: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        profile: sp.csr_matrix = self.train_matrix[users.cpu().numpy()]
        scores = np.asarray((profile @ rep.extras["sim_t"]).todense(), dtype=np.float32)
        out = torch.from_numpy(scores).to(rep.user.device)
        return out if items is None else out[:, items]

    def pair_score(self, rep: Representation, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score(rep, users)[torch.arange(len(users)), items.cpu()]
