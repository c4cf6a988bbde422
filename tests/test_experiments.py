"""bench and the distillation reports: choices are made on validation only, and the documents say so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from distillrec.experiment import bench, distill_report
from distillrec.experiment.bench import backbones_markdown, bench_model
from distillrec.experiment.distill_report import compare_backbone, comparison_table, grid_lines


@dataclass
class FakeRun:
    metrics: dict
    run_dir: Path


def fake_trainer(valid_of, test_of, calls):  # noqa: ANN001, ANN201
    """A train_one stand-in whose validation and test scores disagree on the best option."""

    def train_one(model, dataset, seed, groups, out, device, resume=False, quiet=True, distill=None):  # noqa: ANN001, ANN202
        calls.append((model, seed, {k: dict(v) for k, v in groups.items()}, tuple(distill or ())))
        key = (tuple(distill or ()), tuple(sorted((groups.get(distill[0], {}) if distill else groups["model"]).items())))
        metrics = {
            "valid_metric": "recall@20",
            "valid": {"recall@20": valid_of(key)},
            "test": {f"{m}@{k}": test_of(key) + seed**2 * 1e-3 + (seed % 2) * 1e-3 * bool(distill) for m in ("recall", "ndcg") for k in (10, 20)},
            "best_epoch": 3,
            "seconds": 1.0,
        }
        return FakeRun(metrics, Path(f"/runs/{model}/{seed}"))

    return train_one


def test_bench_chooses_the_grid_point_on_validation_never_on_test(monkeypatch, tiny) -> None:  # noqa: ANN001
    monkeypatch.setattr(bench, "search_grid", lambda model: {"reg_weight": [1e-4, 1e-3, 1e-2]})
    # validation prefers 1e-3; test would prefer 1e-2
    valid = {1e-4: 0.10, 1e-3: 0.30, 1e-2: 0.20}
    test = {1e-4: 0.1, 1e-3: 0.2, 1e-2: 0.9}
    calls: list = []

    def reg(key):  # noqa: ANN001, ANN202
        return dict(key[1]).get("reg_weight", 1e-4)

    monkeypatch.setattr(bench, "train_one", fake_trainer(lambda k: valid[reg(k)], lambda k: test[reg(k)], calls))
    result = bench_model("bprmf", tiny, [1, 2, 3], Path("/runs"))
    assert result.chosen == {"reg_weight": 1e-3}
    # three grid points with seed 1, then seeds 2 and 3 at the chosen point only
    assert [c[1] for c in calls] == [1, 1, 1, 2, 3]
    assert all(c[2]["model"] == {"reg_weight": 1e-3} for c in calls[3:])
    assert result.test[2]["recall@20"] == pytest.approx(0.2 + 4e-3)
    text = backbones_markdown([result], tiny, [1, 2, 3], "mmrec", "distillrec bench --models bprmf")
    assert "| bprmf |" in text and "reg_weight=0.001 (of 3 points)" in text
    assert "distillrec.models.general.bprmf" in text


def test_distillation_report_keeps_the_plain_backbone_and_chooses_weights_on_validation(monkeypatch, tiny) -> None:  # noqa: ANN001
    calls: list = []

    def valid_of(key):  # noqa: ANN001, ANN202
        opts = dict(key[1])
        return 0.1 if not key[0] else 0.2 + opts.get("lambda_kd", 0) - opts.get("lambda_g", 0) / 100

    def test_of(key):  # noqa: ANN001, ANN202
        opts = dict(key[1])
        return 0.1 if not key[0] else 0.5 * opts.get("lambda_g", 0)

    monkeypatch.setattr(distill_report, "train_one", fake_trainer(valid_of, test_of, calls))
    grid = {"lambda_kd": [0.01, 0.1], "lambda_g": [1.0, 5.0]}
    c = compare_backbone("vbpr", "ckd", tiny, [1, 2, 3], grid, Path("/runs"))
    assert c.chosen == {"lambda_kd": 0.1, "lambda_g": 1.0}
    plain = [x for x in calls if not x[3]]
    assert [x[1] for x in plain] == [1, 2, 3] and all("ckd" not in x[2] for x in plain)
    distilled = [x for x in calls if x[3]]
    assert [x[1] for x in distilled] == [1, 1, 1, 1, 2, 3]  # the grid with the first seed, then the others
    assert all(x[2]["ckd"] == c.chosen for x in distilled[4:])
    table = "\n".join(comparison_table([c]))
    assert "| vbpr | recall@20 |" in table and "(3)" in table
    assert "chosen lambda_kd=0.1, lambda_g=1.0" in grid_lines([c])[0]


def test_ckd_reweight_rows_average_up_to_the_best_epoch(tmp_path) -> None:  # noqa: ANN001
    import pandas as pd

    from distillrec.experiment.ckd_report import lambda_means, reweight_rows
    from distillrec.experiment.distill_report import Comparison

    dirs = {}
    for seed, late in ((1, 0.9), (2, 0.1)):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        pd.DataFrame(
            {"epoch": [1, 2, 3], "ckd_lambda_image": [0.2, 0.4, late], "ckd_lambda_text": [0.8, 0.6, 1 - late]}
        ).to_csv(d / "history.csv", index=False)
        dirs[seed] = d
    c = Comparison("vbpr", "ckd", {}, [])
    c.distilled_dirs = dirs
    c.distilled = {seed: {"best_epoch": 2} for seed in dirs}
    rows = reweight_rows(c, lambda_means(c))
    assert rows == ["| vbpr | image | 0.300 ± 0.000 |", "| vbpr | text | 0.700 ± 0.000 |"]  # epoch 3 is after the best


def test_fixed_distiller_options_reach_every_distilled_run_and_no_plain_run(monkeypatch, tiny) -> None:  # noqa: ANN001
    calls: list = []
    monkeypatch.setattr(distill_report, "train_one", fake_trainer(lambda k: 0.1, lambda k: 0.1, calls))
    compare_backbone("vbpr", "ckd", tiny, [4, 5], {"lambda_kd": [0.01, 0.1]}, Path("/runs"), fixed={"teacher_seed": 4})
    distilled = [x for x in calls if x[3]]
    assert distilled and all(x[2]["ckd"]["teacher_seed"] == 4 for x in distilled)
    assert all("ckd" not in x[2] for x in calls if not x[3])


def test_bench_lists_floors_then_id_models_then_multimodal() -> None:
    from distillrec.experiment.bench import bench_order

    order = bench_order(["vbpr", "mostpop", "lightgcn", "itemknn_cbf", "bprmf", "bm3"])
    assert order == ["mostpop", "itemknn_cbf", "bprmf", "lightgcn", "bm3", "vbpr"]


def _comparison(base: list[float], distilled: list[float]) -> distill_report.Comparison:
    c = distill_report.Comparison("vbpr", "ckd", {}, [])
    c.base = {s: {"test": {"recall@20": v}} for s, v in enumerate(base, 1)}
    c.distilled = {s: {"test": {"recall@20": v}} for s, v in enumerate(distilled, 1)}
    return c


def test_the_verdict_follows_the_paired_test() -> None:
    consistent = _comparison([0.10, 0.11, 0.12], [0.12, 0.131, 0.139])  # about +0.02 on every seed
    assert distill_report.verdict(consistent).startswith("helps: recall@20 +18.2%")
    noisy = _comparison([0.10, 0.11, 0.12], [0.13, 0.10, 0.125])
    assert distill_report.verdict(noisy).startswith("no significant gain")
    assert distill_report.verdict(_comparison([0.12, 0.13, 0.14], [0.10, 0.112, 0.119])).startswith("hurts")
    assert distill_report.verdict(_comparison([0.12, 0.13, 0.14], [0.12, 0.12, 0.14])).startswith("does not help")
    assert distill_report.verdict_lines([consistent], "CKD")[0].startswith("- **vbpr + CKD**: helps")


def test_p_values_print_with_three_decimals() -> None:
    from distillrec.experiment.results import format_p

    assert [format_p(p) for p in (None, 0.6, 0.0481, 0.00012)] == ["n/a", "0.600", "0.048", "1.2e-04"]
