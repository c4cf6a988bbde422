"""Model-specific checks of MGCN, BM3, LATTICE and FREEDOM on tiny synthetic data."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillrec.models.base import Batch, mean_ablate
from distillrec.models.general.lattice import topk_neighbours
from distillrec.models.general.mgcn import info_nce
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def _batch(ds, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randint(0, ds.n_users, (n,), generator=g),
        torch.randint(0, ds.n_items, (n,), generator=g),
        torch.randint(0, ds.n_items, (n,), generator=g),
    )


# ------------------------------------------------------------------------------------------------ LATTICE
def _dense_learned(proj: dict, weights: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec's dense learned graph: Σ_m a_m topk-scatter(cos(p_m)), then D^-1/2 (.) D^-1/2 by row sums."""
    total = 0
    for j, p in enumerate(proj.values()):
        pn = F.normalize(p, dim=1)
        sim = pn @ pn.T
        val, idx = torch.topk(sim, k, dim=-1)
        total = total + weights[j] * torch.zeros_like(sim).scatter_(-1, idx, val.clamp_min(0))
    d = total.sum(-1).pow(-0.5)
    return d[:, None] * total * d[None, :]


def test_lattice_sparse_learned_graph_equals_the_dense_formula_and_its_gradient():
    torch.manual_seed(0)
    ds = make_dataset(n_items=40, modalities={"image": 13, "text": 7})
    model = build_model("lattice", ds, {"knn_chunk": 7})  # several chunks
    with torch.no_grad():
        model.modal_weight.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(ds.n_items, 5)

    def run(sparse: bool):
        model.zero_grad()
        w = torch.softmax(model.modal_weight, 0)
        if sparse:
            out = model.learned_graph(ds.features, w)(x)
        else:
            out = _dense_learned(model.modality_embeddings(ds.features), w, model.params.knn_k) @ x
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), model.proj["image"].weight.grad.clone(), model.modal_weight.grad.clone()

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lattice_topk_neighbours_in_chunks_match_dense_topk():
    x = torch.randn(50, 6)
    xn = F.normalize(x, dim=1)
    dense = torch.topk(xn @ xn.T, 4, dim=1).indices
    assert torch.equal(topk_neighbours(x, 4, chunk=8), dense)


def test_lattice_ablated_modality_learned_part_is_uniform_and_finite():
    ds = make_dataset(modalities={"image": 13, "text": 7})
    model = build_model("lattice", ds)
    model.eval()
    with torch.no_grad():
        feats = mean_ablate(ds.features, {"image"})
        out = model.learned_graph(feats, torch.tensor([0.5, 0.5]))(torch.randn(ds.n_items, 3))
        assert torch.isfinite(out).all()
        only = mean_ablate(ds.features, {"image", "text"})
        x = torch.randn(ds.n_items, 3)
        out = model.learned_graph(only, torch.tensor([0.5, 0.5]))(x)
        torch.testing.assert_close(out, x.mean(0, keepdim=True).expand_as(x))  # everything ties


# ------------------------------------------------------------------------------------------------ FREEDOM
def test_freedom_prunes_edges_by_degree_and_renormalises():
    torch.manual_seed(0)
    ds = make_dataset(n_users=30, n_items=40, per_user=8)
    model = build_model("freedom", ds, {"dropout": 0.5})
    adj = model.pruned_adjacency().to_dense()
    n_edges = ds.train.nnz
    assert (adj > 0).sum() == 2 * int(n_edges * 0.5)
    torch.testing.assert_close(adj, adj.T)
    block = adj[: ds.n_users, ds.n_users :]
    du, di = (block > 0).sum(1).float(), (block > 0).sum(0).float()
    rows, cols = block.nonzero(as_tuple=True)
    torch.testing.assert_close(block[rows, cols], (du[rows] * di[cols]).rsqrt())
    train = torch.from_numpy(ds.train.toarray()) > 0
    assert train[rows, cols].all()  # only training edges survive


def test_freedom_prunes_only_in_training():
    torch.manual_seed(0)
    ds = make_dataset()
    model = build_model("freedom", ds, {"prune_every": "batch"})  # per epoch: tests/test_contracts.py
    model.eval()
    a, b = model.represent(ds.features), model.represent(ds.features)
    assert torch.equal(a.user, b.user)
    model.train()
    a, b = model.represent(ds.features), model.represent(ds.features)
    assert not torch.equal(a.user, b.user)


def test_freedom_modality_weights_default_to_equal_shares():
    ds = make_dataset(modalities={"image": 5, "text": 4, "audio": 3})
    mix = build_model("freedom", ds).mix  # YAML: image 0.1, text 0.9; audio unnamed: 1/3
    total = 0.1 + 0.9 + 1 / 3
    assert abs(mix["image"] - 0.1 / total) < 1e-9 and abs(mix["audio"] - (1 / 3) / total) < 1e-9


