"""Plug-and-play: CKD and SGFD wrap every registered backbone that learns from item features.

Free modality names and widths that are not multiples of 4, so nothing can lean on `image`/`text` or on
the widths of the bundled data. Per backbone: SGFD's distillation terms reach the backbone's own feature
extractor (and leave the teacher alone), on top-K and next-item models alike; a short CKD run trains its
uni-modal teachers and logs one counterfactual weight per modality that sum to one. A method that does not
apply to a model's task is refused in one line before any run folder is made.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from distillrec.data.next_item import PrefixSampler
from distillrec.distill.sgfd import SGFD
from distillrec.errors import ConfigError
from distillrec.experiment.api import train
from distillrec.models.base import Batch
from distillrec.models.registry import build_model, model_class, model_names
from tests.conftest import make_dataset
from tests.test_next_item import make_seq_dataset

STUDENTS = [m for m in model_names("topk") if model_class(m).uses_features and model_class(m).trainable]
SEQ_STUDENTS = [
    m for m in model_names("next-item") if model_class(m).uses_features and model_class(m).trainable
]
MODALITIES = {"photo": 21, "review": 10}


def _labelled_seq_dataset():
    ds = make_seq_dataset(n_users=30, n_items=40, modalities=MODALITIES)
    labels = torch.arange(ds.n_items) % 3
    labels[::7] = -1
    return dataclasses.replace(ds, labels=labels)


@pytest.mark.parametrize("name", STUDENTS)
def test_sgfd_distils_into_the_backbones_own_extractor(name):
    ds = make_dataset(n_users=30, n_items=40, modalities=MODALITIES, n_labels=3)
    torch.manual_seed(0)
    sgfd = SGFD(SGFD.Options(kd_weight=1.0))
    sgfd.prepare(ds, lambda: build_model(name, ds), model=name)
    student = build_model(name, ds)
    student.fit(ds)
    student.train()
    assert set(sgfd.teachers) == set(MODALITIES)
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))
    terms = sgfd.loss(student, student.represent(ds.features), batch, 1)
    assert all(torch.isfinite(v) for v in terms.values())
    (terms["sgfd_feature"] + terms["sgfd_response"]).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), name
    assert any(g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in sgfd.teachers.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDENTS)
def test_ckd_trains_on_every_backbone(name, tmp_path):
    ds = make_dataset(n_users=30, n_items=40, modalities=MODALITIES)
    r = train(
        name,
        ds,
        seeds=[1],
        set={"epochs": 2, "eval_every": 1, "ckd.n_generic": 32},
        out=tmp_path,
        distill=["ckd"],
    )[0]
    assert set(r.metrics["distill_info"]["teachers"]) == set(MODALITIES)
    hist = pd.read_csv(r.run_dir / "history.csv")
    weights = hist[[f"ckd_lambda_{m}" for m in MODALITIES]].sum(axis=1)
    assert weights.round(5).eq(1.0).all()
    assert torch.isfinite(torch.tensor(hist["loss_total"].to_numpy())).all()


@pytest.mark.parametrize("name", SEQ_STUDENTS)
def test_sgfd_distils_into_a_next_item_models_modality_tables(name):
    ds = _labelled_seq_dataset()
    torch.manual_seed(0)
    sgfd = SGFD(SGFD.Options(kd_weight=1.0))
    sgfd.prepare(ds, lambda: build_model(name, ds), model=name)
    student = build_model(name, ds)
    student.train()
    batch = PrefixSampler(ds.sequences, ds.n_items, "train").batch(np.arange(8))
    terms = sgfd.loss(student, student.represent(ds.features), batch, 1)
    assert all(torch.isfinite(v) for v in terms.values())
    (terms["sgfd_feature"] + terms["sgfd_response"]).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), name
    assert any(g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in sgfd.teachers.parameters())


def test_sgfd_trains_a_next_item_model_end_to_end(tmp_path):
    r = train(
        "sasrm",
        _labelled_seq_dataset(),
        seeds=[1],
        set={"epochs": 2, "eval_every": 1},
        out=tmp_path,
        distill=["sgfd"],
    )[0]
    hist = pd.read_csv(r.run_dir / "history.csv")
    assert {"sgfd_ce", "sgfd_feature", "sgfd_response"} <= set(hist.columns)
    assert torch.isfinite(torch.tensor(hist["loss_total"].to_numpy())).all()


def test_sgfd_refuses_a_next_item_model_without_modality_tables():
    ds = _labelled_seq_dataset()
    with pytest.raises(ConfigError, match="feature extractor"):
        SGFD(SGFD.Options()).prepare(ds, lambda: build_model("sasrec", ds), model="sasrec")


@pytest.mark.parametrize(
    ("method", "model", "dataset", "says"),
    [
        ("ckd", "sasrm", _labelled_seq_dataset, "ckd works on top-K"),
        ("cdl", "vbpr", make_dataset, "cdl works on next-item"),
        ("forgetting", "vbpr", make_dataset, "forgetting works on next-item"),
    ],
)
def test_a_method_for_another_task_is_refused_before_any_run_folder(method, model, dataset, says, tmp_path):
    with pytest.raises(ConfigError, match=says):
        train(model, dataset(), seeds=[1], set={"epochs": 1}, out=tmp_path, distill=[method])
    assert not any(tmp_path.iterdir())
