"""The backbone contract, checked for every registered general model.

Per model: shapes; the loss is finite and falls over a few epochs on a small real slice; ablating a
modality (its features replaced by their mean) changes the scores; a checkpoint round-trips; the model
reads only the modality names and widths the dataset provides.
"""

from __future__ import annotations

import io

import pytest
import torch

from distillrec.data.dataset import Dataset
from distillrec.models.base import Batch, mean_ablate
from distillrec.models.registry import build_model, model_class, model_names
from distillrec.training.config import TrainConfig
from distillrec.training.tasks import make_task
from tests.conftest import make_dataset

GENERAL = model_names("topk")
LEARNED = [m for m in GENERAL if model_class(m).trainable]
MULTIMODAL = [m for m in GENERAL if model_class(m).uses_features]


def _slice(ds: Dataset, n_users: int = 400) -> Dataset:
    """The first users of the real data with all items: small enough for a few fast epochs."""
    return Dataset(
        ds.name + "-slice",
        n_users,
        ds.n_items,
        ds.train[:n_users],
        ds.valid[:n_users],
        ds.test[:n_users],
        features=ds.features,
        labels=ds.labels,
    )


@pytest.mark.parametrize("name", GENERAL)
def test_shapes(name):
    ds = make_dataset(modalities={"image": 13, "text": 7, "audio": 5})
    model = build_model(name, ds)
    model.fit(ds)
    rep = model.represent(ds.features)
    users = torch.tensor([0, 3, 7])
    scores = model.score(rep, users)
    assert scores.shape == (3, ds.n_items)
    assert torch.isfinite(scores).all()
    items = torch.tensor([1, 2, 5])
    assert model.score(rep, users, items).shape == (3, 3)
    assert model.pair_score(rep, users, items).shape == (3,)
    assert torch.allclose(
        model.pair_score(rep, users, items), model.score(rep, users)[torch.arange(3), items], atol=1e-5
    )
    for m, emb in model.modality_embeddings(ds.features).items():
        assert m in ds.features and emb.shape[0] == ds.n_items


@pytest.mark.parametrize("name", LEARNED)
def test_loss_finite_and_falls_on_real_slice(name, scientific):
    ds = _slice(scientific)
    torch.manual_seed(0)
    model = build_model(name, ds)
    cfg = TrainConfig(batch_size=512, seed=0, **_train_overrides(name))
    task = make_task("topk", ds, cfg, torch.device("cpu"), True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    epoch_losses = []
    for _ in range(6):
        total, n = 0.0, 0
        for batch in task.batches(gen):
            out = model.loss(model.represent(ds.features), batch)
            loss = sum(out.values()) if isinstance(out, dict) else out
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        epoch_losses.append(total / n)
    assert epoch_losses[-1] < epoch_losses[0]


def _train_overrides(name: str) -> dict:
    from distillrec.models.registry import train_defaults

    return {k: v for k, v in train_defaults(name).items() if k in ("lr", "n_negatives")}


@pytest.mark.parametrize("name", MULTIMODAL)
def test_ablating_a_modality_changes_scores(name, scientific):
    ds = _slice(scientific, 200)
    torch.manual_seed(0)
    model = build_model(name, ds)
    model.fit(ds)
    model.eval()
    users = torch.arange(50)
    with torch.no_grad():
        base = model.score(model.represent(ds.features), users)
        for m in ds.features:
            ablated = model.score(
                model.represent(mean_ablate(ds.features, {m}), ablated=frozenset({m})), users
            )
            assert not torch.allclose(base, ablated), m
            # the counterfactual view keeps only one modality
            view = model.score(model.counterfactual(ds.features, m), users)
            assert view.shape == base.shape


@pytest.mark.parametrize("name", GENERAL)
def test_checkpoint_round_trip(name):
    ds = make_dataset()
    torch.manual_seed(0)
    a = build_model(name, ds)
    a.fit(ds)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = build_model(name, ds)
    b.fit(ds)
    b.load_state_dict(torch.load(buf, weights_only=True))
    a.eval()
    b.eval()
    users = torch.arange(10)
    with torch.no_grad():
        assert torch.allclose(
            a.score(a.represent(ds.features), users), b.score(b.represent(ds.features), users)
        )


@pytest.mark.parametrize("name", MULTIMODAL)
def test_only_the_dataset_modalities_and_widths_are_read(name):
    """Free modality names and odd widths: a model must take them from the data, whatever they are."""
    ds = make_dataset(modalities={"audio": 11, "sketch": 37, "caption": 3})
    model = build_model(name, ds)
    model.fit(ds)

    class Guarded(dict):
        def __getitem__(self, key):
            if key not in ds.features:
                raise AssertionError(f"{name} read modality {key!r} that the dataset does not have")
            return super().__getitem__(key)

    rep = model.represent(Guarded(ds.features))
    assert torch.isfinite(model.score(rep, torch.arange(5))).all()
    # with one modality only
    one = make_dataset(modalities={"only": 19})
    m1 = build_model(name, one)
    m1.fit(one)
    assert torch.isfinite(m1.score(m1.represent(one.features), torch.arange(5))).all()


def test_batch_with_several_negatives_has_the_right_shape(tiny):
    cfg = TrainConfig(batch_size=16, n_negatives=4, seed=0)
    task = make_task("topk", tiny, cfg, torch.device("cpu"), True)
    batch: Batch = next(iter(task.batches(torch.Generator().manual_seed(0))))
    assert batch.neg.shape == (len(batch.users), 4)
    for u, row in zip(batch.users.tolist(), batch.neg.tolist(), strict=True):
        assert not set(row) & set(tiny.train[u].indices.tolist())


@pytest.mark.parametrize("name", MULTIMODAL)
def test_a_dataset_without_features_is_a_clear_error(name):
    from distillrec.errors import ConfigError

    with pytest.raises(ConfigError, match="needs item features"):
        build_model(name, make_dataset(modalities={}))
