"""KDSR's correlation distillation: pair masks, each loss term by hand, the warm-up schedule, code
stability, memory that grows with batch x length² (not items²), and the forgetting diagnostic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from distillrec.data.next_item import PrefixSampler, SeqBatch
from distillrec.distill.cdl import CDL
from distillrec.distill.pairs import cooccurring_pairs, pair_similarity
from distillrec.distill.quantize import assign_codes, kmeans_codebook, vq_codebook
from distillrec.distill.registry import build_distiller
from distillrec.experiment.spec import route
from distillrec.models.registry import build_model
from distillrec.models.schedules import AsyncWarmup
from distillrec.models.sequential.base import compress_features
from tests.test_next_item import make_seq_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def build_cdl(ds, model: str, params: dict | None = None, **options) -> CDL:
    """CDL on `model` (with hyperparameters `params`) as a run builds it, on the CPU, without a run folder."""
    groups = route({**(params or {}), **{f"cdl.{k}": v for k, v in options.items()}}, "cdl")
    return build_distiller(
        ["cdl"],
        ds,
        model,
        groups,
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model(model, ds, params),
    )


def _cdl(ds, model="sasrec", params=None, **options) -> CDL:
    options.setdefault("sample_pairs", 5000)
    options.setdefault("id_only", model in ("sasrec", "gru4rec"))
    return build_cdl(ds, model, params, **options)


def _batch(ds) -> SeqBatch:
    sampler = PrefixSampler(ds.sequences, ds.n_items, "train")
    return sampler.batch(np.arange(min(len(sampler), 50)))


# --------------------------------------------------------------------------- pairs
def test_pairs_cover_exactly_the_real_cooccurring_items():
    items = torch.tensor([[3, 4, 3, 9, 9], [1, 2, 9, 9, 9], [5, 9, 9, 9, 9]])  # 9 = padding
    lengths = torch.tensor([4, 2, 1])
    seq, p, q = cooccurring_pairs(items, lengths)
    got = sorted(zip(seq.tolist(), p.tolist(), q.tolist(), strict=True))
    # row 0: positions 0..3 hold 3, 4, 3, 9(real item 9); (0, 2) is the same item twice -> left out
    assert got == [(0, 0, 1), (0, 0, 3), (0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 0, 1)]


def test_pairs_match_brute_force_on_random_batches():
    ds = make_seq_dataset(n_items=8, max_len=15)  # few items: many repeats
    batch = _batch(ds)
    seq, p, q = cooccurring_pairs(batch.items, batch.lengths)
    expected = set()
    for b in range(len(batch.items)):
        n = int(batch.lengths[b])
        for i in range(n):
            for j in range(i + 1, n):
                if batch.items[b, i] != batch.items[b, j]:
                    expected.add((b, i, j))
    assert set(zip(seq.tolist(), p.tolist(), q.tolist(), strict=True)) == expected
    assert (batch.items[seq, p] < ds.n_items).all() and (batch.items[seq, q] < ds.n_items).all()


# --------------------------------------------------------------------------- loss terms by hand
def _by_hand(cdl: CDL, model, ds, batch, m: str):
    rep = model.represent(ds.features)
    e = model.correlation_tables(rep)[m]
    pairs = []
    for b in range(len(batch.items)):
        n = int(batch.lengths[b])
        for i in range(n):
            for j in range(i + 1, n):
                if batch.items[b, i] != batch.items[b, j]:
                    pairs.append((b, int(batch.items[b, i]), int(batch.items[b, j])))
    z = compress_features(ds.features[m], cdl.options.compress_dim)
    book = getattr(cdl, f"_codebook_{m}")
    tau = cdl.options.tau
    hol_terms, code_terms, per_seq = [], [], {}
    for b, i, j in pairs:
        c_ij = torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm())
        w = cdl.score_head[m]
        p_ij = F.cosine_similarity(w(e[i]), w(e[j]), dim=0)
        d2 = (p_ij / tau - c_ij / tau) ** 2
        hol_terms.append(d2)
        per_seq[b] = per_seq.get(b, 0.0) + 2 * (d2 + 1e-8)
        parts = torch.stack([F.cosine_similarity(z[i, a:bb], z[j, a:bb], dim=0) for a, bb in cdl.bounds[m]])
        code = int(((book - parts) ** 2).sum(1).argmin())
        logits = cdl.code_head[m](e[i] - e[j])
        code_terms.append(-torch.log_softmax(logits, 0)[code])
    hol = torch.stack(hol_terms).mean()
    frob = torch.stack([v.sqrt() for v in per_seq.values()]).sum() / len(batch.items)
    return hol, torch.stack(code_terms).mean(), frob


def test_each_loss_term_against_a_hand_computation():
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("mmsr", ds)
    cdl = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6, holistic_weight=0.7, code_weight=0.3)
    batch = _batch(ds)
    terms = cdl.loss(model, model.represent(ds.features), batch, epoch=1)
    assert set(terms) == {"cdl_hol_image", "cdl_code_image", "cdl_hol_text", "cdl_code_text"}
    for m in ("image", "text"):
        hol, code, _ = _by_hand(cdl, model, ds, batch, m)
        assert terms[f"cdl_hol_{m}"].item() == pytest.approx(0.7 * hol.item(), rel=1e-4)
        assert terms[f"cdl_code_{m}"].item() == pytest.approx(0.3 * code.item(), rel=1e-4)
    legacy = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6, legacy_frobenius=True)
    legacy.load_state_dict(cdl.state_dict())
    t = legacy.loss(model, model.represent(ds.features), batch, epoch=1)
    assert t["cdl_hol_image"].item() == pytest.approx(
        _by_hand(legacy, model, ds, batch, "image")[2].item(), rel=1e-4
    )


def test_weights_are_wired_as_named_and_legacy_wiring_swaps():
    ds = make_seq_dataset()
    model = build_model("sasrec", ds)
    batch = _batch(ds)
    right = _cdl(ds, holistic_weight=2.0, code_weight=0.5)
    unit = _cdl(ds, holistic_weight=1.0, code_weight=1.0)
    unit.load_state_dict(right.state_dict())
    legacy = _cdl(ds, holistic_weight=2.0, code_weight=0.5, legacy_weight_wiring=True)
    legacy.load_state_dict(right.state_dict())
    rep = model.represent(ds.features)
    raw = unit.loss(model, rep, batch, 1)
    a = right.loss(model, rep, batch, 1)
    b = legacy.loss(model, rep, batch, 1)
    for m in ("image", "text"):
        assert a[f"cdl_hol_{m}"].item() == pytest.approx(2.0 * raw[f"cdl_hol_{m}"].item(), rel=1e-5)
        assert a[f"cdl_code_{m}"].item() == pytest.approx(0.5 * raw[f"cdl_code_{m}"].item(), rel=1e-5)
    # official wiring: image code term x the holistic weight, text holistic term x the code weight
    assert b["cdl_code_image"].item() == pytest.approx(2.0 * raw["cdl_code_image"].item(), rel=1e-5)
    assert b["cdl_hol_text"].item() == pytest.approx(0.5 * raw["cdl_hol_text"].item(), rel=1e-5)
    assert b["cdl_hol_image"].item() == pytest.approx(a["cdl_hol_image"].item(), rel=1e-5)


def test_gradients_reach_the_student_tables_not_the_teacher():
    ds = make_seq_dataset()
    model = build_model("mmsr", ds)
    cdl = _cdl(ds, "mmsr")
    terms = cdl.loss(model, model.represent(ds.features), _batch(ds), 1)
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.modality.values())
    assert all(not b.requires_grad for b in cdl.buffers())


# --------------------------------------------------------------------------- warm-up
def test_async_warmup_schedule():
    s = AsyncWarmup(gamma=4.0, epochs=10)
    assert s.factor(1) == pytest.approx(0.25)
    assert s.factor(6) == pytest.approx(0.25 + 0.75 * 0.5)
    assert s.factor(11) == 1.0 and s.factor(50) == 1.0
    assert [AsyncWarmup(gamma=4.0, epochs=10, legacy_constant_ratio=True).factor(e) for e in (1, 11, 99)] == [
        0.25
    ] * 3
    assert AsyncWarmup(gamma=4.0, epochs=0).factor(1) == 1.0


def test_trainer_applies_the_warmup_to_the_modality_group():
    from distillrec.training.config import TrainConfig
    from distillrec.training.trainer import Trainer

    ds = make_seq_dataset()
    model = build_model("mmsr", ds)
    cdl = _cdl(ds, "mmsr", warmup_gamma=4.0, warmup_epochs=2)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=1e-2, valid_metric="mrr@10", ks=[5, 10, 20])
    trainer = Trainer(model, ds, cfg, distiller=cdl, quiet=True)
    seen = []
    for epoch in (1, 2, 3):
        trainer._train_epoch(epoch)
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    assert [s["modality"] for s in seen] == pytest.approx([2.5e-3, 6.25e-3, 1e-2])
    assert all(s["model"] == 1e-2 for s in seen)


# --------------------------------------------------------------------------- codes
def test_codes_are_stable_for_identical_inputs():
    ds = make_seq_dataset()
    for quantizer in ("vq", "kmeans"):
        one, two = _cdl(ds, quantizer=quantizer), _cdl(ds, quantizer=quantizer)
        assert torch.equal(one._codebook_image, two._codebook_image)
        a, c = torch.arange(0, 30), torch.arange(30, 60)
        first = one.codes_for("image", a, c)
        assert torch.equal(first, one.codes_for("image", a, c))
        assert torch.equal(first, one.codes_for("image", c, a))  # symmetric correlations, same code
        assert torch.equal(first, two.codes_for("image", a, c))


def test_codebooks_quantise_clustered_vectors():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    vecs = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centers])
    for fit in (kmeans_codebook, vq_codebook):
        book = fit(vecs, 3, torch.Generator().manual_seed(1))
        codes = assign_codes(vecs, book)
        assert len(set(codes.tolist())) == 3
        assert all(len(set(codes[i * 200 : (i + 1) * 200].tolist())) == 1 for i in range(3))


# --------------------------------------------------------------------------- memory
class _Sizes(TorchDispatchMode):
    """Largest tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_grows_with_batch_and_length_not_items():
    ds = make_seq_dataset(
        n_users=200, n_items=20000, min_len=8, max_len=20, modalities={"image": 24, "text": 16}
    )
    small = {"hidden_size": 16, "n_heads": 1, "inner_size": 32}
    model = build_model("sasrec", ds, small)
    with _Sizes() as prep:
        cdl = _cdl(ds, params=small, compress_dim=16, parts=4, codes=8, sample_pairs=2000, probe_pairs=100)
    assert prep.largest <= ds.n_items * 24  # per item (n x feature width), never n x n
    batch = _batch(ds)
    b, length = batch.items.shape
    rep = model.represent(ds.features)
    with _Sizes() as step:
        cdl.loss(model, rep, batch, 1)
    assert cdl.last_sizes["mask"] == (b, length, length)
    n_pairs = cdl.last_sizes["pairs"][0]
    assert n_pairs <= b * length * (length - 1) // 2
    widest = max(16, 8)  # hidden size, number of codes
    biggest_table = ds.n_items * 16  # the student's own item table, indexed (not built) by the loss
    assert step.largest <= max(b * length * length, n_pairs * widest, biggest_table)
    assert step.largest < ds.n_items**2 / 1000


