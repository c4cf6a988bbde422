"""`distillrec rerun`: a finished run trained again from its own folder reproduces its stored metrics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distillrec.cli import app
from distillrec.errors import DistillrecError
from distillrec.experiment.api import resolved_configs, train
from distillrec.experiment.rerun import rerun, spec_of_run
from distillrec.training.checkpoint import read_json, write_json, write_yaml
from tests.conftest import make_dataset, write_mmrec

SHORT = {"epochs": 3, "patience": 2, "batch_size": 64}


@pytest.fixture
def finished_run(tmp_path, one_thread):
    folder = write_mmrec(make_dataset(), tmp_path / "data" / "synthetic")
    result = train("bprmf", folder, seeds=[7], set=SHORT, out=tmp_path / "runs", quiet=True)[0]
    assert result.run_dir is not None
    return result.run_dir


def test_a_run_trained_again_from_its_folder_gives_the_same_metrics_bit_for_bit(finished_run, tmp_path):
    again = rerun(finished_run, out=tmp_path / "again")
    assert again.reproduced and again.largest_difference == 0.0
    assert again.spec_key == again.original_key == finished_run.parent.name.split("@")[1]
    assert again.rerun == tmp_path / "again" / "synthetic" / finished_run.parent.name / "seed7"
    names = {m for m, _, _ in again.rows}
    assert {"test/recall@20", "valid/recall@20", "best_epoch"} <= names


def test_stored_metrics_that_the_code_does_not_give_are_reported_and_fail_the_command(finished_run, tmp_path):
    metrics = read_json(finished_run / "metrics.json", "")
    metrics["test"]["recall@20"] += 0.01  # a number the code did not produce
    write_json(finished_run / "metrics.json", metrics)
    out = CliRunner().invoke(app, ["rerun", str(finished_run), "--out", str(tmp_path / "again"), "--json"])
    assert out.exit_code == 1, out.output
    payload = json.loads(out.output)
    assert not payload["reproduced"] and payload["largest_difference"] == pytest.approx(0.01)
    lenient = rerun(finished_run, out=tmp_path / "again", tolerance=0.02)
    assert lenient.reproduced


def test_a_rerun_never_trains_over_the_run_it_checks(finished_run):
    with pytest.raises(DistillrecError, match="is the run itself"):
        rerun(finished_run, out=finished_run.parents[2])


def test_a_distilled_runs_configuration_resolves_to_its_own_key(tmp_path):
    """Every option group round-trips: model, training, data split and the distiller's options."""
    folder = write_mmrec(make_dataset(), tmp_path / "data" / "synthetic")
    options = {"ckd.lambda_kd": 0.3, "train.lr": 0.002, "data.split": "random", "data.split_seed": 3}
    [(run_dir, config)] = resolved_configs("vbpr", folder, [5], options, "ckd", out=tmp_path / "runs")
    run_dir.mkdir(parents=True)
    write_yaml(run_dir / "config.yaml", config)
    spec = spec_of_run(run_dir)
    assert spec.run_dir(tmp_path / "runs") == run_dir
    assert spec.distill_options["lambda_kd"] == 0.3 and spec.data.split_seed == 3 and spec.seed == 5


def test_the_table_shows_the_headline_metrics_and_every_difference(finished_run, tmp_path):
    metrics = read_json(finished_run / "metrics.json", "")
    metrics["valid"]["ndcg@20"] += 0.5
    write_json(finished_run / "metrics.json", metrics)
    out = CliRunner().invoke(app, ["rerun", str(finished_run), "--out", str(tmp_path / "again")])
    assert out.exit_code == 1
    assert (
        "test/recall@20" in out.output and "valid/ndcg@20" in out.output and "valid/ndcg@10" not in out.output
    )
    assert "NOT reproduced exactly" in out.output


def test_a_run_made_on_another_kind_of_processor_is_named_so(finished_run, tmp_path):
    """Bit-exact holds on one kind of processor: a run from a CPU with other vector units says so."""
    env = read_json(finished_run / "env.json", "")
    assert env["compute"].startswith("cpu: ")
    same = rerun(finished_run, out=tmp_path / "same")
    assert same.compute == (env["compute"], env["compute"]) and not same.other_processor
    write_json(finished_run / "env.json", {**env, "compute": "cpu: AVX2 (an older machine)"})
    out = CliRunner().invoke(app, ["rerun", str(finished_run), "--out", str(tmp_path / "again")])
    assert out.exit_code == 0, out.output  # the figures still agree here: the note does not fail it
    assert "trained on cpu: AVX2 (an older machine), this one on cpu: " in " ".join(out.output.split())
