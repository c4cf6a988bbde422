"""Statistics of the plain-vs-distilled comparison: hand cases, independent references, error paths."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from distillrec.errors import DistillrecError
from distillrec.experiment import stats as st
from distillrec.experiment.stats import combined_p, holm, paired_bootstrap, paired_seed_test, verdict

# --- Holm ---------------------------------------------------------------------------------------------------


def test_holm_hand_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_is_monotone():
    raw = [0.2, 0.5, 0.01, 0.9, 0.3, 0.3]
    adjusted = holm(raw)
    assert all(a is not None and r <= a <= 1.0 for r, a in zip(raw, adjusted, strict=True))
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(np.array(adjusted)[order]) >= 0)
    assert max(adjusted) == 1.0
    assert adjusted[4] == adjusted[5]  # tied raw p-values keep tied adjusted ones


def test_holm_none_stays_none_and_does_not_count():
    assert holm([None, 0.01, None, 0.04]) == [None, pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm([None, None]) == [None, None]
    assert holm([]) == []
    assert holm([0.03]) == [pytest.approx(0.03)]


def test_holm_rejects_invalid_p():
    with pytest.raises(DistillrecError):
        holm([0.1, float("nan")])
    with pytest.raises(DistillrecError):
        holm([1.5])


# --- combined p ---------------------------------------------------------------------------------------------


def test_combined_p_is_intersection_union():
    assert combined_p(0.01, 0.2) == 0.2
    assert combined_p(0.3, 0.04) == 0.3
    assert combined_p(None, 0.04) == 0.04
    assert combined_p(0.02, None) == 0.02
    assert combined_p(None, None) is None


# --- paired seed test ---------------------------------------------------------------------------------------


def test_paired_seed_test_hand_case_against_scipy():
    plain = {0: 0.10, 1: 0.12, 2: 0.11}
    distilled = {0: 0.11, 1: 0.125, 2: 0.118, 3: 0.2}  # seed 3 counts in the mean, not in the test
    res = paired_seed_test(plain, distilled)
    assert res.n == 3
    mean_plain, mean_dist = 0.11, (0.11 + 0.125 + 0.118 + 0.2) / 4
    assert res.relative_change == pytest.approx((mean_dist - mean_plain) / mean_plain)
    d = np.array([0.01, 0.005, 0.008])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert res.p == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    assert res.p == pytest.approx(stats.ttest_rel([0.11, 0.125, 0.118], [0.10, 0.12, 0.11]).pvalue)


def test_paired_seed_test_degenerate_cases():
    assert paired_seed_test({0: 0.1, 1: 0.2}, {0: 0.1, 5: 0.3}).p is None  # one shared seed
    same = paired_seed_test({0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.1, 1: 0.2, 2: 0.3})
    assert same.p == 1.0 and same.relative_change == 0.0
    # equal non-zero differences, up to rounding: infinite t, p = 0 (what scipy gives for exact equality)
    assert paired_seed_test({0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.15, 1: 0.25, 2: 0.35}).p == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about the zero spread
        assert stats.ttest_rel([1.5, 2.5, 3.5], [1.0, 2.0, 3.0]).pvalue == 0.0
    assert paired_seed_test({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5}).p == 0.0
    assert math.isnan(paired_seed_test({0: 0.0, 1: 0.0}, {0: 0.1, 1: 0.2}).relative_change)


def test_paired_seed_test_rejects_nan_and_empty():
    with pytest.raises(DistillrecError):
        paired_seed_test({0: 0.1, 1: float("nan")}, {0: 0.1, 1: 0.2})
    with pytest.raises(DistillrecError):
        paired_seed_test({}, {0: 0.1})


# --- paired bootstrap ---------------------------------------------------------------------------------------


def test_bootstrap_constant_difference_gives_point_interval_and_tiny_p():
    plain = np.random.default_rng(1).random(50)
    res = paired_bootstrap(plain, plain + 0.1, n_resamples=999)
    assert res.diff == pytest.approx(0.1)
    assert res.low == pytest.approx(0.1, abs=1e-12) and res.high == pytest.approx(0.1, abs=1e-12)
    assert res.p == pytest.approx(2 / 1000)  # floor: never reported as exactly 0
    assert res.n_users == 50 and res.n_resamples == 999


def test_bootstrap_identical_arms_give_p_one():
    plain = np.random.default_rng(2).random(40)
    res = paired_bootstrap(plain, plain.copy(), n_resamples=500)
    assert res.diff == 0.0 and res.low == 0.0 and res.high == 0.0
    assert res.p == 1.0
    assert res.relative_low == 0.0 and res.relative_high == 0.0


def test_bootstrap_relative_interval_for_proportional_arms():
    plain = np.random.default_rng(3).random(30) + 0.5
    res = paired_bootstrap(plain, 1.1 * plain, n_resamples=300)
    assert res.relative_low == pytest.approx(0.1) and res.relative_high == pytest.approx(0.1)
    zero = paired_bootstrap(np.zeros(5), np.ones(5), n_resamples=50)
    assert math.isnan(zero.relative_low) and math.isnan(zero.relative_high)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile, written out by hand."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def test_bootstrap_matches_slow_reference_loop():
    gen = np.random.default_rng(4)
    plain = gen.random(23)
    distilled = plain + gen.normal(0.02, 0.05, 23)
    n_resamples, seed, level = 400, 7, 0.9
    res = paired_bootstrap(plain, distilled, n_resamples=n_resamples, seed=seed, level=level)

    rng = np.random.default_rng(seed)
    diffs, ratios = [], []
    for _ in range(n_resamples):
        users = [min(int(u * 23), 22) for u in rng.random(23)]
        mean_plain = sum(plain[i] for i in users) / 23
        mean_diff = sum(distilled[i] - plain[i] for i in users) / 23
        diffs.append(mean_diff)
        ratios.append(mean_diff / mean_plain)
    diffs_sorted, ratios_sorted = sorted(diffs), sorted(ratios)
    assert res.low == pytest.approx(_percentile(diffs_sorted, 0.05))
    assert res.high == pytest.approx(_percentile(diffs_sorted, 0.95))
    assert res.relative_low == pytest.approx(_percentile(ratios_sorted, 0.05))
    assert res.relative_high == pytest.approx(_percentile(ratios_sorted, 0.95))
    below, above = sum(d <= 0 for d in diffs), sum(d >= 0 for d in diffs)
    assert res.p == pytest.approx(min(1.0, 2 * (min(below, above) + 1) / (n_resamples + 1)))
    assert res.diff == pytest.approx(float(np.mean(distilled - plain)))


def test_bootstrap_does_not_depend_on_chunk_size(monkeypatch):
    gen = np.random.default_rng(5)
    plain, distilled = gen.random(37), gen.random(37)
    whole = paired_bootstrap(plain, distilled, n_resamples=250, seed=3)
    monkeypatch.setattr(st, "_CHUNK_ELEMENTS", 37 * 16)  # 16 resamples per chunk, last chunk partial
    chunked = paired_bootstrap(plain, distilled, n_resamples=250, seed=3)
    assert chunked == whole


def test_bootstrap_interval_close_to_normal_interval_for_large_sample():
    gen = np.random.default_rng(6)
    n = 3000
    plain = gen.random(n)
    delta = gen.normal(0.01, 0.2, n)
    res = paired_bootstrap(plain, plain + delta, n_resamples=2000, seed=1)
    half = stats.norm.ppf(0.975) * delta.std(ddof=1) / math.sqrt(n)
    assert res.low == pytest.approx(delta.mean() - half, abs=0.1 * half)
    assert res.high == pytest.approx(delta.mean() + half, abs=0.1 * half)


def test_bootstrap_overwhelming_and_null_effects():
    gen = np.random.default_rng(8)
    plain = gen.random(500)
    strong = paired_bootstrap(plain, plain + 0.5 + gen.normal(0, 0.05, 500), n_resamples=1000)
    assert strong.p == pytest.approx(2 / 1001) and strong.low > 0
    for shift in (0.0, 0.003, 0.006, 0.012):  # p < 1 - level exactly when 0 is outside the interval
        res = paired_bootstrap(plain, plain + gen.normal(shift, 0.05, 500), n_resamples=1000)
        assert (res.p < 0.05) == (res.low > 0 or res.high < 0)


def test_bootstrap_averages_2d_input_over_seeds():
    gen = np.random.default_rng(9)
    plain, distilled = gen.random((3, 20)), gen.random((3, 20))
    two_d = paired_bootstrap(plain, distilled, n_resamples=200, seed=2)
    one_d = paired_bootstrap(plain.mean(axis=0), distilled.mean(axis=0), n_resamples=200, seed=2)
    assert two_d == one_d
    assert two_d.n_users == 20
    assert two_d.diff == pytest.approx(float(distilled.mean() - plain.mean()))


@pytest.mark.parametrize(
    ("plain", "distilled"),
    [
        (np.zeros(5), np.zeros(6)),  # different user counts
        (np.zeros((2, 5)), np.zeros((3, 5))),  # different seed counts
        (np.zeros((2, 5)), np.zeros(5)),  # 2-D against 1-D
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2))),  # 3-D
        (np.zeros(0), np.zeros(0)),  # no users
        (np.array([0.1, np.nan]), np.array([0.1, 0.2])),
        (np.array([[0.1, 0.2], [np.nan, 0.3]]), np.ones((2, 2))),  # NaN in one seed
        (np.array([0.1, np.inf]), np.array([0.1, 0.2])),
    ],
)
def test_bootstrap_rejects_bad_input(plain, distilled):
    with pytest.raises(DistillrecError) as err:
        paired_bootstrap(plain, distilled, n_resamples=10)
    assert "\n" not in str(err.value)


def test_bootstrap_rejects_nan_in_distilled():
    with pytest.raises(DistillrecError, match="NaN"):
        paired_bootstrap(np.array([0.1, 0.2]), np.array([0.1, np.nan]), n_resamples=10)


# --- verdict ------------------------------------------------------------------------------------------------


def test_verdict_helps():
    assert verdict("recall@20", 0.031, 0.012, (0.0012, 0.0071), 5, 2903) == (
        "helps: recall@20 +3.1% (95% CI of the difference +0.0012 to +0.0071 over 2,903 users), "
        "Holm-adjusted p 0.012 over 5 seeds"
    )


def test_verdict_writes_the_interval_as_the_tables_do():
    assert "(95% CI of the difference +0.0006 to +0.0079 over" in verdict(
        "r", 0.025, 0.09, (6.2e-4, 0.0079), 5, 9
    )
    assert "(95% CI of the difference +2.00e-05 to +0.0079 over" in verdict(
        "r", 0.02, 0.09, (2e-5, 0.0079), 5, 9
    )


def test_verdict_hurts_with_scientific_p():
    text = verdict("ndcg@10", -0.052, 4e-5, (-0.0090, -0.0031), 5, 2903)
    assert text.startswith("hurts: ndcg@10 -5.2% (95% CI of the difference -0.0090 to -0.0031")
    assert text.endswith("Holm-adjusted p 4.0e-05 over 5 seeds")


def test_verdict_neutral_for_either_sign():
    for rel, ci in [(-0.01, (-0.003, 0.001)), (0.02, (-0.001, 0.004))]:
        text = verdict("recall@20", rel, 0.3, ci, 3, 100)
        assert text.startswith("no significant difference: recall@20")
        assert "gain" not in text and "loss" not in text
    assert verdict("recall@20", 0.02, 0.05, (0.001, 0.004), 3, 100).startswith("no significant difference")


def test_verdict_not_tested_and_inconsistent():
    text = verdict("recall@20", 0.01, None, (float("nan"), float("nan")), 1, 0)
    assert text == "not tested: recall@20 +1.0%, no p-value over 1 seed"
    assert verdict("recall@20", 0.02, 0.01, (-0.004, -0.001), 5, 10).startswith("inconsistent")
    assert verdict("recall@20", float("nan"), 0.01, (0.001, 0.004), 5, 10, level=0.9).startswith(
        "helps: recall@20 relative change n/a (90% CI"
    )


# --- two configurations a user trained (`distillrec compare`) ------------------------------------------------


def _config(tmp_path, name, per_seed, users, write_per_user=True):  # noqa: ANN001, ANN202
    """Seed folders whose metrics.json hold each seed's mean and whose per-user file holds the values."""
    from distillrec.experiment.api import write_per_user as write
    from distillrec.experiment.results import ConfigRuns

    metrics, folders = {}, {}
    for seed, values in per_seed.items():
        folder = tmp_path / name / f"seed{seed}"
        folder.mkdir(parents=True)
        if write_per_user:
            write(folder / "per_user_test.npz", users, {"recall@20": values, "ndcg@20": values / 2})
        metrics[seed] = {"test": {"recall@20": float(values.mean()), "ndcg@20": float(values.mean() / 2)}}
        folders[seed] = folder
    return ConfigRuns(name, metrics, folders)


