"""SGFD fidelity (issue 16, items 1 and 2): the student slot before the extractor's final activation, and a
teacher at least two hidden layers deep whatever the input width."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from distillrec.distill.sgfd import SGFD, Teacher, shrinking_widths, teacher_widths
from distillrec.models.base import Batch
from distillrec.models.registry import build_model, model_class, model_names
from tests.conftest import make_dataset
from tests.test_next_item import make_seq_dataset

FEATURE_MODELS = [m for m in model_names("topk") if model_class(m).uses_features and model_class(m).trainable]
SEQ_FEATURE_MODELS = [
    m for m in model_names("next-item") if model_class(m).uses_features and model_class(m).trainable
]
ENDS_IN_ACTIVATION = {"grcn", "egogcn"}  # leaky(W x): their slot is W x


def _prepared(ds, model: str = "vbpr", **options) -> SGFD:
    sgfd = SGFD(SGFD.Options(**options))
    sgfd.prepare(ds, lambda: build_model(model, ds), model=model)
    return sgfd


# --------------------------------------------------------------------------- 2. teacher depth
@pytest.mark.parametrize(
    "d_in,d,expected",
    [
        (4096, 128, [4096, 1024, 256, 128]),  # the paper's teacher: the ÷4 rule is already deep enough
        (4096, 64, [4096, 1024, 256, 64]),
        (512, 64, [512, 256, 128, 64]),  # ÷4 alone: [512, 128, 64]
        (384, 64, [384, 211, 116, 64]),  # ÷4 alone: [384, 96, 64]
        (1000, 64, [1000, 400, 160, 64]),
        (128, 128, [128, 128, 128, 128]),  # MAML: ÷4 alone is one Linear, the student's own shape
        (32, 64, [32, 64, 64, 64]),  # an input narrower than the output
        (13, 7, [13, 11, 9, 7]),
    ],
)
def test_teacher_has_at_least_two_hidden_layers_whatever_the_widths(d_in, d, expected):
    widths = teacher_widths(d_in, d)
    assert widths == expected
    assert len(widths) - 2 >= 2 and all(w >= d for w in widths[1:-1])
    teacher = Teacher(d_in, d)
    assert [layer.in_features for layer in teacher.layers] + [d] == widths
    out = teacher(torch.randn(5, d_in))
    assert out.shape == (5, d)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_teacher_widths_explicit_legacy_and_recorded():
    ds = make_dataset(modalities={"image": 300, "text": 9}, n_labels=3)  # VBPR's d = 64
    deep = _prepared(ds, kd_weight=1.0)
    assert deep.teacher_layer_widths == {"image": teacher_widths(300, 64), "text": [9, 64, 64, 64]}
    assert deep.summary()["teacher_widths"] == deep.teacher_layer_widths
    assert [len(t.layers) for t in deep.teachers.values()] == [3, 3]
    legacy = _prepared(ds, kd_weight=1.0, teacher_depth="legacy")
    assert legacy.teacher_layer_widths == {"image": [300, 75, 64], "text": [9, 64]}
    assert legacy.teacher_layer_widths == {
        "image": shrinking_widths(300, 64),
        "text": shrinking_widths(9, 64),
    }
    explicit = _prepared(ds, kd_weight=1.0, teacher_hidden=[128, 96, 80])
    assert explicit.teacher_layer_widths == {"image": [300, 128, 96, 80, 64], "text": [9, 128, 96, 80, 64]}
    assert [t.layers[-1].out_features for t in explicit.teachers.values()] == [64, 64]
    with pytest.raises(ValidationError, match="teacher_depth"):
        SGFD.Options(teacher_hidden=[32, 32], teacher_depth="legacy")
    with pytest.raises(ValidationError):
        SGFD.Options(teacher_hidden=[0])


# --------------------------------------------------------------------------- 1. student slot
@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_pre_activation_slot_of_every_backbone(name, one_thread):
    """Same modalities and shapes as the extractor's output; W x under the leaky ReLU where the extractor
    ends in one, the output itself elsewhere."""
    ds = make_dataset(n_users=20, n_items=30, modalities={"photo": 21, "review": 10})
    torch.manual_seed(0)
    model = build_model(name, ds)
    model.fit(ds)
    model.eval()
    with torch.no_grad():
        out = model.modality_embeddings(ds.features)
        pre = model.pre_activation_embeddings(ds.features)
    assert set(pre) == set(out) == {"photo", "review"}
    for m in out:
        assert pre[m].shape == out[m].shape
        if name in ENDS_IN_ACTIVATION:
            assert torch.equal(F.leaky_relu(pre[m]), out[m])
            assert (pre[m] < 0).any() and not torch.equal(pre[m], out[m])
        else:
            assert torch.equal(pre[m], out[m])


@pytest.mark.parametrize("name", SEQ_FEATURE_MODELS)
def test_next_item_models_slot_is_their_output(name, one_thread):
    ds = make_seq_dataset(n_users=20, n_items=30, modalities={"photo": 21, "review": 10})
    torch.manual_seed(0)
    model = build_model(name, ds)
    with torch.no_grad():
        out, pre = model.modality_embeddings(ds.features), model.pre_activation_embeddings(ds.features)
    assert set(pre) == set(out) and all(torch.equal(pre[m], out[m]) for m in out)


def _distil_slot_alone(slot: str, steps: int = 500) -> tuple[dict[str, float], float]:
    """Optimise only GRCN's feature extractor on SGFD's two distillation terms toward a frozen teacher.

    The teacher is the official code's linear chain (`activation: false`), so its targets are within reach
    of a Linear extractor at its pre-activation; more items (60) than input widths (13, 7) leave the output
    slot no room to fit each item on its own. Returns the final terms and the targets' negative share.
    """
    ds = make_dataset(n_users=30, n_items=60, modalities={"image": 13, "text": 7}, n_labels=4)
    torch.manual_seed(0)
    sgfd = _prepared(ds, "grcn", kd_weight=1.0, ce_weight=0.0, activation=False, student_slot=slot)
    sgfd.requires_grad_(False)  # fixed targets, fixed shared classifiers
    student = build_model("grcn", ds)
    student.requires_grad_(False)
    student.encoder.requires_grad_(True)  # the student slot alone
    items = torch.arange(ds.n_items)
    batch = Batch(torch.zeros_like(items), items, items)
    targets, _ = sgfd.teacher_terms(items, supervise=False)
    negative = min(float((t < 0).float().mean()) for t in targets.values())
    opt = torch.optim.Adam(student.encoder.parameters(), lr=1e-2)
    for _ in range(steps):
        terms = sgfd.loss(student, None, batch, 1)
        opt.zero_grad()
        (terms["sgfd_feature"] + terms["sgfd_response"]).backward()
        opt.step()
    with torch.no_grad():
        terms = sgfd.loss(student, None, batch, 1)
    return {k: v.item() for k, v in terms.items()}, negative


def test_distillation_reaches_zero_before_the_activation_and_not_after(one_thread):
    before, negative = _distil_slot_alone("pre_activation")
    assert negative > 0.3  # signed targets: a third or more of their coordinates are negative
    assert before["sgfd_feature"] < 1e-6
    assert abs(before["sgfd_response"]) < 1e-5
    after, _ = _distil_slot_alone("output")
    # after the leaky ReLU the negative coordinates are out of reach: both terms stay far from zero
    # (they plateau near 3.5e-3 and 1.2e-4 however long Adam runs)
    assert after["sgfd_feature"] > 1e-3
    assert after["sgfd_response"] > 1e-5
    assert after["sgfd_feature"] > 1e3 * before["sgfd_feature"]
