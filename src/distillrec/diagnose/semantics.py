"""SGFD's premise: the generic item features lack category semantics that the labels carry and that matter
for ranking.

Three measurements, all on one dataset (and, for the second, one model):

* raw-feature probe accuracy: the linear probe of `experiment.probe` (80/20 split, majority-class floor)
  fitted on each modality's raw features, and on their concatenation (each L2-normalised first);
* model-feature probe accuracy: the same probe on the model's own extractor output
  (`modality_embeddings`), the slot SGFD distils into (none for a model without one);
* label signal beyond the features (the verdict's quantity), defined as follows. Every labelled item
  gets, per modality, a cross-fitted probe prediction of its category (`probe_predictions`: 5 folds, each
  item predicted by a probe fitted on the other folds). An item is *unseparated* when no modality's
  prediction is its true category: the features alone cannot say what it is. Over the labelled test
  interactions (u, i), let s = the share whose item is unseparated; among those, `observed` = the share
  whose category occurs among u's training items and `chance` = the same share expected if those items'
  categories were dealt at random among those interactions (see `label_signal`).
  The quantity is s · (observed − chance): per labelled test interaction, how many more times than chance
  the label tells which of u's categories the item belongs to, on items whose category the features
  cannot tell. It is 0 when the features separate every category, or when the labels carry no ranking
  signal; it is at most s · (1 − chance).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.errors import DataError
from distillrec.experiment.probe import category_overlap, majority_rate, probe_accuracy, probe_predictions

QUANTITY = "label signal beyond the features"


def _require_labels(ds: Dataset) -> Tensor:
    if ds.labels is None or not bool((ds.labels >= 0).any()):
        raise DataError(f"dataset {ds.name!r} has no item labels (category_label.npy); SGFD needs them")
    return ds.labels


def raw_probe(ds: Dataset, seed: int = 0) -> dict[str, float]:
    """Probe accuracy of each modality's raw features and of their concatenation ("all")."""
    labels = _require_labels(ds)
    out = {m: probe_accuracy(f, labels, seed=seed) for m, f in ds.features.items()}
    if len(ds.features) > 1:
        joint = torch.cat([F.normalize(f.float(), dim=1) for f in ds.features.values()], dim=1)
        out["all"] = probe_accuracy(joint, labels, seed=seed)
    return out


def unseparated_items(ds: Dataset, folds: int = 5, seed: int = 0) -> np.ndarray:
    """bool [n_items]: labelled items whose category no modality's cross-fitted probe predicts."""
    labels = _require_labels(ds)
    missed = (labels >= 0).numpy().copy()
    for f in ds.features.values():
        pred = probe_predictions(f, labels, folds=folds, seed=seed)
        missed &= (pred != labels).numpy()
    return missed


def label_signal(
    train: sp.csr_matrix, test: sp.csr_matrix, labels: Tensor, unseparated: np.ndarray
) -> dict[str, float]:
    """The quantity of the module docstring and its parts, from the split and the unseparated items.

    `chance` is a permutation null: the share expected if the categories of the unseparated test items were
    dealt at random among those same test interactions (category frequencies of the restricted items, not of
    the whole catalogue: features fail most on rare categories, which users meet less often anyway)."""
    lab = labels.cpu().numpy()
    known = lab >= 0
    n_cls = int(lab.max()) + 1
    items = np.flatnonzero(known)
    item_cat = sp.csr_matrix((np.ones(len(items)), (items, lab[items])), shape=(len(lab), n_cls))
    met = ((train.tocsr() @ item_cat) > 0).astype(float).tocsr()  # users x categories met in training
    coo = test.tocoo()
    labelled = known[coo.col]
    keep = labelled & unseparated[coo.col]
    u, c = coo.row[keep], lab[coo.col[keep]]
    share = float(keep.sum() / labelled.sum()) if labelled.any() else float("nan")
    if len(u) == 0:
        return {"value": 0.0, "share_unseparated": share, "observed": float("nan"), "chance": float("nan")}
    observed = float(np.asarray(met[u, c]).ravel().mean())
    q = np.bincount(c, minlength=n_cls) / len(c)
    chance = float(np.asarray(met[u] @ q).ravel().mean())
    return {
        "value": share * (observed - chance),
        "share_unseparated": share,
        "observed": observed,
        "chance": chance,
    }


def semantic_gap(
    ds: Dataset, model_features: dict[str, Tensor] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Every SGFD measurement for a dataset (and a model's extracted features, where given)."""
    labels = _require_labels(ds)
    observed, chance = category_overlap(ds.train, ds.test, labels)
    signal = label_signal(ds.train, ds.test, labels, unseparated_items(ds, seed=seed))
    return {
        "value": signal["value"],
        "probe_raw": raw_probe(ds, seed=seed),
        "probe_model": {m: probe_accuracy(e, labels, seed=seed) for m, e in (model_features or {}).items()},
        "majority_rate": majority_rate(labels, seed=seed),
        "category_overlap": {"observed": observed, "chance": chance},
        "unseparated": signal,
    }
