"""CKD: ablated inputs, frozen teachers, each loss term by hand, re-weights, the teacher cache."""

from __future__ import annotations

import math

import pytest
import torch

from distillrec.distill.ckd import (
    CKD,
    UniModalView,
    generic_term,
    legacy_weights,
    paper_weights,
    specific_term,
)
from distillrec.errors import ConfigError
from distillrec.experiment.api import train
from distillrec.models.registry import build_model
from tests.conftest import make_dataset


def test_the_ablated_input_really_is_the_mean(tiny):
    model = build_model("vbpr", tiny)
    seen = {}
    original = model.represent

    def spy(features, ablated=frozenset()):
        seen["features"], seen["ablated"] = features, ablated
        return original(features, ablated)

    model.represent = spy
    UniModalView(model, "image").represent(tiny.features)
    text = seen["features"]["text"]
    assert torch.allclose(text, tiny.features["text"].mean(0, keepdim=True).expand_as(text))
    assert torch.equal(seen["features"]["image"], tiny.features["image"])
    assert seen["ablated"] == frozenset({"text"})
    # the user preferences of the ablated modality are replaced by their mean row
    rep = model.counterfactual(tiny.features, "image")
    pref = rep.parts["text"][0]
    assert torch.allclose(pref, model.user_pref["text"].mean(0, keepdim=True).expand_as(pref))


def test_specific_terms_by_hand():
    t = torch.tensor([1.0, -0.5, 2.0])
    s = torch.tensor([0.5, 0.0, 3.0])
    assert specific_term(t, s, "hinge", 0.1).tolist() == [0.5, 0.0, 0.0]  # one-sided
    assert specific_term(t, s, "mse", 0.1).tolist() == pytest.approx([0.25, 0.25, 1.0])
    tau = 0.5
    kl = specific_term(t, s, "kl", tau)
    for k in range(3):
        pt, ps = 1 / (1 + math.exp(-t[k] / tau)), 1 / (1 + math.exp(-s[k] / tau))
        expected = pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
        assert kl[k].item() == pytest.approx(expected, abs=1e-6)


def test_generic_term_by_hand():
    t = torch.tensor([0.2, -0.1])
    s = torch.tensor([0.05, 0.3])
    tau = 0.1
    expected = 0.0
    for k in range(2):
        pt, ps = 1 / (1 + math.exp(-t[k] / tau)), 1 / (1 + math.exp(-s[k] / tau))
        expected += -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps))
    assert generic_term(t, s, tau).item() == pytest.approx(expected / 2, abs=1e-6)


def test_paper_weights_by_hand_and_sum_to_one():
    drop = {"image": torch.tensor([0.2, 0.4]), "text": torch.tensor([1.0, 1.0])}
    teacher = {"image": torch.tensor([1.0, 1.0]), "text": torch.tensor([2.0, 2.0])}
    w = paper_weights(drop, teacher, 1e-8)
    rho_i, rho_t = 0.3 / 1.0, 1.0 / 2.0
    assert w["image"].item() == pytest.approx(1 - rho_i / (rho_i + rho_t))
    assert w["text"].item() == pytest.approx(1 - rho_t / (rho_i + rho_t))
    assert sum(w.values()).item() == pytest.approx(1.0)
    # the weaker modality (removing it costs less) gets the larger weight
    assert w["image"] > w["text"]
    three = paper_weights({m: torch.rand(5) for m in "abc"}, {m: torch.rand(5) + 0.1 for m in "abc"}, 1e-8)
    assert sum(three.values()).item() == pytest.approx(1.0)


def test_legacy_weights_by_hand_and_sum_to_m():
    drop = {"t": torch.tensor([0.5]), "v": torch.tensor([0.1])}
    own = {"t": torch.tensor([1.0]), "v": torch.tensor([1.0])}
    w = legacy_weights(drop, own)
    ct, cv = 0.5, 0.1
    assert w["t"].item() == pytest.approx(2 * cv / (ct + cv))
    assert w["v"].item() == pytest.approx(2 * ct / (ct + cv))
    assert (w["t"] + w["v"]).item() == pytest.approx(2.0)


@pytest.mark.slow
def test_teachers_are_frozen_and_the_cache_skips_training(tmp_path, monkeypatch):
    ds = make_dataset(n_users=40, n_items=30)
    settings = {"epochs": 3, "patience": 5, "ckd.n_generic": 64}
    first = train("vbpr", ds, seeds=[1], set=settings, out=tmp_path, distill=["ckd"])[0]
    info = first.metrics["distill_info"]["teachers"]
    assert set(info) == {"image", "text"}
    before = {}
    import distillrec.distill.ckd as ckd_module

    captured = {}
    original_prepare = CKD.prepare

    def keep(self, *a, **k):
        original_prepare(self, *a, **k)
        captured["ckd"] = self
        for m, t in self.teachers.items():
            before[m] = {k: v.clone() for k, v in t.state_dict().items()}

    monkeypatch.setattr(CKD, "prepare", keep)
    from distillrec.training.trainer import Trainer

    fits = []
    original_fit = Trainer.fit

    def counting_fit(self, *a, **k):
        fits.append(type(self.model).__name__)
        return original_fit(self, *a, **k)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    second = train(
        "vbpr", ds, seeds=[1], set={**settings, "ckd.lambda_kd": 0.1}, out=tmp_path, distill=["ckd"]
    )[0]
    assert fits == ["VBPR"]  # only the student trained: both teachers came from the cache
    assert not any(captured["ckd"].trained_now.values())
    assert second.metrics["distill_info"]["teachers"] == info
    for m, t in captured["ckd"].teachers.items():
        assert not any(p.requires_grad for p in t.parameters())
        for k, v in t.state_dict().items():
            assert torch.equal(v, before[m][k]), (m, k)
    assert ckd_module  # the module is the one patched