def test_compare_configs_gives_the_experiments_statistics(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(400)
    base = {s: (rng.random(400) < 0.2).astype(np.float32) for s in (1, 2, 3)}
    lifted = {s: np.maximum(v, (rng.random(400) < 0.15).astype(np.float32)) for s, v in base.items()}
    a, b = _config(tmp_path, "a", base, users), _config(tmp_path, "b", lifted, users)
    out = st.compare_configs(a, b, ["recall@20", "ndcg@20"], n_resamples=2000)
    r = out["recall@20"]
    expected = paired_bootstrap(np.stack(list(base.values())), np.stack(list(lifted.values())), 2000, seed=0)
    assert r["ci95"] == pytest.approx([expected.low, expected.high]) and r["ci95"][0] > 0
    assert r["p_seeds"] == paired_seed_test(a.values("recall@20"), b.values("recall@20")).p
    assert r["p"] == max(r["p_seeds"], r["p_users"])
    assert [out[m]["p_holm"] for m in out] == holm([out[m]["p"] for m in out])
    fewer = _config(tmp_path, "fewer", {1: lifted[1]}, users)  # one seed against three: per-user means
    assert st.compare_configs(a, fewer, ["recall@20"], n_resamples=200)["recall@20"]["ci95"] is not None
    same = st.compare_configs(a, a, ["recall@20"], n_resamples=200)["recall@20"]
    assert same["relative_change"] == 0 and same["ci95"] == [0, 0] and same["p_holm"] == 1.0


def test_compare_configs_says_why_per_user_figures_are_missing(tmp_path):
    users = np.arange(50)
    vals = {1: np.ones(50, np.float32) * 0.1, 2: np.ones(50, np.float32) * 0.2}
    a = _config(tmp_path, "a", vals, users)
    no_file = _config(tmp_path, "b", vals, users, write_per_user=False)
    other_users = _config(tmp_path, "c", vals, users + 1)
    r = st.compare_configs(a, no_file, ["recall@20"], n_resamples=100)["recall@20"]
    assert r["ci95"] is None and "has no per_user_test.npz" in r["no_users_because"]
    assert r["p"] == r["p_seeds"]  # the seed test alone
    r = st.compare_configs(a, other_users, ["recall@20"], n_resamples=100)["recall@20"]
    assert r["ci95"] is None and "different test users" in r["no_users_because"]


def test_compare_leaves_out_an_experiments_selection_seeds(tmp_path):
    import json

    from distillrec.experiment.results import collect

    (tmp_path / "ledger.jsonl").write_text("")
    for seed in (1, 2, 1001):
        run = tmp_path / "runs" / "x" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"seed": seed, "test": {"recall@20": seed / 10_000}}))
    (only,) = collect([tmp_path / "runs" / "x"])
    assert sorted(only.metrics) == [1, 2] and only.left_out == [1001]
    with pytest.raises(DistillrecError, match="only the selection seeds 1001"):
        collect([tmp_path / "runs" / "x" / "seed1001"])
    (tmp_path / "ledger.jsonl").unlink()  # outside an experiment a seed is a seed
    assert sorted(collect([tmp_path / "runs" / "x"])[0].metrics) == [1, 2, 1001]