# --------------------------------------------------------------------------- diagnostic and end to end
def test_forgetting_diagnostic_and_end_to_end_run(tmp_path):
    from distillrec.experiment.api import train

    ds = make_seq_dataset()
    res = train(
        "mmsr", ds, seeds=[1], set={"epochs": 2, "cdl.sample_pairs": 2000}, out=tmp_path, distill=["cdl"]
    )[0]
    header = (res.run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"cdl_hol_image", "cdl_code_text", "forget_corr_image", "id_corr_text"} <= set(header)
    model = build_model("mmsr", ds)
    probe = build_distiller(
        ["forgetting"],
        ds,
        "mmsr",
        route({}, "forgetting"),
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model("mmsr", ds),
    )
    diag = probe.on_epoch_end(model, 0)
    assert diag["forget_corr_image"] > 0.5  # tables start from the features' codes
    assert abs(diag["id_corr_image"]) < 0.3  # random ID embeddings know nothing of the features


def test_probe_leaves_training_unchanged():
    from distillrec.experiment.api import train

    ds = make_seq_dataset()
    plain = train("gru4rec", ds, seeds=[3], set={"epochs": 2}, out=None)[0].metrics
    probed = train("gru4rec", ds, seeds=[3], set={"epochs": 2}, out=None, distill=["forgetting"])[0].metrics
    assert plain["test"] == probed["test"]


def test_cdl_refuses_topk_models():
    from distillrec.errors import ConfigError
    from tests.conftest import make_dataset

    ds = make_dataset()
    with pytest.raises(ConfigError, match="next-item"):
        build_distiller(
            ["cdl"],
            ds,
            "bprmf",
            route({}, "cdl"),
            torch.device("cpu"),
            None,
            backbone_factory=lambda: build_model("bprmf", ds),
        )


def test_pair_similarity_kinds():
    x, y = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
    assert pair_similarity(x, y, "cosine").item() == pytest.approx(0.8)
    assert pair_similarity(x, y, "dot").item() == pytest.approx(4.0)
    assert pair_similarity(x, y, "euclidean").item() == pytest.approx(18**0.5)
    assert pair_similarity(x, y, "manhattan").item() == pytest.approx(6.0)
