"""`distillrec report`: one self-contained HTML page (and Markdown beside it) for a run, a folder of seed runs
and an experiment folder; anything else is one error line."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from distillrec.errors import DistillrecError
from distillrec.experiment.api import train
from distillrec.experiment.html_report import write_report
from tests.conftest import make_dataset, write_mmrec


def assert_self_contained(page: str, figures: bool = True) -> None:
    assert ("data:image/png;base64," in page) == figures
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)  # no external asset
    assert "<script" not in page.lower()


def test_run_report(tmp_path, one_thread):
    r = train("bprmf", make_dataset(), seeds=[1], set={"epochs": 3}, out=tmp_path)[0]
    page_path, md_path = write_report(r.run_dir)
    assert page_path == r.run_dir / "report.html" and md_path == r.run_dir / "report.md"
    page, md = page_path.read_text(), md_path.read_text()
    assert_self_contained(page)
    best = r.metrics["best_epoch"]
    assert f"Test metrics (epoch {best})" in page and f"best-validation epoch ({best})" in page
    for text in (page, md):
        assert f"| recall | {r.metrics['test']['recall@10']:.4f} | {r.metrics['test']['recall@20']:.4f}" in md
        assert f"{r.metrics['test']['ndcg@20']:.4f}" in text
        assert "train.lr" in text  # the configuration
    assert "data:image" not in md  # the figures are in the page only


def test_ckd_run_report_has_weights_and_modalities(tmp_path, one_thread):
    folder = write_mmrec(make_dataset(n_users=40, n_items=30), tmp_path / "data" / "synthetic")
    r = train(
        "vbpr",
        folder,
        seeds=[1],
        set={"epochs": 2, "ckd.n_generic": 32},
        out=tmp_path / "runs",
        distill=["ckd"],
    )[0]
    page = write_report(r.run_dir, tmp_path / "out" / "ckd.html")[0].read_text()
    assert_self_contained(page)
    assert "modality weights λ_m" in page and "Per modality" in page
    assert page.count("data:image/png;base64,") == 3  # curves, λ_m, teachers beside the student
    full = write_report(r.run_dir, tmp_path / "out" / "ckd-full.html", per_modality=True)[0].read_text()
    assert "the model (recall@20)" in full and "uni-modal teacher (recall@20)" in full


def test_seed_folder_report(tmp_path, one_thread):
    results = train("bprmf", make_dataset(), seeds=[1, 2], set={"epochs": 2}, out=tmp_path)
    folder = results[0].run_dir.parent
    page, md = (p.read_text() for p in write_report(folder, tmp_path / "seeds.html"))
    assert_self_contained(page)
    vals = [r.metrics["test"]["recall@20"] for r in results]
    mean, std = sum(vals) / 2, abs(vals[0] - vals[1]) / 2**0.5
    assert f"| recall@20 | {mean:.4f} ± {std:.4f} | {vals[0]:.4f} | {vals[1]:.4f} |" in md
    assert "seed 1" in page and "seed 2" in page


def test_seed_folder_inside_an_experiment_leaves_the_selection_seeds_out(tmp_path, one_thread):
    exp = tmp_path / "exp"
    results = train("bprmf", make_dataset(), seeds=[1, 2, 1001], set={"epochs": 2}, out=exp / "runs")
    (exp / "ledger.jsonl").write_text("")
    folder = results[0].run_dir.parent
    md = write_report(folder, tmp_path / "seeds.html")[1].read_text()
    vals = [r.metrics["test"]["recall@20"] for r in results[:2]]
    mean, std = sum(vals) / 2, abs(vals[0] - vals[1]) / 2**0.5
    assert f"| recall@20 | {mean:.4f} ± {std:.4f} | {vals[0]:.4f} | {vals[1]:.4f} |" in md
    assert "seed 1001" not in md and "Left out: seeds 1001" in md
    # with the definition, its own selection seeds are the ones left out
    definition = tmp_path / "def.yaml"
    definition.write_text("datasets: [scientific]\nbackbones: [bprmf]\nselection_seeds: [2]\nseeds: [1, 3]\n")
    md = write_report(folder, tmp_path / "seeds2.html", [definition])[1].read_text()
    assert "Left out: seeds 2," in md and "seed 1001" in md
    # outside an experiment folder every seed is reported
    (exp / "ledger.jsonl").unlink()
    md = write_report(folder, tmp_path / "seeds3.html")[1].read_text()
    assert "Left out" not in md and "seed 1001" in md


def test_bad_input_is_one_error_line(tmp_path, monkeypatch, capsys):
    with pytest.raises(DistillrecError, match="is not a run folder"):
        write_report(tmp_path)
    from distillrec.cli import main

    monkeypatch.setattr(sys, "argv", ["distillrec", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a run folder" in err


def test_experiment_folder_report_reads_only(tmp_path, one_thread):
    ds = make_dataset(n_users=40, n_items=30)
    ds.name = "tiny"
    data = write_mmrec(ds, tmp_path / "data" / "tiny")
    state = tmp_path / "exp" / "state"
    definition = {
        "datasets": [data],
        "backbones": ["bprmf"],
        "methods": [],
        "budget": 1,
        "selection_seeds": [1001],
        "seeds": [1, 2],
        "set": {"epochs": 2},
        "out": str(state),
        "threads": 1,
        "bootstrap": 200,
    }
    state.mkdir(parents=True)
    (tmp_path / "exp" / "plain.yaml").write_text(yaml.safe_dump(definition))
    from distillrec.experiment.definition import make_definition
    from distillrec.experiment.engine import Engine

    Engine(make_definition(definition)).run()
    before = {p: p.stat().st_mtime_ns for p in state.rglob("*")}
    page, md = (p.read_text() for p in write_report(state, tmp_path / "exp.html"))  # definition found beside
    assert {p: p.stat().st_mtime_ns for p in state.rglob("*")} == before  # nothing written in the folder
    assert_self_contained(page, figures=False)  # a comparison figure only where a method was compared
    assert "Tuned backbones (test, report seeds)" in page and "bprmf" in md
    assert "plain.yaml" in md and "<table>" in page
    given = write_report(state, tmp_path / "given.html", definitions=[tmp_path / "exp" / "plain.yaml"])[1]
    assert given.read_text() == md
