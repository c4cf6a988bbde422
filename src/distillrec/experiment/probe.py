"""Linear-probe accuracy: how much category information a model's per-modality item features carry.

A multinomial logistic regression is fitted on 80% of the labelled items (seeded split) and scored on the
other 20%; the majority-class rate of the held-out items is the floor. The fit runs in float64 to a tight
tolerance: the penalised problem has one optimum, so the accuracy does not depend on the thread count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from distillrec.errors import DataError

if TYPE_CHECKING:
    import scipy.sparse as sp

    from distillrec.experiment.api import Run


def probe_accuracy(x: Tensor, labels: Tensor, seed: int = 0, steps: int = 500, l2: float = 1e-3) -> float:
    known = (labels >= 0).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    perm = known[torch.randperm(len(known), generator=g)]
    cut = int(0.8 * len(perm))
    tr, te = perm[:cut], perm[cut:]
    x = F.normalize(x.detach().double().cpu(), dim=1)
    y = labels.cpu()
    w, b = _fit(x, y, tr, int(y.max()) + 1, steps, l2)
    with torch.no_grad():
        return float(((x[te] @ w + b).argmax(1) == y[te]).float().mean())


def _fit(x: Tensor, y: Tensor, tr: Tensor, n_cls: int, steps: int, l2: float) -> tuple[Tensor, Tensor]:
    """The penalised multinomial logistic regression on rows `tr` of the (normalised, float64) `x`."""
    w = torch.zeros(x.shape[1], n_cls, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_cls, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x[tr] @ w + b, y[tr]) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_predictions(
    x: Tensor, labels: Tensor, folds: int = 5, seed: int = 0, steps: int = 500, l2: float = 1e-3
) -> Tensor:
    """Cross-fitted probe predictions: each labelled item's category as predicted by a probe fitted on the
    other folds (so no item is judged by a probe that saw it); -1 for unlabelled items. What the features
    alone can say about each item's category."""
    known = (labels >= 0).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    perm = known[torch.randperm(len(known), generator=g)]
    x = F.normalize(x.detach().double().cpu(), dim=1)
    y = labels.cpu()
    n_cls = int(y.max()) + 1
    pred = torch.full_like(y, -1)
    for part in perm.tensor_split(folds):
        rest = perm[~torch.isin(perm, part)]
        w, b = _fit(x, y, rest, n_cls, steps, l2)
        pred[part] = (x[part] @ w + b).argmax(1)
    return pred


def majority_rate(labels: Tensor, seed: int = 0) -> float:
    known = (labels >= 0).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(seed)
    perm = known[torch.randperm(len(known), generator=g)]
    te = perm[int(0.8 * len(perm)) :]
    y = labels[te]
    return float(torch.bincount(y).max()) / len(y)


def run_probe(run: Run) -> dict[str, float]:
    """Probe accuracy of each modality's extractor output of a finished run."""
    labels = run.dataset.labels
    if labels is None:
        raise DataError(f"dataset {run.dataset.name!r} has no category labels to probe")
    with torch.no_grad():
        emb = run.model.modality_embeddings(run.features)
    return {m: probe_accuracy(e, labels) for m, e in emb.items()}


def category_overlap(train: sp.spmatrix, test: sp.spmatrix, labels: Tensor) -> tuple[float, float]:
    """How predictive the category labels are of what users pick next.

    Returns (share of labelled test interactions whose item's category occurs among the user's training
    items, the same share expected for an item drawn uniformly from the labelled items). A large gap means
    the labels carry ranking signal that semantic guidance could pass on.
    """
    import numpy as np
    import scipy.sparse as sp

    lab = labels.cpu().numpy()
    known = lab >= 0
    n_cls = int(lab.max()) + 1 if known.any() else 0
    if n_cls == 0:
        return float("nan"), float("nan")
    items = np.flatnonzero(known)
    item_cat = sp.csr_matrix((np.ones(len(items)), (items, lab[items])), shape=(len(lab), n_cls))
    user_cat = (train.tocsr() @ item_cat) > 0  # users x categories seen in training
    coo = test.tocoo()
    keep = known[coo.col]
    u, i = coo.row[keep], coo.col[keep]
    if len(u) == 0:
        return float("nan"), float("nan")
    observed = float(np.asarray(user_cat[u, lab[i]]).ravel().mean())
    freq = np.bincount(lab[items], minlength=n_cls) / len(items)
    expected = float(np.asarray(user_cat.astype(float) @ freq).ravel()[u].mean())
    return observed, expected
