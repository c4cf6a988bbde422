"""The contracts distillers rely on, written down (issue 16, last part): every hook declared on `Distiller`
with a no-op default and called plainly; each method's needs of a backbone a Protocol checked against the
model's class (and its resolved hyperparameters) by `check_distill`, before any run folder is made; the
backbone's epoch hook, with FREEDOM's pruning redrawn once per epoch and resumable bit for bit; no distiller
names a backbone."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import distillrec.distill as distill_pkg
from distillrec.data.next_item import PrefixSampler
from distillrec.distill.base import Distiller
from distillrec.distill.ckd import HasCounterfactualView
from distillrec.distill.forgetting import HasCorrelationTables
from distillrec.distill.registry import check_distill, distiller_class, distiller_names
from distillrec.distill.sgfd import HasModalityEmbeddings, batch_items
from distillrec.errors import ConfigError
from distillrec.experiment.api import train
from distillrec.experiment.spec import groups_of, resolve_spec
from distillrec.models.base import Batch, Recommender
from distillrec.models.registry import build_model, model_names, resolve_params
from distillrec.training.checkpoint import load_checkpoint
from distillrec.training.defaults import search_space
from tests.conftest import make_dataset, train_killed_at_epoch
from tests.test_next_item import make_seq_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- hooks
def test_every_hook_is_declared_with_a_no_op_default_and_called_plainly():
    d = Distiller()
    assert d.loss(None, None, None, 1) == {} and d.on_epoch_end(None, 1) == {}
    assert d.lr_multipliers(1) == {} and d.summary() == {} and d.prepare(None, None) is None
    assert Distiller.backbone_needs(None) == () and Distiller.check_backbone(Recommender, None, None) is None
    src = Path(distill_pkg.__file__).parents[1]
    assert "hasattr" not in (src / "training" / "trainer.py").read_text()
    assert "hasattr(distiller" not in (src / "experiment" / "api.py").read_text()
    distillers = "".join(p.read_text() for p in Path(distill_pkg.__file__).parent.glob("*.py"))
    assert (
        "hasattr(batch" not in distillers and "getattr(probe" not in distillers
    )  # types and protocols instead


def test_no_distiller_names_a_backbone():
    """No string in a distiller's code (docstrings and messages aside) is a model's name: a branch on one
    would be `name == "grcn"` or `model in ("sasrec", "gru4rec")`."""
    names = set(model_names())
    for path in Path(distill_pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        named = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and id(n) not in docstrings
            and isinstance(n.value, str)
            and n.value.lower() in names
        ]
        assert not named, f"{path.name} names {named}"


# --------------------------------------------------------------------------- capabilities
def test_the_protocols_hold_on_built_models():
    ds, seq = make_dataset(), make_seq_dataset()
    assert isinstance(build_model("grcn", ds), HasModalityEmbeddings)
    assert isinstance(build_model("vbpr", ds), HasCounterfactualView)
    assert isinstance(build_model("mmsr", seq), HasCorrelationTables)
    assert not isinstance(build_model("vbpr", ds), HasCorrelationTables)


def _refusal(method: str, model: str, groups: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_distill([method], model, groups)
    message = str(err.value)
    assert "\n" not in message and repr(model) in message and method in message
    return message


@pytest.mark.parametrize(
    ("method", "model", "groups", "says"),
    [
        ("sgfd", "bprmf", {}, "feature extractor"),
        ("sgfd", "itemknn_cbf", {}, "has no modality_embeddings of its own"),
        ("sgfd", "sasrec", {"model": {}}, "set modality_input=true"),
        ("ckd", "lightgcn", {"ckd": {"teacher": "unimodal"}}, "takes no item features"),
        (
            "cdl",
            "gru4rec",
            {"model": {}},
            "takes no item features with these options: set modality_input=true",
        ),
    ],
)
def test_a_backbone_without_the_capability_is_refused_in_one_line(method, model, groups, says):
    assert says in _refusal(method, model, groups)


def test_cdl_checks_the_resolved_params_overrides_or_complete():
    assert "cdl.id_only=true" in _refusal("cdl", "sasrec", {"model": {"modality_input": False}})
    full = resolve_params("gru4rec").model_dump()  # a run specification's complete params
    assert full["modality_input"] is False
    _refusal("cdl", "gru4rec", {"model": full})
    for model in ("gru4rec", "sasrec"):
        check_distill(["cdl"], model, {"model": {"modality_input": True}})
        check_distill(
            ["cdl"], model, {"model": {**resolve_params(model).model_dump(), "modality_input": True}}
        )
        check_distill(["cdl"], model, {"model": {}, "cdl": {"id_only": True}})  # the ID-table form, asked for
        check_distill(
            ["cdl"], model, {}
        )  # no model group (an experiment definition): some configuration has it
    for model in ("mmsr", "sasrm"):
        check_distill(["cdl"], model, {"model": {}})
    check_distill(["forgetting"], "gru4rec", {"model": {}})  # reads the ID table where there is no other
    spec = resolve_spec("sasrec", "d", {"modality_input": True, "cdl.sample_pairs": 500}, "cdl", seed=1)
    check_distill(["cdl"], "sasrec", groups_of(spec))


def test_the_self_distillation_control_needs_no_features_and_sgfd_follows_the_model_option():
    check_distill(["ckd"], "lightgcn", {"model": {}, "ckd": {"teacher": "full"}})
    check_distill(["sgfd"], "sasrec", {"model": {"modality_input": True}})
    for model in ("vbpr", "grcn", "bm3", "maml", "freedom"):
        check_distill(["sgfd"], model, {"model": {}})
        check_distill(["ckd"], model, {"model": {}})


def test_cdl_is_refused_before_any_run_folder_or_backbone(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(Recommender, "__init__", lambda self, *a, **k: built.append(self))
    with pytest.raises(ConfigError, match="modality_input=true"):
        train("gru4rec", make_seq_dataset(), seeds=[1], set={"epochs": 1}, out=tmp_path, distill="cdl")
    assert not any(tmp_path.iterdir()) and not built


# --------------------------------------------------------------------------- SGFD reads the batch's type
def test_sgfd_reads_the_batch_by_its_type():
    top = Batch(torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([[5, 6], [6, 7]]))
    assert batch_items(top).tolist() == [3, 4, 5, 6, 7] and batch_items(top, True).tolist() == [3, 4]
    seq = make_seq_dataset()
    nxt = PrefixSampler(seq.sequences, seq.n_items, "train").batch(np.arange(4))
    expected = torch.unique(torch.cat([nxt.items[nxt.mask], nxt.target]))
    assert torch.equal(batch_items(nxt), expected) and torch.equal(
        batch_items(nxt, True), torch.unique(nxt.target)
    )
    with pytest.raises(TypeError, match="SeqBatch"):
        batch_items(object())


# --------------------------------------------------------------------------- the epoch hook
def test_the_trainer_calls_the_epoch_hook_once_per_epoch_before_its_batches(tmp_path, monkeypatch):
    from distillrec.models.general.bprmf import BPRMF

    events: list = []
    loss = BPRMF.loss
    monkeypatch.setattr(Recommender, "on_epoch_start", lambda self, epoch: events.append(("start", epoch)))
    monkeypatch.setattr(
        BPRMF, "loss", lambda self, rep, batch: events.append("batch") or loss(self, rep, batch)
    )
    ds = make_dataset()
    settings = {"epochs": 3, "batch_size": 64, "patience": 50}
    train("bprmf", ds, seeds=[1], set=settings, out=tmp_path)
    starts = [i for i, e in enumerate(events) if e != "batch"]
    assert [events[i] for i in starts] == [("start", 1), ("start", 2), ("start", 3)] and starts[0] == 0
    assert all(events[i + 1] == "batch" for i in starts)  # each epoch's batches follow its hook
    # resumed after epoch 2: the hook is called for the epoch the run continues with
    train_killed_at_epoch(monkeypatch, 3, "bprmf", ds, seeds=[1], set=settings, out=tmp_path / "b")
    events.clear()
    train("bprmf", ds, seeds=[1], set=settings, out=tmp_path / "b", resume=True)
    assert [e for e in events if e != "batch"] == [("start", 3)]


# --------------------------------------------------------------------------- FREEDOM's pruning
def _freedom(ds, seed: int = 7, **params):
    torch.manual_seed(seed)
    model = build_model("freedom", ds, params)
    model.train()
    return model


def _edges(adj: torch.Tensor) -> set[tuple[int, int]]:
    coo = adj.to_sparse_coo().coalesce()
    return set(map(tuple, coo.indices().T.tolist()))


def test_freedom_prunes_once_per_epoch_from_its_own_seeded_generator():
    ds = make_dataset()
    assert resolve_params("freedom").prune_every == "epoch" and "prune_every" not in search_space("freedom")
    model = _freedom(ds)
    state = torch.get_rng_state()
    model.on_epoch_start(1)
    assert torch.equal(torch.get_rng_state(), state)  # nothing taken from the global generator
    first = model.training_adjacency()
    assert model.training_adjacency() is first  # every batch of the epoch propagates over the same graph
    model.on_epoch_start(2)
    second = model.training_adjacency()
    assert _edges(second) != _edges(first)  # a new draw each epoch
    n_keep = int(len(model.edge_prob) * (1 - model.params.dropout))
    assert len(_edges(first)) == 2 * n_keep  # both directions of the kept interactions
    again = _freedom(ds)  # the same run seed: the same graph for each epoch, whatever came before
    again.on_epoch_start(2)
    assert _edges(again.training_adjacency()) == _edges(second)
    other = _freedom(ds, seed=8)
    other.on_epoch_start(2)
    assert _edges(other.training_adjacency()) != _edges(second)
    fresh = _freedom(ds)  # used outside the trainer: a training pass draws epoch 0's graph
    assert torch.isfinite(fresh.represent(ds.features).item).all()


def test_a_ckd_teacher_passes_the_epoch_hook_to_its_backbone():
    from distillrec.distill.ckd import UniModalView

    view = UniModalView(_freedom(make_dataset()), "image")
    view.on_epoch_start(3)
    assert view.inner._epoch_graph[0] == 3 and view.lr_multipliers(3) == {}


def test_freedom_prune_every_batch_redraws_at_each_pass_from_the_global_generator():
    ds = make_dataset()
    model = _freedom(ds, prune_every="batch")
    model.on_epoch_start(1)  # a no-op in this mode
    torch.manual_seed(0)
    a = model.training_adjacency()
    b = model.training_adjacency()
    torch.manual_seed(0)
    assert _edges(a) != _edges(b) and _edges(model.training_adjacency()) == _edges(a)


@pytest.mark.parametrize("prune_every", ["epoch", "batch"])
def test_freedom_resume_equals_uninterrupted(tmp_path, monkeypatch, prune_every):
    ds = make_dataset()
    settings = {"epochs": 6, "patience": 50, "batch_size": 32, "prune_every": prune_every}
    full = train("freedom", ds, seeds=[5], set=settings, out=tmp_path / "a")[0]

    train_killed_at_epoch(monkeypatch, 4, "freedom", ds, seeds=[5], set=settings, out=tmp_path / "b")
    resumed = train("freedom", ds, seeds=[5], set=settings, out=tmp_path / "b", resume=True)[0]
    assert load_checkpoint(resumed.run_dir / "last.pt")["epoch"] == 6
    assert (
        resumed.metrics["valid"] == full.metrics["valid"] and resumed.metrics["test"] == full.metrics["test"]
    )
    a = load_checkpoint(full.run_dir / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_freedom_per_epoch_and_per_batch_pruning_train_differently():
    ds = make_dataset()
    settings = {"epochs": 2, "batch_size": 32}
    runs = {
        p: train("freedom", ds, seeds=[5], set={**settings, "prune_every": p}, out=None)[0]
        for p in ("epoch", "batch")
    }
    assert runs["epoch"].metrics["valid"] != runs["batch"].metrics["valid"]


def test_every_registered_distiller_declares_its_needs():
    for name in distiller_names():
        cls = distiller_class(name)
        assert cls.backbone_needs(cls.Options()), name  # each method needs something of its backbone


def test_the_package_level_train_is_the_function_even_after_the_trainer_is_imported():
    # a subpackage named like a lazy attribute shadows it once imported; the trainer lives in `training`
    import distillrec
    import distillrec.experiment.api  # noqa: F401  (imports the trainer)

    assert callable(distillrec.train)
    assert distillrec.train is distillrec.experiment.api.train
