"""Ranking metrics against hand computations, and the fast evaluator against an obvious slow one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset, interactions_to_csr
from distillrec.eval.metrics import metrics_from_hits
from distillrec.eval.ranking import Evaluator, dot_score_fn


def test_metrics_hand_computed():
    # user 0: relevant at ranks 1 and 3, 2 relevant items in total; user 1: one relevant, ranked 2nd
    hits = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    n_rel = torch.tensor([2, 1])
    m = metrics_from_hits(hits, n_rel, [1, 3])
    assert m["recall@1"].tolist() == [0.5, 0.0]
    assert m["recall@3"].tolist() == [1.0, 1.0]
    assert m["precision@3"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert m["hit@1"].tolist() == [1.0, 0.0]
    assert m["mrr@3"].tolist() == pytest.approx([1.0, 0.5])
    assert m["mrr@1"].tolist() == pytest.approx([1.0, 0.0])
    dcg0 = 1 + 1 / math.log2(4)
    idcg0 = 1 + 1 / math.log2(3)
    assert m["ndcg@3"][0].item() == pytest.approx(dcg0 / idcg0)
    assert m["ndcg@3"][1].item() == pytest.approx((1 / math.log2(3)) / 1.0)
    # ideal DCG over min(n_rel, K): at K=1 user 0's ideal has one item
    assert m["ndcg@1"][0].item() == pytest.approx(1.0)
    # MAP@3 user 0: (1/1 + 2/3) / min(2, 3)
    assert m["map@3"][0].item() == pytest.approx((1 + 2 / 3) / 2)
    assert m["map@3"][1].item() == pytest.approx(0.5)


def test_ndcg_never_exceeds_one_and_recall_bounded():
    g = torch.Generator().manual_seed(0)
    hits = torch.rand(200, 20, generator=g) < 0.3
    n_rel = hits.sum(1) + torch.randint(0, 5, (200,), generator=g)
    n_rel = n_rel.clamp(min=1)
    m = metrics_from_hits(hits, n_rel, [5, 10, 20])
    for k in (5, 10, 20):
        assert (m[f"ndcg@{k}"] <= 1 + 1e-6).all()
        assert (m[f"recall@{k}"] <= 1 + 1e-6).all()


def _random_dataset(seed: int, n_users=57, n_items=83) -> Dataset:
    rng = np.random.default_rng(seed)
    mats = []
    taken = np.zeros((n_users, n_items), dtype=bool)
    for density in (0.1, 0.03, 0.03):
        m = (rng.random((n_users, n_items)) < density) & ~taken
        taken |= m
        u, i = np.nonzero(m)
        mats.append(interactions_to_csr(u, i, n_users, n_items))
    return Dataset("rand", n_users, n_items, *mats)


def _slow_reference(
    scores: np.ndarray, ds: Dataset, split: str, masked: list[str], k: int
) -> dict[str, float]:
    """One user at a time, straight from the definitions."""
    target = getattr(ds, split)
    out = {"recall": [], "ndcg": [], "precision": [], "hit": [], "mrr": [], "map": []}
    for u in range(ds.n_users):
        rel = set(target[u].indices.tolist())
        if not rel:
            continue
        s = scores[u].copy()
        for name in masked:
            s[getattr(ds, name)[u].indices] = -np.inf
        ranked = sorted(range(ds.n_items), key=lambda i: (-s[i], i))[:k]
        hits = [1 if i in rel else 0 for i in ranked]
        out["recall"].append(sum(hits) / len(rel))
        out["precision"].append(sum(hits) / k)
        out["hit"].append(float(any(hits)))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        out["ndcg"].append(dcg / idcg)
        first = next((r for r, h in enumerate(hits) if h), None)
        out["mrr"].append(0.0 if first is None else 1 / (first + 1))
        ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
        out["map"].append(ap / min(len(rel), k))
    return {f"{name}@{k}": float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("preset,split", [("mmrec", "test"), ("strict", "test"), ("mmrec", "valid")])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_evaluator_equals_slow_reference(preset, split, seed):
    ds = _random_dataset(seed)
    g = torch.Generator().manual_seed(seed)
    user, item = torch.randn(ds.n_users, 8, generator=g), torch.randn(ds.n_items, 8, generator=g)
    scores = (user @ item.T).numpy()
    masked = ["train"] if (preset == "mmrec" or split == "valid") else ["train", "valid"]
    ev = Evaluator(ds, preset, ks=(5, 10), batch_size=16)  # several user chunks
    fast = ev.evaluate(dot_score_fn(user, item), split)
    for k in (5, 10):
        slow = _slow_reference(scores, ds, split, masked, k)
        for name, value in slow.items():
            assert fast[name] == pytest.approx(value, abs=1e-6), name


def test_masked_items_never_ranked_and_valid_stays_candidate_in_mmrec():
    ds = _random_dataset(3)
    g = torch.Generator().manual_seed(3)
    user, item = torch.randn(ds.n_users, 4, generator=g), torch.randn(ds.n_items, 4, generator=g)
    for preset, masked in (("mmrec", ds.train), ("strict", ds.train + ds.valid)):
        ev = Evaluator(ds, preset, ks=(20,))
        users, top = ev.topk(dot_score_fn(user, item), "test", 20)
        masked = sp.csr_matrix(masked)
        for row, u in zip(top.tolist(), users.tolist(), strict=True):
            assert not set(row) & set(masked[u].indices.tolist())
    # under mmrec a validation item can appear in the test ranking
    ev = Evaluator(ds, "mmrec", ks=(20,))
    users, top = ev.topk(dot_score_fn(user, item), "test", 20)
    valid_hits = sum(
        len(set(r) & set(ds.valid[u].indices.tolist()))
        for r, u in zip(top.tolist(), users.tolist(), strict=True)
    )
    assert valid_hits > 0


def test_unknown_preset_is_a_clear_error():
    from distillrec.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown evaluation preset"):
        Evaluator(_random_dataset(0), "recbole")
