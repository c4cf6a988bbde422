"""The item-item graph helpers shared by MGCN, LATTICE and FREEDOM (models/knn.py and feature_cache.py)."""

from __future__ import annotations

import numpy as np
import torch

from distillrec.models.base import mean_ablate
from distillrec.models.feature_cache import FeatureCache
from distillrec.models.knn import ItemKnnGraph, is_constant, knn_adjacency
from distillrec.models.losses import dot_bpr_loss


def _features() -> torch.Tensor:
    # cos(0,1) = 0.8, cos(2,3) = 0.6; the two pairs are orthogonal
    return torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 0.8, 0.6]])


def test_knn_adjacency_counts_the_item_itself_and_normalises_by_row_sums():
    a = knn_adjacency(_features(), k=2, weighted=True).toarray()
    # each row: itself (similarity 1) and its best other item; row sums 1.8, 1.8, 1.6, 1.6
    raw = np.array([[1, 0.8, 0, 0], [0.8, 1, 0, 0], [0, 0, 1, 0.6], [0, 0, 0.6, 1]])
    d = raw.sum(1) ** -0.5
    np.testing.assert_allclose(a, d[:, None] * raw * d[None, :], rtol=1e-5)
    binary = knn_adjacency(_features(), k=2, weighted=False).toarray()
    np.testing.assert_allclose(binary, (raw > 0) * 0.5, rtol=1e-6)  # degree 2 everywhere: 1/sqrt(2*2)


def test_knn_adjacency_is_directed_top_k():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.9, 0.43], [0.0, 1.0]])
    a = knn_adjacency(x, k=2, weighted=False).toarray()
    assert ((a > 0).sum(1) == 2).all()  # exactly k per row, the item itself included
    assert a[3, 2] > 0 and a[2, 3] == 0  # 3's nearest is 2, but 2 has closer neighbours than 3


def test_constant_modality_gets_the_uniform_graph():
    feats = {"image": torch.randn(6, 4), "text": torch.randn(6, 3)}
    ablated = mean_ablate(feats, {"image"})
    assert is_constant(ablated["image"]) and not is_constant(ablated["text"])
    x = torch.randn(6, 5)
    out = ItemKnnGraph(ablated["image"], k=3, weighted=True)(x)
    torch.testing.assert_close(out, x.mean(0, keepdim=True).expand_as(x))
    assert ItemKnnGraph(feats["image"], k=3, weighted=True).graph is not None


def test_feature_cache_follows_the_tensor_it_was_built_from():
    cache, calls = FeatureCache(), []

    def build(t):
        calls.append(1)
        return t.sum().item()

    f = torch.ones(3, 2)
    assert cache.get("m", f, build) == 6 and cache.get("m", f, build) == 6 and len(calls) == 1
    f.mul_(2)  # in place: a new version
    assert cache.get("m", f, build) == 12 and len(calls) == 2
    g = f.clone()  # equal values, another tensor
    cache.get("m", g, build)
    assert len(calls) == 3


def test_feature_cache_keeps_the_training_graph_while_views_alternate():
    """CKD alternates the training features with a fresh mean-ablated tensor every batch."""
    cache, calls = FeatureCache(), []
    f = torch.randn(5, 3)
    for _ in range(6):
        cache.get("m", f, lambda t: calls.append("train"))
        view = f.mean(0, keepdim=True).expand_as(f)
        cache.get("m", view, lambda t: calls.append("view"))
    assert calls.count("train") == 1 and calls.count("view") == 6
    assert len(cache._slots["m"]) <= FeatureCache.max_entries


def test_dot_bpr_loss_takes_one_or_several_negatives():
    u, p = torch.randn(4, 3), torch.randn(4, 3)
    n1 = torch.randn(4, 3)
    expected = torch.nn.functional.softplus((u * n1).sum(-1) - (u * p).sum(-1)).mean()
    torch.testing.assert_close(dot_bpr_loss(u, p, n1), expected)
    n3 = torch.randn(4, 5, 3)
    expected = torch.nn.functional.softplus(
        torch.einsum("bd,bnd->bn", u, n3) - (u * p).sum(-1, keepdim=True)
    ).mean()
    torch.testing.assert_close(dot_bpr_loss(u, p, n3), expected)


def test_feature_cache_rebuilds_after_max_uses():
    cache, calls = FeatureCache(), []
    f = torch.ones(2, 2)
    for _ in range(5):
        cache.get("m", f, lambda t: calls.append(1), max_uses=2)
    assert len(calls) == 3  # built, reused once, rebuilt, reused, rebuilt
