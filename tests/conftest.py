"""Shared fixtures: small synthetic datasets for unit tests; the real bundled data for end-to-end tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from distillrec.data.dataset import Dataset, interactions_to_csr
from distillrec.training.env import torch_threads

MAX_WORKERS = 4  # each worker holds the real data and its own models; past 4 the gain is small


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): one worker per core, at most MAX_WORKERS."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def pytest_configure(config: pytest.Config) -> None:
    """Workers × threads ≤ cores: on a busy machine an oversubscribed OpenMP pool spins while descheduled
    (one backbone's loss test took 105 s on 2 threads against 5 s on one, with two training jobs beside it).
    Subprocesses started by tests (the CLI, README commands) get the same share."""
    share = _thread_share()
    torch.set_num_threads(share)
    os.environ.setdefault("OMP_NUM_THREADS", str(share))


def _thread_share() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


@pytest.fixture(autouse=True)
def thread_share():
    """A test that sets torch's thread count leaves the next test its worker's share."""
    yield
    torch.set_num_threads(_thread_share())


def make_dataset(
    n_users: int = 30,
    n_items: int = 40,
    per_user: int = 6,
    modalities: dict[str, int] | None = None,
    n_labels: int = 5,
    seed: int = 0,
) -> Dataset:
    """Random interactions (each user: per_user items, last two held out) and random features."""
    rng = np.random.default_rng(seed)
    users, items, labels = [], [], []
    for u in range(n_users):
        its = rng.choice(n_items, size=per_user, replace=False)
        users += [u] * per_user
        items += list(its)
        labels += [0] * (per_user - 2) + [1, 2]
    users, items, labels = np.array(users), np.array(items), np.array(labels)
    mats = [interactions_to_csr(users[labels == s], items[labels == s], n_users, n_items) for s in range(3)]
    modalities = {"image": 13, "text": 7} if modalities is None else modalities
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(n_items, d, generator=g) for m, d in modalities.items()}
    lab = torch.randint(-1, n_labels, (n_items,), generator=g) if n_labels else None
    return Dataset("synthetic", n_users, n_items, *mats, features=feats, labels=lab)


def write_mmrec(ds: Dataset, folder) -> str:  # noqa: ANN001
    """Write a dataset in the MMRec layout (inter file with x_label, one npy per modality, labels)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, mat in enumerate((ds.train, ds.valid, ds.test)):
        coo = mat.tocoo()
        rows.append(pd.DataFrame({"userID": coo.row, "itemID": coo.col, "x_label": label}))
    pd.concat(rows).to_csv(folder / f"{ds.name}.inter", sep="\t", index=False)
    for m, f in ds.features.items():
        np.save(folder / f"{m}_feat.npy", f.numpy().astype(np.float32))
    if ds.labels is not None:
        np.save(folder / "category_label.npy", ds.labels.numpy().astype(np.int64))
    return str(folder)


@pytest.fixture(autouse=True)
def checkpoint_every_epoch(monkeypatch):
    """Tests kill and resume runs at given epochs: every epoch writes its checkpoint (the strictest cadence;
    the default time-based one is tested on its own in test_trainer.py). No kNN graph cache on disk."""
    monkeypatch.setenv("DISTILLREC_CHECKPOINT_INTERVAL_S", "0")
    monkeypatch.setenv("DISTILLREC_CACHE", "off")  # nothing written under ~/.cache; test_item_graphs tests it


@pytest.fixture
def tiny() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="session")
def scientific() -> Dataset:
    from distillrec.data.registry import load_dataset

    return load_dataset("scientific")


@pytest.fixture
def one_thread():
    """Small tensors: a second thread only adds contention on a shared machine."""
    with torch_threads(1):
        yield


def train_killed_at_epoch(monkeypatch, epoch: int, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
    """`experiment.api.train(*args, **kwargs)`, killed (KeyboardInterrupt) as epoch `epoch` starts."""
    from distillrec.experiment.api import train
    from distillrec.training.trainer import Trainer

    original = Trainer._train_epoch

    def dies(self, e):  # noqa: ANN001, ANN202
        if e == epoch:
            raise KeyboardInterrupt
        return original(self, e)

    monkeypatch.setattr(Trainer, "_train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        train(*args, **kwargs)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
