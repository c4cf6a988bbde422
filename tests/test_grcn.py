"""GRCN and EgoGCN specifics, checked by hand on tiny graphs: attention, routing, refined edges, fusion."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, mean_ablate
from distillrec.models.edge_graph import edge_softmax
from distillrec.models.refined_graph import ConfidenceEdges, UserItemEdges, graph_attention, refine
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def _dense_adj(ds: Dataset) -> torch.Tensor:
    r = torch.from_numpy(ds.train.toarray()).float()
    z_u = torch.zeros(ds.n_users, ds.n_users)
    z_i = torch.zeros(ds.n_items, ds.n_items)
    return torch.cat([torch.cat([z_u, r], 1), torch.cat([r.T, z_i], 1)])


def test_edge_softmax_and_aggregate_match_dense_attention():
    ds = make_dataset(n_users=6, n_items=5, per_user=4)
    graph = UserItemEdges(ds).full
    n = graph.n_nodes
    x = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    out, alpha = graph_attention(x, graph)
    adj = _dense_adj(ds) > 0
    logits = (x @ x.T).masked_fill(~adj, -torch.inf)
    att = torch.softmax(logits, dim=1).nan_to_num(0.0)  # row v: weights over v's neighbours
    assert torch.allclose(out, att @ x)
    assert torch.allclose(alpha, att[graph.dst, graph.src])
    # the hand-written backward passes of the CSR edge products
    w = torch.rand(graph.src.numel(), dtype=torch.float64, requires_grad=True)
    y = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    dense_w = torch.zeros(n, n, dtype=torch.float64)
    dense_w[graph.dst, graph.src] = w.detach()
    assert torch.allclose(graph.aggregate(x, w), dense_w @ x)
    assert torch.autograd.gradcheck(lambda w, x: graph.aggregate(x, w), (w, x))
    assert torch.autograd.gradcheck(lambda a, b: graph.dot(a, b), (x, y))
    s = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(
        edge_softmax(s, torch.tensor([0, 0, 1]), 2),
        torch.tensor([1 / (1 + math.e), math.e / (1 + math.e), 1.0]),
    )


def test_routing_moves_users_towards_their_items_and_keeps_items():
    # one user with items 0 and 1; p = e1, f0 = e1, f1 = e2
    train = sp.csr_matrix(np.array([[1.0, 1.0]], dtype=np.float32))
    ds = Dataset("two", 1, 2, train, train, train, features={"m": torch.eye(2)})
    to_users = UserItemEdges(ds).to_users
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = refine(x, to_users, 1)
    a = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected_user = F.normalize(torch.tensor([1.0 + a[0], a[1]]), dim=0)
    assert torch.allclose(out[0], expected_user, atol=1e-6)
    assert torch.allclose(out[1:], x[1:])
    assert torch.equal(refine(x, to_users, 0), x)  # the official codes' (no-op) routing


def test_confidence_edge_weights_are_max_over_modalities_of_alpha_times_sender_confidence():
    conf = ConfidenceEdges(n_nodes=3, n_modalities=2, mode="confid", pruning=True)
    with torch.no_grad():
        conf.confidence.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, -1.0]]))
    alpha = torch.tensor([[0.2, 0.4], [0.6, 0.1], [0.3, 0.3]])
    src = torch.tensor([0, 1, 2])
    w = conf(alpha, src)
    assert torch.allclose(w, torch.tensor([0.2, 0.3, 0.0]))  # max(0.2, -0.8); max(0.3, 0.3); relu(-0.3)


def test_grcn_representation_is_id_then_modalities_and_parts_slice_it():
    ds = make_dataset()
    torch.manual_seed(0)
    model = build_model("grcn", ds)
    rep = model.represent(ds.features)
    d, c = model.id_emb.shape[1], model.pref.table["image"].shape[1]
    assert rep.user.shape == (ds.n_users, d + 2 * c)
    assert torch.equal(rep.item[:, d : d + c], rep.parts["image"][1])
    assert torch.equal(rep.user[:, d + c :], rep.parts["text"][0])
    assert torch.equal(rep.user[:, :d], rep.extras["id"][0])


def test_ablated_modality_gives_every_user_the_same_modality_vector():
    ds = make_dataset()
    torch.manual_seed(0)
    model = build_model("grcn", ds)
    with torch.no_grad():
        rep = model.represent(mean_ablate(ds.features, {"image"}), ablated=frozenset({"image"}))
    users = rep.parts["image"][0]
    assert torch.allclose(users, users[:1].expand_as(users), atol=1e-5)
    assert not torch.allclose(rep.parts["text"][0], rep.parts["text"][0][:1].expand_as(users), atol=1e-3)


def test_preferences_confidence_and_ids_are_trained():
    ds = make_dataset()
    model = build_model("grcn", ds)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([[6, 7], [8, 9], [10, 11]]))
    out = model.loss(model.represent(ds.features), batch)
    sum(out.values()).backward()
    for p in (model.id_emb, model.pref.table["image"], model.edge_weight.confidence):
        assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all()


def test_egogcn_hard_modulation_matches_dense_computation():
    ds = make_dataset(n_users=8, n_items=6, per_user=4)
    adj = _dense_adj(ds) > 0
    torch.manual_seed(0)
    for threshold in (2.0, -1.0, 0.3):
        model = build_model("egogcn", ds, {"threshold": threshold, "n_routing": 0, "reattn": True})
        items = model.modality_embeddings(ds.features)
        xs = {m: F.normalize(torch.cat([model.pref.table[m], items[m]]), dim=1) for m in model.modalities}
        mean_view = (xs["image"] + xs["text"]) / 2
        x = xs["image"]
        att = torch.softmax((x @ x.T).masked_fill(~adj, -torch.inf), dim=1).nan_to_num(0.0)
        fused = (att > threshold) & adj  # [v, j]: j's message to v is the mean view
        msg = torch.where(fused.unsqueeze(-1), mean_view.unsqueeze(0), x.unsqueeze(0))  # [v, j, c]
        re = torch.softmax((msg * x.unsqueeze(1)).sum(-1).masked_fill(~adj, -torch.inf), 1).nan_to_num(0.0)
        expected = F.normalize((re.unsqueeze(-1) * msg).sum(1), dim=1)
        got = model.represent(ds.features).parts["image"]
        assert torch.allclose(torch.cat(got), expected, atol=1e-5), threshold


def test_egogcn_soft_modulation_matches_dense_computation():
    ds = make_dataset(n_users=8, n_items=6, per_user=4)
    adj = _dense_adj(ds) > 0
    torch.manual_seed(0)
    model = build_model("egogcn", ds, {"fusion": "soft", "n_routing": 0, "reattn": True})
    items = model.modality_embeddings(ds.features)
    xs = {m: F.normalize(torch.cat([model.pref.table[m], items[m]]), dim=1) for m in model.modalities}
    x, other = xs["image"], xs["text"]
    view = (x + torch.sigmoid(model.gates["image"]["text"](other)) * other) / 2
    re = torch.softmax((x @ view.T).masked_fill(~adj, -torch.inf), 1).nan_to_num(0.0)
    expected = F.normalize(re @ view, dim=1)
    with torch.no_grad():
        got = torch.cat(model.represent(ds.features).parts["image"])
    assert torch.allclose(got, expected, atol=1e-5)


def test_egogcn_id_branch_sums_the_propagated_layers():
    ds = make_dataset(n_users=8, n_items=6, per_user=4)
    model = build_model("egogcn", ds, {"n_id_layers": 3})
    a = _dense_adj(ds)
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    a_hat = inv[:, None] * a * inv[None, :]
    e = F.normalize(model.id_emb.detach(), dim=1)
    expected = e + a_hat @ e + a_hat @ a_hat @ e + a_hat @ a_hat @ a_hat @ e
    with torch.no_grad():
        rep = model.represent(ds.features)
    assert torch.allclose(torch.cat(rep.extras["id"]), expected, atol=1e-5)


def test_egogcn_variants_run_and_train():
    ds = make_dataset(modalities={"a": 5, "b": 7, "c": 3})
    batch = Batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    for opts in ({"fusion": "soft"}, {"id_graph": "confidence"}, {"reattn": False, "n_routing": 1}):
        model = build_model("egogcn", ds, opts)
        out = model.loss(model.represent(ds.features), batch)
        sum(out.values()).backward()
        assert model.pref.table["b"].grad.abs().sum() > 0, opts
        if opts.get("fusion") == "soft":
            grad = model.gates["a"]["b"].weight.grad
            assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()
