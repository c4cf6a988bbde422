"""The training loop: run folders, early stopping, resume equals an uninterrupted run, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from distillrec.errors import ConfigError, DistillrecError
from distillrec.experiment.api import load_run, train
from distillrec.training.checkpoint import load_checkpoint
from tests.conftest import make_dataset, train_killed_at_epoch, write_mmrec


def test_run_folder_holds_everything(tmp_path, tiny):
    (r,) = train("bprmf", tiny, seeds=[3], set={"epochs": 4, "patience": 10}, out=tmp_path)
    files = {p.name for p in r.run_dir.iterdir()}
    assert {
        "config.yaml",
        "metrics.json",
        "history.csv",
        "best.pt",
        "last.pt",
        "env.json",
        "split.npz",
    } <= files
    assert not [f for f in files if f.endswith(".tmp")]
    cfg = yaml.safe_load((r.run_dir / "config.yaml").read_text())
    assert (
        cfg["seed"] == 3 and cfg["train"]["epochs"] == 4 and cfg["dataset"]["split_hash"] == tiny.split_hash
    )
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert metrics["preset"] == "mmrec" and set(metrics["test"]) >= {
        "recall@20",
        "ndcg@10",
        "mrr@20",
        "map@10",
    }
    env = json.loads((r.run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["split_hash"] == tiny.split_hash
    history = pd.read_csv(r.run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4] and "valid_recall@20" in history
    assert load_checkpoint(r.run_dir / "last.pt")["epoch"] == 4


def test_early_stopping_keeps_the_best_validation_epoch(tmp_path, tiny):
    (r,) = train("bprmf", tiny, seeds=[0], set={"epochs": 60, "patience": 3, "lr": 0.05}, out=tmp_path)
    history = pd.read_csv(r.run_dir / "history.csv")
    best = history["valid_recall@20"].idxmax()
    assert r.metrics["best_epoch"] == history.loc[best, "epoch"]
    assert r.metrics["valid"]["recall@20"] == pytest.approx(history.loc[best, "valid_recall@20"])
    assert r.metrics["epochs_run"] < 60  # it stopped early
    assert r.metrics["epochs_run"] - r.metrics["best_epoch"] == 3


def test_resume_equals_uninterrupted(tmp_path, tiny, monkeypatch):

    settings = {"epochs": 8, "patience": 50}
    full = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "a")[0]

    # the same run, killed during epoch 4
    train_killed_at_epoch(monkeypatch, 4, "lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "b")
    run_dir = full.run_dir.parent.parent.parent.parent / "b" / full.run_dir.relative_to(tmp_path / "a")
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3
    assert not (run_dir / "metrics.json").exists()

    resumed = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "b", resume=True)[0]
    assert resumed.run_dir == run_dir
    assert resumed.metrics["test"] == pytest.approx(full.metrics["test"], abs=1e-6)
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    assert [row["epoch"] for row in b["history"]] == list(range(1, 9))


def test_resuming_a_finished_run_reuses_it_untouched(tmp_path, tiny, monkeypatch):
    from distillrec.training.trainer import Trainer

    (first,) = train("bprmf", tiny, seeds=[3], set={"epochs": 4}, out=tmp_path)
    stored = (first.run_dir / "metrics.json").read_text()
    env = (first.run_dir / "env.json").read_text()

    def must_not_train(self, resume=False):  # noqa: ANN001, ANN202
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "fit", must_not_train)
    (again,) = train("bprmf", tiny, seeds=[3], set={"epochs": 4}, out=tmp_path, resume=True)
    assert again.metrics == first.metrics
    assert (first.run_dir / "metrics.json").read_text() == stored
    assert (first.run_dir / "env.json").read_text() == env  # the environment it ran in is kept
    # a folder whose configuration was changed by hand is never resumed (nor reused) as if it were this one
    cfg = first.run_dir / "config.yaml"
    cfg.write_text(cfg.read_text().replace("patience: 20", "patience: 21"))
    with pytest.raises(DistillrecError, match="config.yaml: damaged"):
        train("bprmf", tiny, seeds=[3], set={"epochs": 4}, out=tmp_path, resume=True)


def test_same_seed_same_result_and_seeds_differ(tmp_path, tiny):
    a = train("bprmf", tiny, seeds=[1], set={"epochs": 3}, out=None)[0]
    b = train("bprmf", tiny, seeds=[1], set={"epochs": 3}, out=None)[0]
    c = train("bprmf", tiny, seeds=[2], set={"epochs": 3}, out=None)[0]
    assert a.metrics["valid"] == b.metrics["valid"]
    assert a.metrics["valid"] != c.metrics["valid"]


def test_unknown_options_are_errors(tiny):
    with pytest.raises(ConfigError, match="nonsense"):
        train("bprmf", tiny, set={"nonsense": 1}, out=None)
    with pytest.raises(ConfigError, match="unknown model"):
        train("nosuchmodel", tiny, out=None)
    with pytest.raises(ConfigError, match="lr"):
        train("bprmf", tiny, set={"lr": -1}, out=None)


def test_another_config_in_the_same_folder_is_refused(tmp_path, tiny):
    train("bprmf", tiny, seeds=[1], set={"epochs": 1}, out=tmp_path)
    # same folder name (dataset "synthetic", default options) but another split: refuse rather than mix
    ds2 = make_dataset(seed=9)
    with pytest.raises(ConfigError, match="another configuration"):
        train("bprmf", ds2, seeds=[1], set={"epochs": 1}, out=tmp_path)


def test_the_same_dataset_moved_elsewhere_continues_its_run(tmp_path, tiny):
    # a run does not depend on where its dataset lies: a copy in another folder finds the finished run
    (first,) = train(
        "bprmf", write_mmrec(tiny, tmp_path / "a" / "tiny"), seeds=[1], set={"epochs": 2}, out=tmp_path
    )
    (again,) = train(
        "bprmf", write_mmrec(tiny, tmp_path / "b" / "tiny"), seeds=[1], set={"epochs": 2}, out=tmp_path
    )
    assert again.run_dir == first.run_dir
    assert again.metrics["test"] == first.metrics["test"]


def test_recommend_reproduces_test_masking(tmp_path, tiny):
    folder = write_mmrec(tiny, tmp_path / "tinydata")
    (r,) = train("bprmf", folder, seeds=[1], set={"epochs": 3}, out=tmp_path / "runs")
    run = load_run(r.run_dir)
    top = run.recommend(list(range(tiny.n_users)), k=5)
    assert top.shape == (tiny.n_users, 5)
    for u, row in enumerate(top.tolist()):
        assert not set(row) & set(tiny.train[u].indices.tolist())
    seen = run.recommend(list(range(tiny.n_users)), k=5, exclude_seen=True)
    known = tiny.train + tiny.valid + tiny.test
    for u, row in enumerate(seen.tolist()):
        assert not set(row) & set(known[u].indices.tolist())
    assert run.evaluate("test") == pytest.approx(r.metrics["test"])


def test_checkpoints_are_written_at_the_interval_with_the_same_outcome(tmp_path, tiny, monkeypatch):
    """With a long interval the run folder is written once, at the last epoch, and holds exactly what a run
    writing every epoch holds (the conftest default is every epoch)."""
    import distillrec.training.trainer as trainer_module

    settings = {"epochs": 6, "patience": 50}
    every = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "every")[0]
    writes: list[tuple[str, int]] = []
    original = trainer_module.save_checkpoint

    def counted(path, state, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        writes.append((path.name, state["epoch"]))
        return original(path, state, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", counted)
    monkeypatch.setenv("DISTILLREC_CHECKPOINT_INTERVAL_S", "1e9")
    once = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "once")[0]
    assert writes == [("best.pt", once.metrics["best_epoch"]), ("last.pt", 6)]
    assert once.metrics["test"] == every.metrics["test"] and once.metrics["valid"] == every.metrics["valid"]
    a, b = (load_checkpoint(r.run_dir / "best.pt") for r in (every, once))
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    history = pd.read_csv(once.run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, 7))


def test_a_run_killed_before_its_first_checkpoint_starts_over_and_ends_identical(tmp_path, tiny, monkeypatch):
    settings = {"epochs": 6, "patience": 50}
    full = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "a")[0]
    monkeypatch.setenv("DISTILLREC_CHECKPOINT_INTERVAL_S", "1e9")
    train_killed_at_epoch(monkeypatch, 4, "lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "b")
    (killed,) = (tmp_path / "b").rglob("seed5")
    assert not (killed / "last.pt").exists()  # nothing written yet: the resumed run starts over
    resumed = train("lightgcn", tiny, seeds=[5], set=settings, out=tmp_path / "b", resume=True)[0]
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_checkpoint_interval_is_one_config_error(monkeypatch, value):
    from distillrec.training.trainer import checkpoint_interval

    monkeypatch.setenv("DISTILLREC_CHECKPOINT_INTERVAL_S", value)
    with pytest.raises(ConfigError, match="DISTILLREC_CHECKPOINT_INTERVAL_S"):
        checkpoint_interval()