# ------------------------------------------------------------------------------------------------ BM3
def test_bm3_ignores_negatives():
    ds = make_dataset()
    model = build_model("bm3", ds)
    b1 = _batch(ds)
    b2 = Batch(b1.users, b1.pos, torch.zeros_like(b1.neg))
    losses = []
    for b in (b1, b2):
        torch.manual_seed(3)  # the same dropout views
        out = model.loss(model.represent(ds.features), b)
        losses.append(sum(out.values()))
    torch.testing.assert_close(losses[0], losses[1])


def test_bm3_paper_scoring_uses_id_vectors_only():
    ds = make_dataset()
    model = build_model("bm3", ds, {"modality_score_weight": 0.0})
    model.eval()
    users = torch.arange(5)
    ablated = mean_ablate(ds.features, {"image"})
    with torch.no_grad():
        base = model.score(model.represent(ds.features), users)
        torch.testing.assert_close(base, model.score(model.represent(ablated), users))
        model.params.modality_score_weight = 0.5
        assert not torch.allclose(
            model.score(model.represent(ds.features), users), model.score(model.represent(ablated), users)
        )


def test_bm3_bootstrap_loss_by_hand_without_dropout():
    ds = make_dataset(modalities={"only": 6})
    model = build_model("bm3", ds, {"dropout": 0.0, "cl_weight": 1.0, "reg_weight": 0.0})
    rep = model.represent(ds.features)
    b = _batch(ds)
    out = model.loss(rep, b)
    hu, hi = rep.extras["online_user"], rep.extras["online_item"]
    pred = model.predictor
    cos = F.cosine_similarity
    ui = 2 - cos(pred(hu[b.users]), hi[b.pos]).mean() - cos(pred(hi[b.pos]), hu[b.users]).mean()
    hm = model.proj["only"](ds.features["only"])[b.pos]
    cl = 2 - cos(pred(hm), hi[b.pos]).mean() - cos(pred(hm), hm).mean()
    torch.testing.assert_close(out["bootstrap"], ui)
    torch.testing.assert_close(out["cl"], cl)


# ------------------------------------------------------------------------------------------------ MGCN
def test_info_nce_by_hand():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sim = torch.exp(an @ bn.T / 0.2)
    expected = -torch.log(sim.diag() / sim.sum(1)).mean()
    torch.testing.assert_close(info_nce(a, b, 0.2), expected)


def test_mgcn_with_one_modality_side_is_half_the_modality_view():
    ds = make_dataset(modalities={"only": 9})
    model = build_model("mgcn", ds)
    rep = model.represent(ds.features)
    u_m, i_m = rep.parts["only"]
    torch.testing.assert_close(rep.extras["side"], torch.cat([u_m, i_m]) / 2)


def test_lattice_searches_neighbours_once_per_epoch_in_training_and_at_every_evaluation(monkeypatch):
    from distillrec.models.general import lattice

    calls = []
    real = lattice.topk_neighbours
    monkeypatch.setattr(lattice, "topk_neighbours", lambda *a: calls.append(1) or real(*a))
    ds = make_dataset(modalities={"only": 6})
    model = build_model("lattice", ds)
    model.on_epoch_start(1)
    for _ in range(3):
        model.represent(ds.features)
    assert len(calls) == 1  # the epoch's first call searches, the others reuse
    model.on_epoch_start(2)
    model.represent(ds.features)
    assert len(calls) == 2
    model.eval()
    model.represent(ds.features)
    assert len(calls) == 3  # evaluation always searches
    model.train()
    per_batch = build_model("lattice", ds, {"knn_every": "batch"})
    calls.clear()
    per_batch.on_epoch_start(1)
    for _ in range(3):
        per_batch.represent(ds.features)
    assert len(calls) == 3


def test_lattice_edge_values_get_gradient_while_the_neighbours_are_reused():
    ds = make_dataset(modalities={"only": 6})
    model = build_model("lattice", ds)
    model.on_epoch_start(1)
    model.represent(ds.features)  # searches
    rep = model.represent(ds.features)  # reuses the indices
    rep.item.sum().backward()
    grad = model.proj["only"].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_freedom_modality_bpr_projects_only_the_batch_items_and_equals_the_all_item_projection(monkeypatch):
    from distillrec.models.losses import dot_bpr_loss

    ds = make_dataset(n_items=40, modalities={"image": 13, "text": 7})
    model = build_model("freedom", ds)
    rep = model.represent(ds.features)
    g = torch.Generator().manual_seed(0)
    users = torch.randint(ds.n_users, (16,), generator=g)
    pos, neg = torch.randint(40, (16,), generator=g), torch.randint(40, (16, 3), generator=g)
    rows = []
    real = model.proj["image"].forward
    monkeypatch.setattr(model.proj["image"], "forward", lambda x: rows.append(len(x)) or real(x))
    got = model.loss(rep, Batch(users, pos, neg))["modal_bpr"]
    assert rows == [len(torch.unique(torch.cat([pos, neg.reshape(-1)])))]
    u = rep.user[users]
    every = {m: model.proj[m](ds.features[m]) for m in model.modalities}
    want = model.params.reg_weight * sum(dot_bpr_loss(u, e[pos], e[neg]) for e in every.values())
    torch.testing.assert_close(got, want)
