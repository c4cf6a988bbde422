"""The item-item graph helpers shared by MGCN, LATTICE and FREEDOM (models/knn.py and feature_cache.py)."""

from __future__ import annotations

import numpy as np
import pytest
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


# --------------------------------------------------------------------------- the on-disk kNN graph cache
@pytest.fixture
def knn_cache(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    import distillrec.models.knn as knn

    monkeypatch.setenv("DISTILLREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(knn, "CACHE_MIN_WORK", 0)  # cache even a small graph
    return knn, tmp_path / "cache" / "knn"


def _same(a, b) -> bool:  # noqa: ANN001
    return a.shape == b.shape and (a != b).nnz == 0 and np.array_equal(a.indptr, b.indptr)


def test_a_cached_knn_graph_is_read_back_exactly_instead_of_built(knn_cache, monkeypatch):
    knn, folder = knn_cache
    x = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
    built = knn.knn_adjacency(x, 5, weighted=True)
    assert len(list(folder.glob("*.npz"))) == 1

    def no_build(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("built again")

    monkeypatch.setattr(knn, "_knn_adjacency", no_build)
    assert _same(knn.knn_adjacency(x.clone(), 5, weighted=True), built)
    with pytest.raises(AssertionError, match="built again"):  # another k, another weighting: other entries
        knn.knn_adjacency(x, 4, weighted=True)
    with pytest.raises(AssertionError, match="built again"):
        knn.knn_adjacency(x, 5, weighted=False)


def test_a_damaged_cache_entry_is_built_again_and_replaced(knn_cache, caplog):
    knn, folder = knn_cache
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    built = knn.knn_adjacency(x, 4, weighted=False)
    (entry,) = folder.glob("*.npz")
    entry.write_bytes(b"not an npz")
    with caplog.at_level("WARNING", logger="distillrec.knn"):
        again = knn.knn_adjacency(x, 4, weighted=False)
    assert _same(again, built) and "unreadable" in caplog.text
    assert _same(knn._read_cached(entry, 40), built)  # replaced by a good entry
    assert not list(folder.glob(".*.tmp"))


def test_no_cache_when_off_or_when_the_build_is_cheap(tmp_path, monkeypatch):
    import distillrec.models.knn as knn

    x = torch.randn(30, 8)
    monkeypatch.setenv("DISTILLREC_CACHE", "off")
    monkeypatch.setattr(knn, "CACHE_MIN_WORK", 0)
    assert knn._cache_file(x, 3, True, 2048) is None
    monkeypatch.setenv("DISTILLREC_CACHE", str(tmp_path))
    monkeypatch.setattr(knn, "CACHE_MIN_WORK", 30 * 30 * 8 + 1)  # just above this build's work
    knn.knn_adjacency(x, 3, weighted=True)
    assert not list(tmp_path.rglob("*.npz"))
