"""Distillers' declared search spaces, off points and control arms: the off point trains the plain backbone,
SGFD's shuffled labels, CKD's self-distillation teacher and its teachers' ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillrec.distill.base import Distiller
from distillrec.distill.cdl import CDL
from distillrec.distill.ckd import CKD, FULL, teacher_ensemble
from distillrec.distill.registry import build_distiller
from distillrec.distill.sgfd import SGFD
from distillrec.errors import ConfigError
from distillrec.experiment.api import train
from distillrec.experiment.spec import route
from distillrec.models.base import Batch
from distillrec.models.registry import build_model
from distillrec.models.space import grid, is_finite, parse_space
from distillrec.training.checkpoint import load_checkpoint
from tests.conftest import make_dataset
from tests.test_next_item import make_seq_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

DISTILLERS = (CKD, SGFD, CDL)
WEIGHTS = {
    CKD: ("lambda_kd", "lambda_g"),
    SGFD: ("ce_weight", "kd_weight"),
    CDL: ("holistic_weight", "code_weight"),
}


# --------------------------------------------------------------------------- declarations
def test_declared_values():
    assert CKD.search_space == {"lambda_kd": [0, 1e-3, 1e-2, 1e-1, 1], "lambda_g": [0, 1, 5, 10]}
    assert SGFD.search_space == {
        "ce_weight": [0.01, 0.1, 1],  # no 0: one weight 0 is not SGFD, the off point is tried beside
        "kd_weight": [0.01, 0.1, 1],
        "t_decay": [5, 10, 20, 50, 100],
    }
    assert CDL.search_space == {
        "holistic_weight": [0, 0.1, 0.5, 1, 5, 10],
        "code_weight": [0, 0.1, 0.5, 1, 5, 10],
    }
    assert CKD.controls == {"self_distillation": {"teacher": "full"}}
    assert SGFD.controls == {"shuffled_labels": {"labels": "shuffled"}}
    assert CDL.controls == {"warmup_only": {"holistic_weight": 0, "code_weight": 0}}
    assert CDL.off_point["async_warmup"] is False  # the warm-up is CDL's own option and part of the method


@pytest.mark.parametrize("cls", DISTILLERS, ids=lambda c: c.name)
def test_spaces_are_finite_valid_and_name_the_off_point(cls):
    space = parse_space(cls.search_space, cls.name)
    assert is_finite(space)
    for w in WEIGHTS[cls]:  # SGFD's two weights are one method's halves: neither is searched at 0
        assert (0 in space[w].choices) is (cls is not SGFD)
    for point in grid(space):  # every point is a valid set of options
        cls.Options(**point)
    off = cls.Options(**cls.off_point)
    assert cls.at_off_point(off) and not cls.at_off_point(cls.Options())
    assert set(space) <= set(cls.off_point)  # one point, not a family of equivalent ones
    assert all(cls.off_point[k] in space[k].choices for k in space) is (cls is not SGFD)
    assert all(getattr(off, w) == 0 for w in WEIGHTS[cls])
    for fixed in cls.controls.values():
        cls.Options(**fixed)


def test_base_declares_empty_spaces_and_no_op_hooks():
    d = Distiller()
    assert (Distiller.search_space, Distiller.off_point, Distiller.controls) == ({}, {}, {})
    assert not Distiller.at_off_point(object())
    assert d.lr_multipliers(1) == {} and d.summary() == {} and d.on_epoch_end(None, 1) == {}


# --------------------------------------------------------------------------- off points
def _state(run_dir):
    return load_checkpoint(run_dir / "best.pt")["model"]


@pytest.mark.parametrize(
    "model,cls",
    [
        ("vbpr", CKD),
        ("vbpr", SGFD),
        ("bm3", SGFD),
        ("maml", SGFD),
        ("grcn", SGFD),
        ("sasrec", CDL),
        ("mmsr", CDL),
    ],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_the_off_point_trains_the_plain_backbone(tmp_path, model, cls):
    """Bit for bit: same weights and metrics as the plain run (bm3 and the sequential backbones draw dropout
    from the global generator, so a distiller that consumed it while preparing would show here)."""
    ds = make_seq_dataset() if cls is CDL else make_dataset(n_users=40, n_items=30)
    settings = {"epochs": 2, **({"modality_input": True} if model == "sasrec" else {})}
    plain = train(model, ds, seeds=[3], set=settings, out=tmp_path)[0]
    off = {f"{cls.name}.{k}": v for k, v in cls.off_point.items()}
    distilled = train(model, ds, seeds=[3], set={**settings, **off}, out=tmp_path, distill=cls.name)[0]
    assert distilled.metrics["valid"] == plain.metrics["valid"]
    assert distilled.metrics["test"] == plain.metrics["test"]
    a, b = _state(plain.run_dir), _state(distilled.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    header = (distilled.run_dir / "history.csv").read_text().splitlines()[0]
    assert cls.name not in header.replace("forget_corr", "").replace("id_corr", "")  # no loss term logged
    assert not (tmp_path / ds.name / "_teachers").exists()  # CKD prepares no teacher at its off point


def test_off_point_losses_are_empty_and_cdl_keeps_only_the_warmup_in_its_control():
    ds = make_seq_dataset()
    groups = route({f"cdl.{k}": v for k, v in CDL.off_point.items()}, "cdl")
    off = build_distiller(
        ["cdl"],
        ds,
        "mmsr",
        groups,
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model("mmsr", ds),
    )
    assert off.lr_multipliers(1) == {} and not list(off.parameters())
    control = build_distiller(
        ["cdl"],
        ds,
        "mmsr",
        route({"cdl.holistic_weight": 0, "cdl.code_weight": 0}, "cdl"),
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model("mmsr", ds),
    )
    assert control.lr_multipliers(1) == {"modality": 0.25}
    student = build_model("mmsr", ds)
    from tests.test_cdl import _batch

    batch = _batch(ds)
    rep = student.represent(ds.features)
    assert off.loss(student, rep, batch, 1) == {} and control.loss(student, rep, batch, 1) == {}
    # one weight 0: only the other term is computed
    hol_only = build_distiller(
        ["cdl"],
        ds,
        "mmsr",
        route({"cdl.code_weight": 0, "cdl.sample_pairs": 2000}, "cdl"),
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model("mmsr", ds),
    )
    assert set(hol_only.loss(student, rep, batch, 1)) == {"cdl_hol_image", "cdl_hol_text"}


# --------------------------------------------------------------------------- SGFD shuffled labels
def _sgfd(ds, **options) -> SGFD:
    groups = route({f"sgfd.{k}": v for k, v in options.items()}, "sgfd")
    return build_distiller(
        ["sgfd"],
        ds,
        "vbpr",
        groups,
        torch.device("cpu"),
        None,
        backbone_factory=lambda: build_model("vbpr", ds),
    )


def test_shuffled_labels_keep_the_histogram_and_are_one_fixed_permutation():
    ds = make_dataset(n_items=60, n_labels=5)
    given = ds.labels.clone()
    assert (given == -1).any()
    one, two = _sgfd(ds, labels="shuffled"), _sgfd(ds, labels="shuffled")
    assert torch.equal(one.labels, two.labels) and torch.equal(one.label_permutation, two.label_permutation)
    assert not torch.equal(one.label_permutation, torch.arange(ds.n_items))
    assert not torch.equal(one.labels, given)
    assert torch.equal(torch.bincount(one.labels + 1), torch.bincount(given + 1))  # −1 counted too
    assert torch.equal(one.labels, given[one.label_permutation])
    assert torch.equal(ds.labels, given)  # the dataset is left alone
    torch.manual_seed(123)  # the run's seed plays no part
    assert torch.equal(_sgfd(ds, labels="shuffled").labels, one.labels)
    assert not torch.equal(_sgfd(ds, labels="shuffled", label_shuffle_seed=1).labels, one.labels)
    assert one.summary()["labels"] == "shuffled" and one.summary()["labels_changed"] > 0
    assert torch.equal(_sgfd(ds).labels, given) and _sgfd(ds).label_permutation is None
    with pytest.raises(ConfigError, match="shuffled"):
        _sgfd(ds, labels="shuffled", label_free=True)


# --------------------------------------------------------------------------- CKD self-distillation
def _ckd(ds, out, **options) -> CKD:
    groups = route({"train.epochs": 2, **{f"ckd.{k}": v for k, v in options.items()}}, "ckd")
    return build_distiller(
        ["ckd"],
        ds,
        "vbpr",
        groups,
        torch.device("cpu"),
        out,
        backbone_factory=lambda: build_model("vbpr", ds, groups["model"]),
        seed=1,
    )


def test_self_distillation_teacher_is_the_plain_run_checkpoint(tmp_path):
    ds = make_dataset(n_users=40, n_items=30)
    ckd = _ckd(ds, tmp_path, teacher="full", lambda_kd=0.1, n_generic=32)
    assert list(ckd.teachers) == [FULL] and ckd.trained_now == {FULL: True}
    run_dir = tmp_path / ckd.teacher_dirs[FULL]
    assert run_dir.parent.name.startswith("vbpr-full-") and run_dir.parent.parent.name == "_teachers"
    best = load_checkpoint(run_dir / "best.pt")["model"]
    teacher = ckd.teachers[FULL]
    assert type(teacher).__name__ == "VBPR" and not any(p.requires_grad for p in teacher.parameters())
    assert best.keys() == teacher.state_dict().keys()
    assert all(torch.equal(v, best[k]) for k, v in teacher.state_dict().items())
    again = _ckd(ds, tmp_path, teacher="full", lambda_kd=0.1, n_generic=32)  # from the cache
    assert again.trained_now == {FULL: False}
    assert all(torch.equal(v, best[k]) for k, v in again.teachers[FULL].state_dict().items())
    # the same weights as a plain run of the backbone with the same settings and seed
    plain = train("vbpr", ds, seeds=[1], set={"epochs": 2}, out=tmp_path / "plain")[0]
    assert all(torch.equal(v, best[k]) for k, v in _state(plain.run_dir).items())
    # one teacher, weight 1: both terms between the student's and the teacher's full margins
    student = build_model("vbpr", ds)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    rep = student.represent(ckd.features)
    terms = ckd.loss(student, rep, batch, 1)
    assert set(terms) == {"ckd_specific", "ckd_generic"}
    with torch.no_grad():
        t = teacher.represent(ckd.features)
        dt = teacher.pair_score(t, batch.users, batch.pos) - teacher.pair_score(t, batch.users, batch.neg)
    ds_ = student.pair_score(rep, batch.users, batch.pos) - student.pair_score(rep, batch.users, batch.neg)
    assert terms["ckd_specific"].item() == pytest.approx(0.1 * torch.relu(dt - ds_).mean().item(), rel=1e-5)
    sum(terms.values()).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert ckd.on_epoch_end(student, 1) == {}  # no re-weighting to log
    # at λ_kd = 0: no term (zero loss, no gradient) and no teacher prepared
    off = _ckd(ds, tmp_path / "off", teacher="full", lambda_kd=0.0)
    assert off.loss(student, student.represent(ds.features), batch, 1) == {}
    assert off.teachers == {} and not (tmp_path / "off").exists()


# --------------------------------------------------------------------------- CKD teacher ensemble
def test_teacher_ensemble_is_evaluated_like_a_run(tmp_path):
    import json

    from distillrec.experiment.api import resolve_train_config

    ds = make_dataset(n_users=40, n_items=30)
    cfg = resolve_train_config("vbpr", {"epochs": 2})
    before = torch.get_rng_state()
    res = teacher_ensemble(ds, "vbpr", {}, cfg, 1, "cpu", tmp_path)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(res) >= {"valid", "test", "per_user_test", "users"}
    for split in ("valid", "test"):
        assert res[split] and all(0.0 <= v <= 1.0 for v in res[split].values())
    users = res["users"]
    assert isinstance(users, np.ndarray) and np.array_equal(
        users, np.flatnonzero(np.diff(ds.test.indptr) > 0)
    )
    assert set(res["per_user_test"]) == set(res["test"])
    for k, v in res["per_user_test"].items():
        assert isinstance(v, np.ndarray) and v.shape == users.shape
        assert v.mean() == pytest.approx(res["test"][k], abs=1e-6)
    for m, path in res["teachers"].items():
        single = json.loads((tmp_path / path / "metrics.json").read_text())["test"]
        assert single != res["test"], m
    # the same teachers a CKD run of these settings and seed distils from: it finds them cached
    ckd = _ckd(ds, tmp_path, n_generic=32)
    assert ckd.trained_now == {"image": False, "text": False}
    assert ckd.teacher_dirs == res["teachers"]
