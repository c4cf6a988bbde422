"""CDL as KDSR builds it (issue 16, items 5-8): GRU4Rec and SASRec with KDSR's modality input, MMSR's
modality tables at the features' scale, the official Frobenius holistic form, and a forgetting
diagnostic that measures what CDL supervises against its own target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillrec.distill.cdl import CDL, CDLOptions
from distillrec.distill.pairs import cooccurring_pairs, pair_similarity, pearson
from distillrec.distill.registry import build_distiller
from distillrec.errors import ConfigError
from distillrec.experiment.spec import route
from distillrec.models.registry import build_model
from distillrec.models.sequential.base import compress_features
from tests.test_cdl import build_cdl
from tests.test_next_item import make_seq_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

ID_MODELS = ["gru4rec", "sasrec"]
WITH_INPUT = {"modality_input": True}


def _cdl(ds, model: str, params: dict | None = None, **options) -> CDL:
    options.setdefault("sample_pairs", 2000)
    options.setdefault("probe_pairs", 500)
    return build_cdl(ds, model, params, **options)


def _batch(ds):
    from tests.test_cdl import _batch as batch

    return batch(ds)


def _width(model) -> int:  # noqa: ANN001
    return model.item_emb.weight.shape[1]


# --------------------------------------------------------------------------- item 5: modality input
@pytest.mark.parametrize("name", ID_MODELS)
def test_modality_input_shapes_and_init(name):
    ds = make_seq_dataset()
    model = build_model(name, ds, WITH_INPUT)
    d, n = _width(model), ds.n_items
    assert model.has_modality_tables and set(model.modality) == {"image", "text"}
    rep = model.represent(ds.features)
    for m, f in ds.features.items():
        table = model.modality[m]
        assert table.shape == (n, d) and table.requires_grad
        code = compress_features(f, d)  # the compressed features, at their own (unit rms) scale
        assert torch.allclose(table[:, : code.shape[1]], code) and not table[:, code.shape[1] :].any()
        assert code.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    ids = model.item_emb.weight
    assert rep.extras["input"].shape == (n + 1, d)
    fused = ids[:n] + (model.modality["image"] + model.modality["text"])
    assert torch.allclose(rep.extras["input"][:n], fused, atol=1e-6)
    assert not rep.extras["input"][n].any()  # padding row
    assert rep.item.shape == (n, d) and torch.equal(rep.item, ids[:n])  # scored against the ID table
    assert model.correlation_tables(rep).keys() == {"image", "text"}
    assert all(model.correlation_tables(rep)[m] is rep.extras["modality"][m] for m in ds.features)
    batch = _batch(ds)
    h = model.encode(rep, batch.items, batch.lengths)
    assert h.shape == (len(batch.items), d)
    assert model.score_sequences(rep, h).shape == (len(batch.items), n)
    groups = {g["name"]: g["params"] for g in model.param_groups(1e-3)}
    assert [id(p) for p in groups["modality"]] == [id(p) for p in model.modality.values()]
    ablated = model.represent(ds.features, ablated=frozenset({"image"}))
    assert torch.allclose(ablated.extras["modality"]["image"], model.modality["image"].mean(0).expand(n, d))
    half = build_model(name, ds, {**WITH_INPUT, "modality_init_scale": 0.5})
    assert torch.allclose(half.modality["text"], 0.5 * model.modality["text"])


@pytest.mark.parametrize("name", ID_MODELS)
def test_plain_models_have_no_modality_input(name):
    ds = make_seq_dataset()
    model = build_model(name, ds)
    rep = model.represent(ds.features)
    assert not model.has_modality_tables and "modality" not in rep.extras
    assert not any("modality" in k for k in model.state_dict())
    assert [g["name"] for g in model.param_groups(1e-3)] == ["model"]
    assert rep.extras["input"] is model.item_emb.weight


def test_modality_input_needs_features():
    ds = make_seq_dataset(modalities={})
    with pytest.raises(ConfigError, match="modality_input needs item features"):
        build_model("sasrec", ds, WITH_INPUT)


@pytest.mark.parametrize("name", ID_MODELS)
def test_cdl_refuses_a_backbone_without_modality_tables_in_one_line(name):
    ds = make_seq_dataset()
    with pytest.raises(ConfigError) as err:
        _cdl(ds, name)
    assert "modality_input=true" in str(err.value) and "cdl.id_only=true" in str(err.value)
    assert "\n" not in str(err.value)
    assert _cdl(ds, name, id_only=True).options.id_only  # the earlier ID-table form, asked for


@pytest.mark.parametrize("name", ID_MODELS)
def test_cdl_gradient_reaches_the_modality_tables_not_the_codes_or_ids(name):
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds, WITH_INPUT)
    cdl = _cdl(ds, name, WITH_INPUT)
    codes = {m: getattr(cdl, f"_z_{m}").clone() for m in ds.features}
    terms = cdl.loss(model, model.represent(ds.features), _batch(ds), 1)
    assert set(terms) == {"cdl_hol_image", "cdl_code_image", "cdl_hol_text", "cdl_code_text"}
    sum(terms.values()).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in model.modality.values())
    assert model.item_emb.weight.grad is None  # CDL supervises the modality tables only
    assert all(not b.requires_grad for b in cdl.buffers())  # the teacher's frozen codes take no gradient
    opt = torch.optim.Adam([*model.parameters(), *cdl.parameters()], lr=1e-2)
    opt.step()
    assert all(torch.equal(getattr(cdl, f"_z_{m}"), codes[m]) for m in ds.features)

    model.zero_grad()
    ids = _cdl(ds, name, WITH_INPUT, id_only=True)
    sum(ids.loss(model, model.represent(ds.features), _batch(ds), 1).values()).backward()
    assert model.item_emb.weight.grad.abs().sum() > 0
    assert all(t.grad is None or not t.grad.any() for t in model.modality.values())


def test_id_only_supervises_the_id_table():
    ds = make_seq_dataset()
    model = build_model("gru4rec", ds)
    cdl = _cdl(ds, "gru4rec", holistic_weight=1.0, code_weight=1.0, id_only=True)
    batch = _batch(ds)
    seq, p, q = cooccurring_pairs(batch.items, batch.lengths)
    a, c = batch.items[seq, p], batch.items[seq, q]
    terms = cdl.loss(model, model.represent(ds.features), batch, 1)
    hol, code = cdl.student_terms("image", model.id_table(), a, c, seq, len(batch.items))
    assert terms["cdl_hol_image"].item() == pytest.approx(hol.item(), rel=1e-6)
    assert terms["cdl_code_image"].item() == pytest.approx(code.item(), rel=1e-6)


def test_warmup_applies_to_the_modality_input_tables():
    from distillrec.training.config import TrainConfig
    from distillrec.training.trainer import Trainer

    ds = make_seq_dataset()
    model = build_model("gru4rec", ds, WITH_INPUT)
    cdl = _cdl(ds, "gru4rec", WITH_INPUT, warmup_gamma=4.0, warmup_epochs=2)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=1e-2, valid_metric="mrr@10", ks=[5, 10, 20])
    trainer = Trainer(model, ds, cfg, distiller=cdl, quiet=True)
    seen = []
    for epoch in (1, 2, 3):
        trainer._train_epoch(epoch)
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    assert [s["modality"] for s in seen] == pytest.approx([2.5e-3, 6.25e-3, 1e-2])
    assert all(s["model"] == 1e-2 for s in seen)


def test_cdl_off_point_is_the_plain_modality_input_model(tmp_path):
    """The fair comparison's two arms are one model: at CDL's off point, bit for bit the plain run."""
    from distillrec.experiment.api import train
    from distillrec.training.checkpoint import load_checkpoint

    ds = make_seq_dataset()
    settings = {"epochs": 2, **WITH_INPUT}
    plain = train("sasrec", ds, seeds=[3], set=settings, out=tmp_path)[0]
    off = {f"cdl.{k}": v for k, v in CDL.off_point.items()}
    distilled = train("sasrec", ds, seeds=[3], set={**settings, **off}, out=tmp_path, distill="cdl")[0]
    assert distilled.metrics["valid"] == plain.metrics["valid"]
    a, b = (load_checkpoint(r.run_dir / "best.pt")["model"] for r in (plain, distilled))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("modality.") for k in a)


# --------------------------------------------------------------------------- item 6: MMSR's init scale
def _initial_cosines(ds, init: str, m: str):
    torch.manual_seed(0)
    model = build_model("mmsr", ds, {"modality_init": init})
    cdl = _cdl(ds, "mmsr")
    batch = _batch(ds)
    seq, p, q = cooccurring_pairs(batch.items, batch.lengths)
    a, c = batch.items[seq, p], batch.items[seq, q]
    e, head = model.modality[m].detach(), cdl.score_head[m]
    with torch.no_grad():
        pred = pair_similarity(head(e[a]), head(e[c]), "cosine")
        target = cdl.teacher(m, a, c, code=False)[0]
    return model, pred, target


@pytest.mark.parametrize("m", ["image", "text"])
def test_mmsr_tables_start_at_the_features_scale_and_the_head_spans_the_targets(m):
    ds = make_seq_dataset()
    model, pred, target = _initial_cosines(ds, "features", m)
    code = compress_features(ds.features[m], 64)
    assert torch.allclose(model.modality[m][:, : code.shape[1]], code)  # unit rms, not 0.02
    assert pred.std() > 0.5 * target.std()
    assert pred.quantile(0.1) < target.median() < pred.quantile(0.9)
    assert pred.quantile(0.1) < target.quantile(0.25) and pred.quantile(0.9) > target.quantile(0.75)
    old, pred_old, _ = _initial_cosines(ds, "init_std", m)
    assert torch.allclose(old.modality[m], 0.02 * model.modality[m])  # the earlier scale, as an option
    assert pred_old.std() < 0.05 * target.std() and pred_old.quantile(0.1) > target.quantile(
        0.9
    )  # bias-bound


# --------------------------------------------------------------------------- item 7: holistic forms
def test_frobenius_holistic_form_by_hand_and_its_earlier_name():
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("mmsr", ds)
    batch = _batch(ds)
    mean = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6, code_weight=0.0)
    frob = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6, code_weight=0.0, holistic="frobenius")
    frob.load_state_dict(mean.state_dict())
    rep = model.represent(ds.features)
    seq, p, q = cooccurring_pairs(batch.items, batch.lengths)
    a, c = batch.items[seq, p], batch.items[seq, q]
    tau = mean.options.tau
    for m in ("image", "text"):
        z = compress_features(ds.features[m], 12)
        head = mean.score_head[m]
        e = model.modality[m]
        diff2 = (
            F.cosine_similarity(head(e[a]), head(e[c]), dim=-1) / tau
            - F.cosine_similarity(z[a], z[c], dim=-1) / tau
        ) ** 2
        per_seq = torch.zeros(len(batch.items)).index_add_(
            0, seq, 2 * (diff2 + 1e-8)
        )  # both orders of a pair
        assert frob.loss(model, rep, batch, 1)[f"cdl_hol_{m}"].item() == pytest.approx(
            per_seq.sqrt().mean().item(), rel=1e-4
        )
        assert mean.loss(model, rep, batch, 1)[f"cdl_hol_{m}"].item() == pytest.approx(
            diff2.mean().item(), rel=1e-4
        )
    assert CDLOptions(legacy_frobenius=True).holistic == "frobenius"
    assert CDLOptions().holistic == "mean"


def test_search_space_covers_both_holistic_forms():
    for key in ("holistic_weight", "code_weight"):
        assert CDL.search_space[key] == [0.0, 0.1, 0.5, 1.0, 5.0, 10.0]
    assert CDLOptions().holistic_weight == 1.0 and CDLOptions().code_weight == 0.5


# --------------------------------------------------------------------------- item 8: the diagnostic
def test_diagnostic_measures_the_supervised_projection_against_cdls_target():
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("mmsr", ds)
    cdl = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6)
    diag = cdl.on_epoch_end(model, 1)
    assert set(diag) == {
        f"{k}_{m}" for k in ("forget_corr", "code_corr", "cdl_corr", "id_corr") for m in ("image", "text")
    }
    a, c = cdl.probe.probe_a, cdl.probe.probe_c
    for m, f in ds.features.items():
        e, z, head = model.modality[m].detach(), compress_features(f, 12), cdl.score_head[m]
        target = F.cosine_similarity(z[a], z[c], dim=-1)
        with torch.no_grad():
            supervised = F.cosine_similarity(head(e[a]), head(e[c]), dim=-1)
        assert diag[f"cdl_corr_{m}"] == pytest.approx(pearson(supervised, target), abs=1e-6)
        assert diag[f"code_corr_{m}"] == pytest.approx(
            pearson(F.cosine_similarity(e[a], e[c], dim=-1), target), abs=1e-6
        )
        raw = F.cosine_similarity(f[a], f[c], dim=-1)
        assert diag[f"forget_corr_{m}"] == pytest.approx(
            pearson(F.cosine_similarity(e[a], e[c], dim=-1), raw), abs=1e-6
        )
        assert diag[f"code_corr_{m}"] > 0.5  # the tables start from the codes
    # no holistic term: nothing supervises the score head, so no cdl_corr column
    code_only = _cdl(ds, "mmsr", compress_dim=12, parts=3, codes=6, holistic_weight=0.0)
    assert not any(k.startswith("cdl_corr") for k in code_only.on_epoch_end(model, 1))
    # with id_only the supervised table is the ID table: the raw-feature view equals the ID reference
    gru = build_model("gru4rec", ds)
    ids = _cdl(ds, "gru4rec", id_only=True).on_epoch_end(gru, 1)
    assert ids["forget_corr_image"] == ids["id_corr_image"] and "cdl_corr_image" in ids


def test_forgetting_probe_logs_the_code_view_without_cdl():
    ds = make_seq_dataset()
    probe = build_distiller(
        ["forgetting"],
        ds,
        "sasrec",
        route({"forgetting.probe_pairs": 500}, "forgetting"),
        torch.device("cpu"),
        None,
    )
    diag = probe.on_epoch_end(build_model("sasrec", ds, WITH_INPUT), 1)
    assert set(diag) == {
        f"{k}_{m}" for k in ("forget_corr", "code_corr", "id_corr") for m in ("image", "text")
    }
    assert diag["code_corr_text"] > 0.5