def test_ckd_logs_weights_and_needs_two_modalities(tmp_path):
    ds = make_dataset(n_users=40, n_items=30)
    r = train("vbpr", ds, seeds=[2], set={"epochs": 2, "ckd.n_generic": 32}, out=tmp_path, distill=["ckd"])[0]
    import pandas as pd

    hist = pd.read_csv(r.run_dir / "history.csv")
    assert {"ckd_lambda_image", "ckd_lambda_text", "ckd_specific", "ckd_generic"} <= set(hist.columns)
    assert (hist["ckd_lambda_image"] + hist["ckd_lambda_text"]).round(5).eq(1.0).all()
    one = make_dataset(n_users=20, n_items=20, modalities={"text": 5})
    with pytest.raises(ConfigError, match="at least two"):
        train("vbpr", one, seeds=[1], set={"epochs": 1}, out=None, distill=["ckd"])


@pytest.mark.slow
def test_per_modality_diagnostics_find_the_teachers(tmp_path):
    from distillrec.experiment.api import load_run
    from distillrec.experiment.diagnostics import per_modality
    from tests.conftest import write_mmrec

    folder = write_mmrec(make_dataset(n_users=40, n_items=30), tmp_path / "data")
    settings = {"epochs": 2, "ckd.n_generic": 32}
    distilled = train("vbpr", folder, seeds=[1], set=settings, out=tmp_path / "runs", distill=["ckd"])[0]
    rows = per_modality(load_run(distilled.run_dir))
    assert [r["modality"] for r in rows][1:] == ["image", "text"]
    assert all(r["teacher"] is not None for r in rows[1:])
    # a plain run of the same backbone and settings finds the same cached teachers by content hash
    plain = train("vbpr", folder, seeds=[1], set={"epochs": 2}, out=tmp_path / "runs")[0]
    rows = per_modality(load_run(plain.run_dir))
    assert all(r["teacher"] is not None for r in rows[1:])
    assert rows[1]["model"] != rows[2]["model"]


@pytest.mark.slow
def test_ckd_plugin_reports_each_modality_and_the_reweighting(tmp_path):
    """The CKD section of an experiment report: per-modality recall inside both arms, teachers, λ_m."""
    from distillrec.experiment.definition import make_definition
    from distillrec.experiment.engine import Engine
    from distillrec.experiment.report import comparisons, markdown
    from tests.conftest import write_mmrec

    folder = write_mmrec(make_dataset(n_users=40, n_items=30), tmp_path / "data")
    d = make_definition(
        {
            "datasets": [folder],
            "backbones": ["vbpr"],
            "methods": ["ckd"],
            "budget": 1,
            "selection_seeds": [11],
            "seeds": [1, 2],
            "controls": True,
            "bootstrap": 200,
            "set": {"epochs": 2, "ckd.n_generic": 32},
            "out": str(tmp_path / "exp"),
        }
    )
    result = Engine(d).run()
    comps = comparisons(result)
    assert [c.arm for c in comps] == ["ckd", "ckd:self_distillation", "ckd:teacher_ensemble"]
    ensemble = comps[2]
    assert len(ensemble.values("distilled")) == 2 and ensemble.stats["n_users"] > 0
    low, high = ensemble.stats["ci95"]  # a bootstrap interval over the test users, not a placeholder
    assert math.isfinite(low) and math.isfinite(high) and low <= high
    assert ensemble.values("distilled") != comps[0].values("plain")
    extras = comps[0].distilled_extras("ckd")
    assert len(extras) == 2 and set(extras[0]["inside"]) == {"image", "text"}
    text = markdown(result, comps, "test")
    assert "| vbpr | ckd | image |" in text and "λ_m" in text
    assert "Controls (relative changes" in text and "self_distillation" in text.split("Controls (")[1]
    # the ensemble's trial count (the tuning stage's only) is explained where the protocol is
    assert "`ckd:teacher_ensemble` is evaluated, not trained" in text.split("## Tuned")[0]
    assert "Holm over the 1 method comparison alone (the 2 control arms" in text
    # a run with distillation on: its teachers are found and λ_m is read from its history
    from distillrec.experiment.plugins import ckd_extract

    run = train(
        "vbpr", folder, seeds=[1], set={"epochs": 2, "ckd.n_generic": 32}, out=tmp_path / "r", distill="ckd"
    )[0]
    summary = ckd_extract(run.run_dir, run.metrics)
    assert set(summary["teacher"]) == set(summary["lambda"]) == {"image", "text"}
    assert sum(summary["lambda"].values()) == pytest.approx(1.0, abs=1e-5)
