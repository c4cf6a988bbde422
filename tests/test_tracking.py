"""`--log tensorboard`: every history column as a scalar, one value per epoch, clean after a resume."""

from __future__ import annotations

import pandas as pd
import pytest

from distillrec.errors import ConfigError
from distillrec.experiment.api import train
from distillrec.training.tracking import tag
from tests.conftest import make_dataset, write_mmrec


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def assert_matches_history(run_dir) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001
    hist = pd.read_csv(run_dir / "history.csv")
    logged = scalars(run_dir)
    assert set(logged) == {tag(c) for c in hist.columns if c != "epoch"}
    for column in hist.columns.drop("epoch"):
        rows = hist[hist[column].notna()]
        points = logged[tag(column)]
        assert [s for s, _ in points] == rows["epoch"].tolist(), column
        assert [v for _, v in points] == pytest.approx(rows[column].tolist(), rel=1e-6), column
    return logged


def test_tensorboard_scalars_equal_the_history(tmp_path, one_thread):
    ds = make_dataset()
    r = train("bprmf", ds, seeds=[1], set={"epochs": 3, "eval_every": 2}, out=tmp_path, log="tensorboard")[0]
    logged = assert_matches_history(r.run_dir)
    assert [s for s, _ in logged["train/loss"]] == [1, 2, 3]
    assert [s for s, _ in logged["valid/recall@20"]] == [2, 3]  # evaluated epochs only
    assert {"time/train_s", "time/eval_s"} <= set(logged)


def test_log_is_not_part_of_the_run(tmp_path, one_thread):
    ds = make_dataset()
    plain = train("bprmf", ds, seeds=[1], set={"epochs": 1}, out=tmp_path / "a")[0]
    logged = train("bprmf", ds, seeds=[1], set={"epochs": 1}, out=tmp_path / "b", log="tensorboard")[0]
    assert plain.run_dir.relative_to(tmp_path / "a") == logged.run_dir.relative_to(tmp_path / "b")
    assert (plain.run_dir / "config.yaml").read_text() == (logged.run_dir / "config.yaml").read_text()
    assert not (plain.run_dir / "tensorboard").exists()
    assert plain.metrics["test"] == logged.metrics["test"]


def test_ckd_logs_its_modality_weights(tmp_path, one_thread):
    ds = make_dataset(n_users=40, n_items=30)
    r = train(
        "vbpr",
        ds,
        seeds=[2],
        set={"epochs": 2, "ckd.n_generic": 32},
        out=tmp_path,
        distill=["ckd"],
        log="tensorboard",
    )[0]
    logged = assert_matches_history(r.run_dir)
    assert {"train/ckd_lambda_image", "train/ckd_lambda_text", "train/ckd_specific"} <= set(logged)
    assert len(logged["train/ckd_lambda_image"]) == 2


def test_a_resumed_run_has_one_value_per_epoch(tmp_path, monkeypatch, one_thread):
    """Killed after epoch 3 was logged but before its checkpoint: the resumed run logs epoch 3 again, and the
    stale value is purged."""
    import distillrec.training.trainer as trainer_module

    ds = make_dataset()
    settings = {"epochs": 4, "patience": 10}
    original = trainer_module.save_checkpoint

    def dies(path, state, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if path.name == "last.pt" and state["epoch"] == 3:
            raise KeyboardInterrupt
        return original(path, state, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", dies)
    with pytest.raises(KeyboardInterrupt):
        train("bprmf", ds, seeds=[1], set=settings, out=tmp_path, log="tensorboard")
    monkeypatch.setattr(trainer_module, "save_checkpoint", original)
    r = train("bprmf", ds, seeds=[1], set=settings, out=tmp_path, log="tensorboard", resume=True)[0]
    assert len(list((r.run_dir / "tensorboard").iterdir())) == 2  # one event file per session
    logged = assert_matches_history(r.run_dir)
    assert [s for s, _ in logged["train/loss"]] == [1, 2, 3, 4]


def test_log_refusals(tmp_path):
    ds = make_dataset()
    with pytest.raises(ConfigError, match="run folder"):
        train("bprmf", ds, seeds=[1], set={"epochs": 1}, out=None, log="tensorboard")
    with pytest.raises(ConfigError, match="unknown"):
        train("bprmf", ds, seeds=[1], set={"epochs": 1}, out=tmp_path, log="wandb")
    assert not list(tmp_path.glob("**/config.yaml"))  # refused before the run folder was started


def test_cli_train_log(tmp_path, one_thread):
    from typer.testing import CliRunner

    from distillrec.cli import app

    folder = write_mmrec(make_dataset(), tmp_path / "data" / "synthetic")
    res = CliRunner().invoke(
        app,
        [
            "train",
            "-m",
            "bprmf",
            "-d",
            folder,
            "--set",
            "epochs=2",
            "--quiet",
            "--out",
            str(tmp_path / "runs"),
            "--log",
            "tensorboard",
            "--seeds",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("**/history.csv")]
    assert_matches_history(run_dir)


def test_missing_tensorboard_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[track\]"'):
        train("bprmf", make_dataset(), seeds=[1], set={"epochs": 1}, out=tmp_path, log="tensorboard")
