"""SGFD: teacher shapes for odd widths, each loss term by hand, unknown labels, inference, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from distillrec.distill.sgfd import SGFD, Teacher, labelled_ce, response_kd, shrinking_widths
from distillrec.errors import ConfigError
from distillrec.experiment.api import load_run, train
from distillrec.training.checkpoint import load_checkpoint
from tests.conftest import make_dataset, write_mmrec


@pytest.mark.parametrize(
    "d_in,d,expected",
    [
        (4096, 128, [4096, 1024, 256, 128]),
        (1000, 64, [1000, 250, 64]),
        (387, 64, [387, 96, 64]),
        (50, 64, [50, 64]),
        (257, 64, [257, 64]),
    ],
)
def test_teacher_widths_any_input(d_in, d, expected):
    assert shrinking_widths(d_in, d) == expected
    out = Teacher(d_in, d)(torch.randn(5, d_in))
    assert out.shape == (5, d)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_response_kd_by_hand():
    t = torch.tensor([[2.0, 0.0, -1.0]])
    s = torch.tensor([[0.5, 0.5, 0.0]])
    tau = 2.0
    pt = [math.exp(v / tau) for v in t[0].tolist()]
    ps = [math.exp(v / tau) for v in s[0].tolist()]
    pt = [v / sum(pt) for v in pt]
    ps = [v / sum(ps) for v in ps]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    assert response_kd(t, s, tau).item() == pytest.approx(tau**2 * kl, abs=1e-6)
    assert response_kd(t, t, tau).item() == pytest.approx(0.0, abs=1e-7)


def test_unknown_labels_are_ignored_by_the_ce_terms():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [5.0, -5.0]])
    labels = torch.tensor([0, -1, 1])
    expected = (F.cross_entropy(logits[[0]], labels[[0]]) + F.cross_entropy(logits[[2]], labels[[2]])) / 2
    assert labelled_ce(logits, labels).item() == pytest.approx(expected.item())
    assert labelled_ce(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def _prepared(ds, **options):
    from distillrec.models.registry import build_model

    sgfd = SGFD(SGFD.Options(**options))
    sgfd.prepare(ds, lambda: build_model("vbpr", ds), model="vbpr")
    return sgfd, build_model("vbpr", ds)


def test_loss_terms_by_hand_and_teacher_detached():
    ds = make_dataset(modalities={"image": 13, "text": 7}, n_labels=4)
    sgfd, student = _prepared(ds, ce_weight=0.5, kd_weight=2.0, t_decay=3.0)
    from distillrec.models.base import Batch

    batch = Batch(torch.tensor([0, 1]), torch.tensor([2, 5]), torch.tensor([7, 5]))
    out = sgfd.loss(student, student.represent(ds.features), batch, 1)
    items = torch.tensor([2, 5, 7])
    s_all = student.modality_embeddings(ds.features)
    t = {m: sgfd.teachers[m](ds.features[m][items]) for m in ("image", "text")}
    y = ds.labels[items]
    ce = sum(labelled_ce(sgfd.classifiers[m](t[m]), y) for m in t) / 2
    ce = ce + labelled_ce(sgfd.fusion(torch.cat([t["image"], t["text"]], -1)), y)
    mse = sum(F.mse_loss(F.normalize(s_all[m][items], dim=-1), t[m]) for m in t) / 2
    kl = (
        sum(
            response_kd(
                sgfd.classifiers[m](t[m]), sgfd.classifiers[m](F.normalize(s_all[m][items], dim=-1)), 3.0
            )
            for m in t
        )
        / 2
    )
    assert out["sgfd_ce"].item() == pytest.approx(0.5 * ce.item(), rel=1e-5)
    assert out["sgfd_feature"].item() == pytest.approx(2.0 * mse.item(), rel=1e-5)
    assert out["sgfd_response"].item() == pytest.approx(2.0 * kl.item(), rel=1e-5)
    # knowledge flows teacher -> student: the distillation terms give the teacher no gradient
    (out["sgfd_feature"] + out["sgfd_response"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in sgfd.teachers.parameters())
    grads = [p.grad for p in student.proj.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_no_labels_is_a_clear_error_with_the_label_free_option(tmp_path):
    ds = make_dataset(n_labels=0)
    with pytest.raises(ConfigError, match="label_free"):
        train("vbpr", ds, seeds=[1], set={"epochs": 1}, out=None, distill=["sgfd"])
    folder = write_mmrec(ds, tmp_path / "d")  # a run loads its dataset back from where it lies
    r = train(
        "vbpr",
        folder,
        seeds=[1],
        set={"epochs": 2, "sgfd.label_free": True},
        out=tmp_path / "r",
        distill=["sgfd"],
    )[0]
    # feature distillation only: reconstruction-supervised teachers, no response (label) term
    hist = pd.read_csv(r.run_dir / "history.csv")
    assert "sgfd_response" not in hist.columns
    assert (hist["sgfd_feature"] > 0).all() and np.isfinite(hist["sgfd_feature"]).all()
    # the recorded test metric is the one the run's best weights give when evaluated again
    assert load_run(r.run_dir).evaluate("test")["recall@20"] == pytest.approx(r.metrics["test"]["recall@20"])


def test_teacher_absent_at_inference_and_checkpoints_round_trip(tmp_path):
    folder = write_mmrec(
        make_dataset(n_users=40, n_items=30, modalities={"image": 17, "text": 9}), tmp_path / "d"
    )
    r = train(
        "vbpr",
        folder,
        seeds=[1],
        set={"epochs": 3, "sgfd.kd_weight": 1.0},
        out=tmp_path / "r",
        distill=["sgfd"],
    )[0]
    best = load_checkpoint(r.run_dir / "best.pt")["model"]
    assert not any(k.startswith(("teachers", "classifiers", "fusion")) for k in best)
    last = load_checkpoint(r.run_dir / "last.pt")
    assert any(k.startswith("teachers.") for k in last["distiller"])  # the jointly trained teacher resumes
    run = load_run(r.run_dir)  # a plain VBPR: no SGFD module needed to serve it
    assert type(run.model).__name__ == "VBPR"
    assert run.evaluate("test") == pytest.approx(r.metrics["test"])


def test_pretrained_teacher_is_frozen():
    ds = make_dataset(n_labels=3)
    sgfd, _ = _prepared(ds, teacher="pretrained", pretrain_epochs=2)
    assert not any(p.requires_grad for p in sgfd.parameters())


def test_composing_methods_is_refused_with_a_reason():
    ds = make_dataset()
    with pytest.raises(ConfigError, match="sgfd\\+ckd"):
        train("vbpr", ds, seeds=[1], set={"epochs": 1}, out=None, distill=["sgfd", "ckd"])


def test_probe_detects_label_information():
    from distillrec.experiment.probe import majority_rate, probe_accuracy

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    informative = F.one_hot(labels, 4).float() + 0.3 * torch.randn(400, 4, generator=g)
    noise = torch.randn(400, 4, generator=g)
    assert probe_accuracy(informative, labels) > 0.9
    assert probe_accuracy(noise, labels) < 0.5
    assert 0.2 < majority_rate(labels) < 0.4


@pytest.mark.slow
def test_probe_does_not_depend_on_the_thread_count(scientific):
    """Probes of the real raw features: one optimum each, so one accuracy whatever the threads."""
    from distillrec.experiment.probe import majority_rate, probe_accuracy

    before = torch.get_num_threads()
    try:
        for f in scientific.features.values():
            accs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                accs.append(probe_accuracy(f, scientific.labels))
            assert accs[0] == accs[1]
            assert accs[0] > majority_rate(scientific.labels) + 0.1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_sgfd_plugin_reports_probe_accuracy_of_both_arms(tmp_path):
    from distillrec.experiment.definition import make_definition
    from distillrec.experiment.engine import Engine
    from distillrec.experiment.report import comparisons, markdown

    folder = write_mmrec(make_dataset(n_users=40, n_items=60, n_labels=3), tmp_path / "data")
    d = make_definition(
        {
            "datasets": [folder],
            "backbones": ["vbpr"],
            "methods": ["sgfd"],
            "budget": 1,
            "selection_seeds": [11],
            "seeds": [1, 2],
            "controls": False,
            "bootstrap": 200,
            "set": {"epochs": 2},
            "out": str(tmp_path / "exp"),
        }
    )
    result = Engine(d).run()
    comps = comparisons(result)
    for extras in (comps[0].plain_extras("sgfd"), comps[0].distilled_extras("sgfd")):
        assert len(extras) == 2 and all(0 <= a <= 1 for e in extras for a in e["probe"].values())
    assert "| vbpr | sgfd | image |" in markdown(result, comps, "test")


def test_category_overlap_by_hand():
    import scipy.sparse as sp

    from distillrec.experiment.probe import category_overlap

    labels = torch.tensor([0, 0, 1, 2, -1])
    train = sp.csr_matrix(
        ([1, 1], ([0, 1], [0, 2])), shape=(2, 5)
    )  # user 0 met category 0, user 1 category 1
    test = sp.csr_matrix(([1, 1, 1], ([0, 1, 1], [1, 3, 4])), shape=(2, 5))  # item 4 has no label: ignored
    observed, expected = category_overlap(train, test, labels)
    assert observed == pytest.approx(0.5)  # user 0's item 1 (cat 0) yes; user 1's item 3 (cat 2) no
    # a random labelled item: category 0 with 2/4, category 1 with 1/4 -> (0.5 + 0.25) / 2
    assert expected == pytest.approx(0.375)
