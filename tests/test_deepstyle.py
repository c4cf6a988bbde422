"""DeepStyle: the item vector is content − category latent + ID latent, with the right latent rows."""

from __future__ import annotations

import torch

from distillrec.models.base import Batch
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def test_item_vector_is_content_minus_category_plus_id():
    ds = make_dataset(modalities={"a": 5, "b": 3})
    model = build_model("deepstyle", ds)
    rep = model.represent(ds.features)
    labels = ds.labels
    unknown = model.category_emb.shape[0] - 1  # the shared "unknown category" row
    for i in range(ds.n_items):
        row = int(labels[i]) if labels[i] >= 0 else unknown
        content = (
            ds.features["a"][i] @ model.proj["a"].weight.T + ds.features["b"][i] @ model.proj["b"].weight.T
        )
        expected = content - model.category_emb[row] + model.item_emb[i]
        assert torch.allclose(rep.item[i], expected, atol=1e-6)
    assert model.category_emb.shape[0] == ds.n_labels + 1
    u, i = 3, 7
    assert torch.allclose(
        model.score(rep, torch.tensor([u]), torch.tensor([i]))[0, 0], model.user_emb[u] @ rep.item[i]
    )


def test_unknown_items_share_one_latent_and_no_labels_gives_per_item_latents():
    ds = make_dataset()
    model = build_model("deepstyle", ds)
    unknown = (ds.labels < 0).nonzero().ravel()
    assert len(unknown) > 1
    assert model.category[unknown].unique().tolist() == [ds.n_labels]
    plain = make_dataset(n_labels=0)
    assert plain.labels is None
    m2 = build_model("deepstyle", plain)
    assert m2.category_emb.shape[0] == plain.n_items and torch.equal(m2.category, torch.arange(plain.n_items))
    m3 = build_model("deepstyle", ds, {"use_labels": False})
    assert m3.category_emb.shape[0] == ds.n_items


def test_parts_sum_to_the_content_score_and_several_negatives_work():
    ds = make_dataset()
    model = build_model("deepstyle", ds)
    rep = model.represent(ds.features)
    content = sum(item for _, item in rep.parts.values())
    assert torch.allclose(content + model.item_emb - model.category_emb[model.category], rep.item, atol=1e-6)
    users = torch.tensor([0, 1, 2])
    pos = torch.tensor([3, 4, 5])
    one = model.loss(rep, Batch(users, pos, torch.tensor([6, 7, 8])))
    many = model.loss(rep, Batch(users, pos, torch.tensor([[6, 9], [7, 9], [8, 9]])))
    assert torch.isfinite(one) and torch.isfinite(many)
