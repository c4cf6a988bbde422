"""MMGCN specifics: one layer checked against a dense computation; preferences and IDs are trained."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillrec.models.base import Batch
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def _mean_adj(ds) -> torch.Tensor:  # noqa: ANN001
    r = torch.from_numpy(ds.train.toarray()).float()
    a = torch.cat(
        [
            torch.cat([torch.zeros(ds.n_users, ds.n_users), r], 1),
            torch.cat([r.T, torch.zeros(ds.n_items, ds.n_items)], 1),
        ]
    )
    deg = a.sum(1, keepdim=True)
    return torch.where(deg > 0, a / deg.clamp(min=1), a)


def test_one_layer_matches_the_equations():
    ds = make_dataset(n_users=7, n_items=9, per_user=4, modalities={"v": 6})
    torch.manual_seed(0)
    for combine in ("concat", "add"):
        model = build_model(
            "mmgcn", ds, {"n_layers": 1, "combine": combine, "latent_size": 5, "embedding_size": 3}
        )
        gcn = model.gcn["v"]
        x = F.normalize(torch.cat([model.user_pref["v"], model.proj["v"](ds.features["v"])]), dim=1)
        h = F.leaky_relu(_mean_adj(ds) @ x @ gcn.conv[0])
        x_hat = F.leaky_relu(gcn.self_lin[0](x)) + model.id_emb
        g = gcn.comb[0]
        out = F.leaky_relu(g(torch.cat([h, x_hat], 1)) if combine == "concat" else g(h) + x_hat)
        rep = model.represent(ds.features)
        assert torch.allclose(torch.cat([rep.user, rep.item]), out, atol=1e-5), combine
        assert torch.equal(rep.parts["v"][1], rep.item)  # one modality: the mean is that modality


def test_final_vector_is_the_mean_of_the_modality_parts():
    ds = make_dataset()
    rep = build_model("mmgcn", ds).represent(ds.features)
    assert torch.allclose(rep.item, (rep.parts["image"][1] + rep.parts["text"][1]) / 2)
    assert torch.allclose(rep.user, (rep.parts["image"][0] + rep.parts["text"][0]) / 2)


def test_preferences_and_ids_are_trained_parameters():
    ds = make_dataset()
    model = build_model("mmgcn", ds)
    names = {n for n, _ in model.named_parameters()}
    assert {"user_pref.image", "user_pref.text", "id_emb"} <= names
    batch = Batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5, 6], [7, 8, 9]]))
    out = model.loss(model.represent(ds.features), batch)
    sum(out.values()).backward()
    assert model.user_pref["text"].grad.abs().sum() > 0
    assert model.id_emb.grad.abs().sum() > 0


def test_ablation_replaces_the_preferences_by_their_mean():
    ds = make_dataset()
    model = build_model("mmgcn", ds)
    with torch.no_grad():
        a = model.represent(ds.features, ablated=frozenset({"image"}))
        model.user_pref["image"].copy_(
            model.user_pref["image"].mean(0, keepdim=True).expand_as(model.user_pref["image"])
        )
        b = model.represent(ds.features)
    assert torch.allclose(a.user, b.user, atol=1e-6)
