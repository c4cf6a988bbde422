"""MAML: the split attention layer equals the reference's, the WARP weight, unit-ball embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distillrec.models.base import Batch, mean_ablate
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def _reference_distance(model, u, i, f):  # noqa: ANN001, ANN202 - the reference's formula, unsplit
    x = F.normalize(torch.cat([u, i, f], -1), dim=-1)
    h = F.normalize(torch.tanh(model.att1(x)), dim=-1)
    a = model.d * torch.softmax(F.relu(model.att2(h)), -1)
    return ((a * u - a * i) ** 2).sum(-1)


def test_distance_matches_the_reference_formula():
    torch.manual_seed(0)
    ds = make_dataset(modalities={"x": 9, "y": 4})
    model = build_model("maml", ds, {"embedding_size": 8, "hidden_size": 16}).eval()
    rep = model.represent(ds.features)
    users, items = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 0, 9, 9])
    f = rep.extras["feature"]
    ref = _reference_distance(model, rep.user[users], rep.item[items], f[items])
    assert torch.allclose(-model.pair_score(rep, users, items), ref, atol=1e-5)
    full = model.score(rep, users)
    assert full.shape == (4, ds.n_items)
    assert torch.allclose(full[torch.arange(4), items], -ref, atol=1e-5)


def test_warp_loss_by_hand():
    ds = make_dataset()
    model = build_model(
        "maml",
        ds,
        {"embedding_size": 8, "hidden_size": 16, "attention_dropout": 0.0, "train_attention": True},
    )
    rep = model.represent(ds.features)
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5, 6], [7, 8, 9]])
    out = model.loss(rep, Batch(users, pos, neg))
    f = rep.extras["feature"]
    with torch.no_grad():
        dp = model.distance(rep.user[users], rep.item[pos], f[pos])
        dn = model.distance(rep.user[users].unsqueeze(1), rep.item[neg], f[neg])
        total = 0.0
        for b in range(2):
            hinge = max(0.0, float(dp[b] - dn[b].min() + 1.0))
            rank = float((dp[b] - dn[b] + 1.0 > 0).float().mean()) * ds.n_items
            total += hinge * math.log(rank + 1)
    assert math.isclose(float(out["metric"].detach()), total, rel_tol=1e-4, abs_tol=1e-6)
    assert set(out) == {"metric", "feature", "cov", "attention_l2"}
    assert torch.isfinite(model.loss(rep, Batch(users, pos, neg[:, 0]))["metric"])


def test_embeddings_stay_in_the_unit_ball_and_two_passes_share_one_backward():
    torch.manual_seed(0)
    ds = make_dataset()
    model = build_model("maml", ds, {"embedding_size": 8, "hidden_size": 16, "train_attention": True})
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([[6, 7], [8, 9], [10, 11]]))
    for _ in range(3):
        rep = model.represent(ds.features)
        assert model.user_emb.norm(dim=1).max() <= 1 + 1e-5 and model.item_emb.norm(dim=1).max() <= 1 + 1e-5
        view = model.represent(mean_ablate(ds.features, {"image"}), ablated=frozenset({"image"}))
        loss = sum(model.loss(rep, batch).values()) + sum(model.loss(view, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # every part of the model is trained (the reference optimises only the embeddings)
    flows = [model.mlp[0].weight, model.att1.weight, *(model.modal[m].weight for m in ds.features)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 and torch.isfinite(w.grad).all() for w in flows)


def test_items_start_at_the_feature_projection_and_legacy_freezes_the_mlps():
    ds = make_dataset()
    model = build_model("maml", ds, {"embedding_size": 8, "hidden_size": 16}).eval()
    with torch.no_grad():
        assert torch.allclose(model.item_emb, model.feature_projection(ds.features), atol=1e-6)
    legacy = build_model("maml", ds, {"embedding_size": 8, "legacy_embeddings_only": True})
    trained = {n for n, p in legacy.named_parameters() if p.requires_grad}
    assert trained == {"user_emb", "item_emb"}


def test_modality_embeddings_are_the_per_modality_first_layers():
    ds = make_dataset(modalities={"a": 5, "b": 3, "c": 2})
    model = build_model("maml", ds, {"embedding_size": 8, "hidden_size": 16})
    emb = model.modality_embeddings(ds.features)
    assert set(emb) == {"a", "b", "c"} and all(e.shape == (ds.n_items, 8) for e in emb.values())
    assert model.mlp[0].in_features == 3 * 8


def test_fixed_attention_keeps_the_feature_extractor_trainable():
    ds = make_dataset()
    model = build_model("maml", ds, {"embedding_size": 8, "hidden_size": 16, "train_attention": False})
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"att1.weight", "att1.bias", "att2.weight", "att2.bias"}
    rep = model.represent(ds.features)
    out = model.loss(rep, Batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5], [6, 7]])))
    assert "attention_l2" not in out
    sum(out.values()).backward()
    assert model.mlp[0].weight.grad.abs().sum() > 0 and model.att1.weight.grad is None
