"""The fair comparison engine on a tiny dataset: equal budgets, disjoint seeds, the off point searched,
identical metrics whatever the executor, resume without retraining, a crashed job retried once and named."""

from __future__ import annotations

import contextlib
import json

import pytest

from distillrec.errors import ConfigError
from distillrec.experiment import executor as executor_mod
from distillrec.experiment.definition import make_definition
from distillrec.experiment.engine import Engine, Ledger
from distillrec.experiment.report import comparisons, markdown, to_json
from distillrec.experiment.spec import resolve_spec
from tests.conftest import make_dataset, write_mmrec

QUICK = {"epochs": 2, "ckd.n_generic": 32}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):  # noqa: ANN001, ANN201
    ds = make_dataset(n_users=60, n_items=50, per_user=8)
    ds.name = "tiny"
    return write_mmrec(ds, tmp_path_factory.mktemp("data") / "tiny")


def definition(folder: str, out, **extra):  # noqa: ANN001, ANN003, ANN201
    values = {
        "datasets": [folder],
        "backbones": ["vbpr"],
        "methods": ["ckd"],
        "budget": 2,
        "selection_seeds": [1001],
        "seeds": [1, 2],
        "set": dict(QUICK),
        "out": str(out),
        "threads": 1,
        "bootstrap": 200,
        **extra,
    }
    return make_definition(values)


def run(d):  # noqa: ANN001, ANN201
    result = Engine(d).run()
    return result, comparisons(result)


@pytest.fixture(scope="module")
def serial_run(tiny_folder, tmp_path_factory):  # noqa: ANN001, ANN201
    return run(definition(tiny_folder, tmp_path_factory.mktemp("serial"), controls=False))


def test_equal_trials_and_disjoint_seeds(serial_run) -> None:  # noqa: ANN001
    result, comps = serial_run
    (c,) = comps
    assert c.plain.trials == c.distilled.trials == 4  # 2 tuning + 2 more vs 2 tuning + 2 distiller
    report_seeds = {s.seed for s in c.plain.specs} | {s.seed for s in c.distilled.specs}
    assert report_seeds == {1, 2}
    assert not report_seeds & set(result.definition.selection_seeds)
    as_json = to_json(result, comps)
    out = as_json["comparisons"][0]
    assert out["trials"] == {"plain": 4, "distilled": 4}
    searches = as_json["backbones"][0]["searches"]
    assert searches["plain"]["budget"] == 4 and searches["ckd"]["budget"] == 2
    assert all(s["trials"] <= s["budget"] and not s["stopped_short"] for s in searches.values())
    assert set(out["selection_seeds"]).isdisjoint(out["report_seeds"])
    for key in ("plain", "distilled", "relative_change", "p_seeds", "p_holm", "ci95", "verdict", "arm"):
        assert key in out
    assert "Holm" in markdown(result, comps, "distillrec experiment")


def test_off_point_is_searched(serial_run) -> None:  # noqa: ANN001
    from distillrec.distill.registry import distiller_class

    result, _ = serial_run
    off = distiller_class("ckd").off_point
    assert off, "a distiller declares the options that turn it off"
    searched = [p for p, _ in result.backbones[0].searches["ckd"].points]
    assert any(all(p.get(k) == v for k, v in off.items()) for p in searched)


def test_selection_seeds_must_differ_from_report_seeds(tiny_folder, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="disjoint"):
        definition(tiny_folder, tmp_path, selection_seeds=[1], seeds=[1, 2])


@pytest.mark.slow
def test_local_and_ray_give_the_serial_metrics(serial_run, tiny_folder, tmp_path) -> None:  # noqa: ANN001
    ray = pytest.importorskip("ray")
    _, serial = serial_run
    try:
        for name in ("local", "ray"):
            _, comps = run(definition(tiny_folder, tmp_path / name, controls=False, executor=name, jobs=2))
            assert comps[0].values("plain") == serial[0].values("plain")
            assert comps[0].values("distilled") == serial[0].values("distilled")
            assert comps[0].distilled.point == serial[0].distilled.point
    finally:  # the local Ray instance's processes would go on using the worker's cores
        ray.shutdown()


def test_resume_does_not_retrain(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    d = definition(tiny_folder, tmp_path, methods=[], budget=3)
    calls = []
    real = executor_mod.run_job

    def dying(job):  # noqa: ANN001, ANN202 - the process is "killed" after two finished jobs
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.name)
        return real(job)

    monkeypatch.setattr(executor_mod, "run_job", dying)
    with pytest.raises(KeyboardInterrupt):
        Engine(d).run()
    finished = list(Ledger(d.state_dir()).records)
    assert len(finished) == 2
    calls.clear()
    monkeypatch.setattr(executor_mod, "run_job", lambda job: (calls.append(job.name), real(job))[1])
    result = Engine(d).run()
    assert len(calls) == 3 + 2 - 2  # 3 tuning jobs and 2 report jobs, less the 2 already finished
    assert not set(calls) & {n for n in finished}
    assert result.backbones[0].plain.trials == 3


def test_crashed_job_is_retried_once_then_named(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    d = definition(tiny_folder, tmp_path, methods=[], budget=1)
    attempts = []
    real = executor_mod.run_job

    def flaky(job):  # noqa: ANN001, ANN202
        if job.name.endswith("seed2"):
            attempts.append(job.name)
            raise RuntimeError("out of luck")
        return real(job)

    monkeypatch.setattr(executor_mod, "run_job", flaky)
    result = Engine(d).run()
    assert len(attempts) == 2  # the failing report job, tried twice
    assert len(result.failures) == 1 and "seed2" in result.failures[0] and "out of luck" in result.failures[0]
    assert [
        s.seed
        for s, r in zip(result.backbones[0].plain.specs, result.backbones[0].plain.records, strict=True)
        if r
    ] == [1]


def test_identical_requests_share_one_run_folder(tiny_folder) -> None:  # noqa: ANN001
    a = resolve_spec("vbpr", "tiny", {"reg_weight": 1e-4}, seed=3)  # the default value, said explicitly
    b = resolve_spec("vbpr", "tiny", {}, seed=3)
    c = resolve_spec("vbpr", "tiny", {"model.reg_weight": 1e-3}, seed=3)
    assert a.run_dir("runs") == b.run_dir("runs") != c.run_dir("runs")
    assert json.loads(a.model_dump_json())["params"]["reg_weight"] == 1e-4


def test_partial_report_trains_nothing_and_names_what_is_pending(tiny_folder, tmp_path) -> None:  # noqa: ANN001
    d = definition(tiny_folder, tmp_path, methods=[], budget=1)
    result = Engine(d, partial=True).run()
    assert result.backbones == [] and len(result.pending) == 1 and "vbpr" in result.pending[0]
    assert not Ledger(d.state_dir()).records
    finished = Engine(d).run()
    again = Engine(d, partial=True).run()
    assert again.pending == [] and again.backbones[0].plain.records == finished.backbones[0].plain.records
    text = markdown(again, comparisons(again), "test")
    assert "In progress" not in text
    # a report without methods compares nothing: no statistics paragraph, no Holm over zero comparisons
    assert "compares no arms" in text and "Holm" not in text and "search space. A trial" in text
    # another definition sharing the study searches on past this budget: its running trial changes nothing here
    import optuna

    engine = Engine(d, partial=True)
    for summary in optuna.get_all_study_summaries(engine.storage):
        optuna.load_study(study_name=summary.study_name, storage=engine.storage).ask()
    shared = engine.run()
    assert shared.pending == [] and shared.backbones[0].plain.records == finished.backbones[0].plain.records


def test_local_workers_end_when_the_driver_is_killed(tmp_path) -> None:  # noqa: ANN001
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text(
        "import time\n"
        "from distillrec.experiment.executor import Pool\n"
        "if __name__ == '__main__':\n"
        "    pool = Pool('local', 2, submit_fn=time.sleep)\n"
        "    busy = [pool._submit(60.0), pool._submit(60.0)]\n"
        "    while len(pool._pool._processes) < 2:\n"
        "        time.sleep(0.1)\n"
        "    print(' '.join(map(str, pool._pool._processes)), flush=True)\n"
        "    busy[0].result()\n"
    )
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in driver.stdout.readline().split()]
    assert len(workers) == 2
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its reaper has ended
            return fh.read().split()[2] != "Z"

    deadline = time.time() + 15
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)


def test_a_point_whose_jobs_crash_is_asked_again_before_it_costs_a_trial(tiny_folder, tmp_path, monkeypatch):
    import optuna

    d = definition(tiny_folder, tmp_path, methods=[], budget=1)
    crashes = []
    real = executor_mod.run_job

    def crash_twice(job):  # noqa: ANN001, ANN202 - both attempts of the first selection job fail
        if job.name.endswith("seed1001") and len(crashes) < 2:
            crashes.append(job.name)
            raise RuntimeError("worker lost")
        return real(job)

    monkeypatch.setattr(executor_mod, "run_job", crash_twice)
    engine = Engine(d)
    result = engine.run()
    assert len(crashes) == 2 and len(result.failures) == 1  # named in the report, then recovered
    studies = optuna.get_all_study_names(engine.storage)
    tuned = [n for n in studies if n.endswith("/tuned")] or studies
    trials = optuna.load_study(study_name=tuned[0], storage=engine.storage).trials
    states = [t.state for t in trials]
    assert states[:2] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert trials[0].params == trials[1].params  # the same point, asked again
    assert result.backbones[0].plain.records and all(result.backbones[0].plain.records)


def test_a_point_failing_again_and_again_spends_the_budget_instead_of_looping() -> None:
    import optuna

    from distillrec.experiment.engine import budget_trials

    dist = {"x": optuna.distributions.CategoricalDistribution([1, 2])}

    def trial(state, x):  # noqa: ANN001, ANN202
        value = 0.5 if state == optuna.trial.TrialState.COMPLETE else None
        return optuna.trial.create_trial(state=state, params={"x": x}, distributions=dist, value=value)

    fail, ok = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE
    trials = [trial(fail, 1), trial(fail, 1), trial(fail, 1), trial(ok, 2)]
    for n, t in enumerate(trials):
        t.number = n
    assert [t.number for t in budget_trials(trials)] == [1, 2, 3]  # the first failure is free, no other
    assert [t.number for t in budget_trials(trials, frozenset({0, 1}))] == [3]  # forgiven: 2 is a 1st


def test_every_job_failing_stops_the_experiment_without_spending_budget(tiny_folder, tmp_path, monkeypatch):
    import optuna

    from distillrec.experiment.engine import Forgiven, SystemicFailure, budget_trials

    d = definition(tiny_folder, tmp_path, methods=[], budget=4, selection_seeds=[1001, 1002])
    calls = []

    def broken(job):  # noqa: ANN001, ANN202 - e.g. the package uninstalled under a running experiment
        calls.append(job.name)
        raise ModuleNotFoundError("No module named 'distillrec'")

    monkeypatch.setattr(executor_mod, "run_job", broken)
    with pytest.raises(SystemicFailure, match="the last 8 jobs all failed"):
        Engine(d).run()
    assert len(calls) == 16  # 8 jobs, each tried twice, then the engine stops
    engine = Engine(d)
    (name,) = optuna.get_all_study_names(engine.storage)
    forgiven = Forgiven(d.state_dir()).of(name)
    trials = optuna.load_study(study_name=name, storage=engine.storage).trials
    assert len(forgiven) == 3 and not budget_trials(trials, forgiven)  # 3 told FAIL, none costs a trial
    monkeypatch.undo()
    result = engine.run()  # the cause fixed: the same command resumes
    assert result.failures == [] and result.backbones[0].tuned.trials == 4
    trials = optuna.load_study(study_name=name, storage=engine.storage).trials
    counted = budget_trials(trials, Forgiven(d.state_dir()).of(name))
    assert len(counted) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert trials[0].params in [t.params for t in counted]  # the first point (the defaults) is still searched


def test_a_stage_whose_trials_all_failed_is_not_reported_until_retried(tiny_folder, tmp_path, monkeypatch):
    d = definition(tiny_folder, tmp_path, methods=[], budget=1)

    def crash(job):  # noqa: ANN001, ANN202
        raise RuntimeError("diverged")

    monkeypatch.setattr(executor_mod, "run_job", crash)
    result = Engine(d).run()  # 2 failed jobs: a point's failure, then its failure again (one trial spent)
    assert result.backbones == [] and any("all 1 trials failed" in f for f in result.failures)
    monkeypatch.undo()
    assert Engine(d).run().backbones == []  # its budget is spent: nothing is reported with a made-up point
    again = Engine(d, retry_failed=True).run()
    assert (
        again.failures == []
        and again.backbones[0].tuned.trials == 1
        and all(again.backbones[0].plain.records)
    )
    from distillrec.experiment.report import finished_part

    read_back, _ = finished_part(d.state_dir(), d)  # what reports read: the failures set aside stay aside
    assert read_back.failures == [] and read_back.backbones[0].tuned.trials == 1


def test_a_trial_whose_runs_are_not_what_its_point_resolves_to_is_asked_again(tiny_folder, tmp_path):  # noqa: ANN001
    from distillrec.experiment.engine import Forgiven

    d = definition(tiny_folder, tmp_path, methods=[], budget=1)
    first = Engine(d).run()
    ledger = d.state_dir() / "ledger.jsonl"
    kept = [line for line in ledger.read_text().splitlines() if "seed1001" not in line]
    ledger.write_text("\n".join(kept) + "\n")  # its selection run now stands for other settings
    again = Engine(d).run()
    (name,) = Forgiven(d.state_dir()).trials
    assert Forgiven(d.state_dir()).of(name) == {0}  # the stale trial uses no budget...
    assert again.backbones[0].tuned.trials == 1  # ...its point was asked again and run
    assert again.backbones[0].tuned.points == first.backbones[0].tuned.points


def test_set_aside_scores_do_not_steer_the_search_that_goes_on(tiny_folder, tmp_path):  # noqa: ANN001
    """A completed trial set aside (its runs stale) leaves its study; the search goes on in a study that
    holds the kept trials only, so TPE never learns from a score that does not count."""
    import optuna

    from distillrec.experiment.engine import Forgiven

    d = definition(tiny_folder, tmp_path, methods=[], budget=2)
    Engine(d).run()
    ledger = d.state_dir() / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    second = [i for i, line in enumerate(lines) if "seed1001" in line][1]  # trial 1's selection run
    ledger.write_text("\n".join(lines[:second] + lines[second + 1 :]) + "\n")
    engine = Engine(d)
    (base,) = optuna.get_all_study_names(engine.storage)
    old = optuna.load_study(study_name=base, storage=engine.storage).trials
    again = engine.run()
    assert Forgiven(d.state_dir()).of(base) == {1}
    moved = optuna.load_study(study_name=base, storage=engine.storage)
    assert moved.user_attrs["moved_to"] == f"{base}#2"
    kept = optuna.load_study(study_name=f"{base}#2", storage=engine.storage).trials
    assert [(t.params, t.value) for t in kept[:1]] == [(old[0].params, old[0].value)]  # trial 0 carried on
    assert len(kept) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in kept)
    assert again.backbones[0].tuned.trials == 2 and again.backbones[0].tuned.name == f"{base}#2"
    trained: list[str] = []
    real = executor_mod.run_job
    executor_mod.run_job = lambda job: trained.append(job.name) or real(job)  # type: ignore[assignment]
    try:
        third = Engine(d).run()  # resumes in the study moved to: nothing trained, nothing moved again
    finally:
        executor_mod.run_job = real  # type: ignore[assignment]
    assert trained == [] and third.backbones[0].tuned.points == again.backbones[0].tuned.points
    assert sorted(optuna.get_all_study_names(engine.storage)) == [base, f"{base}#2"]


def test_definitions_sharing_report_runs_keep_each_others_summaries(tiny_folder, tmp_path):  # noqa: ANN001
    from distillrec.experiment.report import finished_part

    ckd = definition(tiny_folder, tmp_path, controls=False, budget=1)
    sgfd = definition(tiny_folder, tmp_path, controls=False, budget=1, methods=["sgfd"])
    Engine(ckd).run()
    Engine(sgfd).run()  # the same tuned plain arm's report runs, summarised for SGFD's plug-in too
    for d in (ckd, sgfd):
        result, _ = finished_part(d.state_dir(), d)
        assert result.pending == [] and len(result.backbones) == 1, result.pending


def test_summaries_are_never_made_from_a_folder_that_holds_another_model(tiny_folder, tmp_path):  # noqa: ANN001
    """A report run whose summaries are missing is summarised from its folder only when that folder is the
    model the ledger's figures come from: a folder trained again elsewhere may hold another model."""
    from distillrec.experiment.engine import Pending
    from distillrec.training.checkpoint import read_json, write_json

    d = definition(tiny_folder, tmp_path, controls=False, budget=1)
    result = Engine(d).run()
    arm = result.backbones[0].plain
    spec, rec = arm.specs[0], arm.records[0]
    assert rec is not None
    engine = Engine(d, partial=True)
    assert engine.ledger.folder_gap(rec) == 0.0 and engine.ledger.holds_recorded_model(rec)
    with pytest.raises(Pending, match="1 runs not finished"):  # a missing summary, the folder on disk
        engine.run_specs([spec], extras=("a_new_summary",), report=True)
    folder = engine.ledger.run_dir(rec)
    assert folder is not None
    metrics = read_json(folder / "metrics.json", "")
    metrics["test"]["recall@20"] += 0.003  # as a second training on another processor would read
    write_json(folder / "metrics.json", metrics)
    assert engine.ledger.folder_gap(rec) == pytest.approx(0.003) and not engine.ledger.holds_recorded_model(
        rec
    )
    assert engine.run_specs([spec], extras=("a_new_summary",), report=True) == [rec]  # nothing made


def _comparison(arm: str, change: float, ci: tuple[float, float]):
    from distillrec.experiment.engine import ArmResult
    from distillrec.experiment.report import Comparison

    stats = {"relative_change": change, "ci95": list(ci)}
    return Comparison("d", "b", arm, "recall@20", ArmResult("plain", {}, 0.0), ArmResult(arm, {}, 0.0), stats)


def test_a_control_share_is_given_only_where_the_methods_change_stands_out_of_test_noise():
    """+0.5% with a CI across zero must not read as 'the control reaches 1160% of it'."""
    from distillrec.experiment.report import mechanism_lines

    noisy = mechanism_lines(
        [_comparison("ckd", 0.005, (-0.003, 0.005)), _comparison("ckd:ens", 0.058, (0.005, 0.014))]
    )
    assert "reaches" not in "".join(noisy) and "includes 0" in "".join(noisy)
    clear = mechanism_lines(
        [_comparison("ckd", 0.04, (0.001, 0.01)), _comparison("ckd:ens", 0.02, (0.0, 0.01))]
    )
    assert "ens reaches 50% of it" in "".join(clear)
    other_way = mechanism_lines(
        [_comparison("ckd", 0.015, (0.0002, 0.0045)), _comparison("ckd:self", -0.009, (-0.004, 0.001))]
    )
    assert "self reaches none of it (-0.9%)" in "".join(other_way) and "-60%" not in "".join(other_way)
    lost = mechanism_lines(
        [_comparison("ckd", -0.01, (-0.01, 0.001)), _comparison("ckd:ens", 0.02, (0.0, 0.01))]
    )
    assert "no gain to attribute" in "".join(lost)


def test_the_progress_line_estimates_the_time_left_from_trained_jobs_only(monkeypatch):
    from distillrec.cli import progress

    clock = iter([0.0, 600.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress.JobProgress(total=10, running=2, quiet=True)
    bar.add(cached=4, todo=6)
    assert bar.eta(6) == ""  # nothing trained yet: no pace to go by
    bar.done = 2  # two jobs trained in 600 s: 300 s each, 4 left
    assert bar.eta(4) == " (≤0h20m at this pace)"


def test_the_report_shows_the_methods_holm_figures_with_the_controls_left_out_of_the_family():
    """Counting controls makes the correction harsher on the method: a reader sees where a verdict rests on it."""
    from distillrec.experiment.report import family_lines

    method, control = _comparison("ckd", 0.05, (0.01, 0.02)), _comparison("ckd:ens", 0.01, (-0.01, 0.02))
    method.stats.update(p=0.03, p_holm=0.06)  # 2 comparisons counted: 0.03 × 2
    control.stats.update(p=0.4, p_holm=0.4)
    [line, _] = family_lines([method, control], alpha=0.05)
    assert "b + ckd 0.030" in line and "below 0.05: b + ckd (with the controls counted: none)" in line
    assert family_lines([method], alpha=0.05) == []  # no controls: nothing to separate


def test_across_backbones_lists_each_arms_changes_without_testing_them():
    from distillrec.experiment.report import across_lines

    comps = [_comparison("ckd", ch, (0.0, 0.01)) for ch in (0.04, -0.01, 0.02)] + [
        _comparison("ckd:x", 0.1, (0, 1))
    ]
    lines = across_lines(comps)
    assert "- **ckd**: higher in 2 of 3 cases, mean +1.7% (from -1.0% to +4.0%)." in lines
    assert not any("ckd:x" in ln for ln in lines)  # one case: nothing to set side by side
    assert "not a test" in lines[0]


def test_a_report_over_several_datasets_names_the_dataset_wherever_it_names_a_backbone():
    from distillrec.experiment.report import across_lines, family_lines, mechanism_lines

    comps = []
    for dataset in ("text-only", "image-only"):
        method, control = _comparison("sgfd", 0.02, (0.001, 0.01)), _comparison("sgfd:x", 0.01, (0.0, 0.01))
        for c in (method, control):
            c.dataset = dataset
            c.stats.update(p=0.01, p_holm=0.04)
        comps += [method, control]
    controls = mechanism_lines(comps)
    assert any(ln.startswith("- **b (text-only)**") for ln in controls)
    assert any(ln.startswith("- **b (image-only)**") for ln in controls)
    [family, _] = family_lines(comps, alpha=0.05)
    assert "b + sgfd (text-only) 0.020" in family and "b + sgfd (image-only) 0.020" in family
    assert across_lines(comps)[0].startswith("Across backbones and datasets")
    assert mechanism_lines(comps[:2])[2].startswith("- **b**:")  # one dataset: the backbone alone


def test_a_control_that_trained_the_methods_own_figures_is_said_to_tell_nothing():
    """SGFD chosen at ce_weight 0: the teachers never see the labels, so shuffling them changes nothing."""
    from distillrec.experiment.report import mechanism_lines

    method, control = (
        _comparison("sgfd", 0.014, (-0.001, 0.006)),
        _comparison("sgfd:x", 0.014, (-0.001, 0.006)),
    )
    for c in (method, control):
        c.distilled.point = {"ce_weight": 0.0, "kd_weight": 1.0} | (
            {"labels": "shuffled"} if c is control else {}
        )
        c.distilled.records = [{"metrics": {"test": {"recall@20": 0.16 + seed / 1000}}} for seed in (1, 2)]
    assert "the method's own figures" in "".join(mechanism_lines([method, control]))
    control.distilled.records[1] = {"metrics": {"test": {"recall@20": 0.17}}}
    assert "the method's own figures" not in "".join(mechanism_lines([method, control]))


def test_the_report_names_the_run_folders_of_its_figures_and_they_hold_those_figures(serial_run) -> None:  # noqa: ANN001
    import re
    from pathlib import Path

    result, comps = serial_run
    text = markdown(result, comps, "distillrec experiment")
    folders = re.findall(r"/ (plain|ckd): `([^`]+)/seed\{([\d,]+)\}`", text.split("## Run folders")[1])
    assert {arm for arm, _, _ in folders} == {"plain", "ckd"}
    for arm, parent, seeds in folders:
        assert not Path(parent).is_absolute() or Path(parent).is_relative_to(result.definition.state_dir())
        values = comps[0].values("plain" if arm == "plain" else "distilled")
        stored = {
            int(s): json.loads((Path(parent) / f"seed{s}" / "metrics.json").read_text())["test"][
                comps[0].metric
            ]
            for s in seeds.split(",")
        }
        assert stored == values


def test_a_narrowed_experiment_file_leaves_its_results_document_alone(
    tiny_folder, tmp_path, capsys, monkeypatch
):  # noqa: ANN001
    import sys

    import yaml

    from distillrec.cli import main

    doc = tmp_path / "doc.md"
    file = tmp_path / "e.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "datasets": [str(tiny_folder)],
                "backbones": ["mostpop"],
                "methods": [],
                "budget": 1,
                "selection_seeds": [1001],
                "seeds": [1, 2],
                "out": str(tmp_path / "state"),
                "results": str(doc),
            }
        )
    )

    def cli(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["distillrec", "experiment", str(file), *args, "--quiet"])
        with contextlib.suppress(SystemExit):
            main()
        return capsys.readouterr().err

    first = cli()
    assert doc.exists(), first
    assert "mostpop" in doc.read_text()
    doc.write_text("the whole definition's report\n")
    err = cli("--backbones", "mostpop")
    assert (
        doc.read_text() == "the whole definition's report\n" and "left as it is" in err and "backbones" in err
    )
    cli("--backbones", "mostpop", "--write", str(tmp_path / "own.md"))
    assert "mostpop" in (tmp_path / "own.md").read_text()


def test_an_off_point_outside_the_space_is_one_trial_beside_the_study(tiny_folder, tmp_path) -> None:  # noqa: ANN001
    """SGFD searches its weights over non-zero values; its off point still costs one trial of the budget."""
    d = definition(tiny_folder, tmp_path, controls=False, budget=2, methods=["sgfd"])
    result = Engine(d).run()
    search = result.backbones[0].searches["sgfd"]
    assert search.trials == 2 and result.backbones[0].plain.trials == 4
    (off, score), (other, _) = search.points
    assert off == {"ce_weight": 0.0, "kd_weight": 0.0, "t_decay": 10.0} and score is not None
    assert other["ce_weight"] > 0 and other["kd_weight"] > 0
    again = Engine(d).run()  # resumed: nothing new is trained, the same points are read back
    assert again.backbones[0].searches["sgfd"].points == search.points


class FakeSpec:
    """What a search needs of a run: a key and a seed."""

    def __init__(self, point: dict, seed: int) -> None:
        self.point, self.seed = point, seed

    def key(self) -> str:
        return json.dumps(self.point, sort_keys=True)


def _runs_scored_by(monkeypatch, score) -> None:  # noqa: ANN001
    """A search without training: a FakeSpec's run scores `score(point)`, and no run is stale."""
    monkeypatch.setattr(Engine, "run_specs", lambda self, specs, *a, **k: [{"p": s.point} for s in specs])
    monkeypatch.setattr(Engine, "_score", staticmethod(lambda specs, recs: score(recs[0]["p"])))
    monkeypatch.setattr(Engine, "_stale", lambda self, *a: frozenset())


def test_a_finite_space_is_searched_without_scoring_a_point_twice(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """TPE proposes points it has scored again; in a finite space such a proposal costs no trial (an unscored
    point is asked instead), and a search that has scored every point stops there, also when resumed."""
    import json

    import optuna

    from distillrec.models.space import parse_space

    def score(point: dict) -> float:
        return point["a"] / 10 + 0.01 * point["b"]

    _runs_scored_by(monkeypatch, score)
    d = definition(tiny_folder, tmp_path, methods=[], budget=4)
    space = parse_space({"a": [1, 2, 3], "b": [True, False]}, where="test")  # 6 points, more than 4
    engine = Engine(d)
    first = engine.search("s", space, 4, FakeSpec, None)
    keys = [json.dumps(p, sort_keys=True) for p, _ in first.points]
    assert first.trials == 4 and len(set(keys)) == 4
    assert (first.budget, first.exhausted) == (4, False)
    longer = engine.search("s", space, 10, FakeSpec, None)  # 10 asked of a 6-point space
    assert longer.trials == 6 and len({json.dumps(p, sort_keys=True) for p, _ in longer.points}) == 6
    assert longer.best == ({"a": 3, "b": True}, score({"a": 3, "b": True}))
    assert (longer.budget, longer.exhausted) == (10, True)  # the report says it used 6 of 10
    trials = optuna.load_study(study_name="s", storage=engine.storage).trials
    duplicates = [t for t in trials if t.user_attrs.get("duplicate")]
    assert duplicates and all(t.state == optuna.trial.TrialState.FAIL for t in duplicates)
    again = Engine(d).search("s", space, 10, FakeSpec, None)  # resumed: nothing asked, nothing pending
    assert again.points == longer.points and again.exhausted
    assert Engine(d, partial=True).search("s", space, 10, FakeSpec, None).points == longer.points
    assert len(optuna.load_study(study_name="s", storage=engine.storage).trials) == len(trials)


def test_a_changed_search_space_starts_a_study_of_its_own(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Optuna refuses a study whose choices change; the engine names the new space's study apart."""
    from distillrec.distill.registry import distiller_class

    d = definition(tiny_folder, tmp_path, controls=False, budget=1)
    first = Engine(d).run().backbones[0].searches["ckd"]
    cls = distiller_class("ckd")
    monkeypatch.setattr(cls, "search_space", {"lambda_kd": [0.0, 0.5], "lambda_g": [0.0, 1.0]})
    second = Engine(d).run().backbones[0].searches["ckd"]
    assert first.name.endswith("/ckd") and second.name.startswith(first.name + "~")
    monkeypatch.undo()
    assert Engine(d).run().backbones[0].searches["ckd"].name == first.name  # the first space: its study


def test_runs_trained_on_other_contents_of_a_dataset_are_trained_again(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A variant regenerated with other features keeps its name and its runs' keys: the ledger's data hash
    tells them apart, and the report does not mix runs of the two contents."""
    import numpy as np

    from distillrec.experiment.report import finished_part

    ds = make_dataset(n_users=60, n_items=50, per_user=8)
    ds.name = "regen"
    folder = write_mmrec(ds, tmp_path / "data" / "regen")
    d = definition(folder, tmp_path / "state", methods=[], budget=1)
    first = Engine(d).run()
    (rec,) = [r for r in first.backbones[0].plain.records if r and r["seed"] == 1]
    assert rec["data_hash"] and rec["dataset"] == "regen"
    assert rec["compute"].startswith("cpu: ")  # the processor kind: one model rounds otherwise across kinds
    image = np.load(f"{folder}/image_feat.npy")
    np.save(f"{folder}/image_feat.npy", image + 1e-3)  # the same items, other features
    result, _ = finished_part(d.state_dir(), d)
    assert result.pending and "0 of 1 trials finished" in result.pending[0]  # its one trial is stale
    trained: list[str] = []
    real = executor_mod.run_job
    monkeypatch.setattr(executor_mod, "run_job", lambda job: trained.append(job.name) or real(job))
    again = Engine(d).run()
    assert len(trained) == 3  # one selection run and two report runs, on the new contents
    (new,) = [r for r in again.backbones[0].plain.records if r and r["seed"] == 1]
    assert new["data_hash"] != rec["data_hash"]
    assert finished_part(d.state_dir(), d)[0].pending == []


def test_a_run_folder_is_not_reused_on_other_contents_of_its_dataset(tmp_path) -> None:  # noqa: ANN001
    import numpy as np

    from distillrec.data.registry import load_dataset
    from distillrec.experiment.api import train_one

    ds = make_dataset(n_users=40, n_items=30, per_user=6)
    ds.name = "regen2"
    folder = write_mmrec(ds, tmp_path / "regen2")
    spec = resolve_spec("vbpr", "regen2", {"train.epochs": 1}, None, 1, source=folder)
    train_one(spec, load_dataset(folder), tmp_path / "runs")
    np.save(f"{folder}/image_feat.npy", np.load(f"{folder}/image_feat.npy") * 2)
    with pytest.raises(ConfigError, match="other contents of dataset 'regen2'"):
        train_one(spec, load_dataset(folder), tmp_path / "runs", resume=True)


def test_the_protocol_names_a_stage_that_stopped_short_of_its_budget(serial_run) -> None:  # noqa: ANN001
    """ "Given" trials are not "used" trials when a finite space runs out: the report names the stage."""
    import copy

    result, comps = serial_run
    assert "stopped there" not in markdown(result, comps, "test")
    short = copy.deepcopy(result)
    plain = short.backbones[0].searches["plain"]
    plain.trials, plain.exhausted = plain.budget - 1, True
    text = markdown(short, comps, "test")
    assert f"vbpr / plain ({plain.budget - 1} of {plain.budget})" in text.split("## Tuned")[0]


def test_the_note_on_evaluated_controls_agrees_in_number(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """One evaluated control reads "it has", two read "they have": the sentence is about what they were given."""
    from distillrec.distill.registry import distiller_class
    from distillrec.experiment.report import _reference_note

    d = definition("unused", tmp_path)
    one = _reference_note(d)
    assert "`ckd:teacher_ensemble` is evaluated" in one and "so it has had the tuning stage's 2 trials" in one
    controls = {"teacher_ensemble": "a:b", "teacher_image": "c:d"}
    monkeypatch.setattr(distiller_class("ckd"), "reference_controls", controls)
    two = _reference_note(d)
    assert "are evaluated" in two and "of their own, so they have had" in two and " it " not in two
    assert _reference_note(definition("unused", tmp_path, controls=False)) == ""


def test_the_serial_executor_gives_the_callers_thread_count_back(tiny_folder, tmp_path) -> None:  # noqa: ANN001
    """Jobs run in the caller's process under the serial executor: their thread share must not outlive them."""
    import torch

    seen = []
    real = executor_mod._run_job

    def spy(job):  # noqa: ANN001, ANN202
        seen.append(torch.get_num_threads())
        return real(job)

    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(executor_mod, "_run_job", spy)
        Engine(definition(tiny_folder, tmp_path, methods=[], budget=1, threads=3)).run()
    assert seen and set(seen) == {3} and torch.get_num_threads() == 1


def test_points_that_train_one_model_are_one_point_to_a_search(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """CKD at lambda_kd = 0 trains the plain backbone whatever lambda_g: a search scores that family once."""
    import json

    from distillrec.distill.registry import distiller_class
    from distillrec.models.space import parse_space

    ckd = distiller_class("ckd")
    assert ckd.canonical_point({"lambda_kd": 0.0, "lambda_g": 5.0}) == ckd.off_point
    assert ckd.canonical_point({"lambda_kd": 0.01, "lambda_g": 5.0}) == {"lambda_kd": 0.01, "lambda_g": 5.0}
    assert distiller_class("sgfd").canonical_point({"kd_weight": 0.0}) == {"kd_weight": 0.0}  # none declared

    _runs_scored_by(monkeypatch, lambda point: point["lambda_kd"])
    d = definition(tiny_folder, tmp_path, methods=[], budget=4)
    space = parse_space({"lambda_kd": [0.0, 0.1, 1.0], "lambda_g": [0.0, 5.0]}, where="test")  # 5 models
    found = Engine(d).search("s", space, 10, FakeSpec, ckd.off_point, ckd.canonical_point)
    families = [json.dumps(ckd.canonical_point(p), sort_keys=True) for p, _ in found.points]
    assert found.exhausted and found.trials == len(set(families)) == 5


def _off_point_pair(plain_values, distilled_values, compute=(None, None), point=None):
    """A plain arm and an SGFD arm on the same backbone point, with their per-seed test values."""
    from distillrec.distill.sgfd import SGFD
    from distillrec.experiment.engine import ArmResult
    from distillrec.experiment.report import Comparison
    from distillrec.experiment.spec import DataSpec, RunSpec

    base = RunSpec(model="vbpr", data=DataSpec(name="d"), params={"dropout": 0.2}, train={"lr": 0.001})
    options = SGFD.off_point if point is None else {**SGFD.off_point, **point}
    arms = []
    for name, values, kind, spec in (
        ("plain", plain_values, compute[0], base),
        (
            "sgfd",
            distilled_values,
            compute[1],
            base.model_copy(update={"distill": "sgfd", "distill_options": options}),
        ),
    ):
        specs = [spec.with_seed(seed) for seed in range(1, len(values) + 1)]
        records = [
            {"run_dir": f"r{seed}", "compute": kind, "metrics": {"test": {"recall@20": v}}}
            for seed, v in enumerate(values, 1)
        ]
        arms.append(ArmResult(name, {}, 0.0, specs, records))
    change = sum(distilled_values) / sum(plain_values) - 1
    return Comparison("d", "b", "sgfd", "recall@20", arms[0], arms[1], {"relative_change": change})


def test_an_arm_chosen_at_its_off_point_is_read_as_the_plain_model_and_its_drift_is_not_the_methods():
    """MAML + SGFD at ce_weight = kd_weight = 0 read -1.2% against its own plain model, trained in another
    session: the report must say that this is two trainings of one model, and on what processors."""
    from distillrec.experiment.report import off_point_lines

    same = off_point_lines([_off_point_pair([0.17, 0.18], [0.17, 0.18])])
    assert same[2].endswith("its runs give the plain arm's figures.")
    avx = ("cpu: AVX2 (x)", "cpu: AVX512 (y)")
    [line] = [
        ln for ln in off_point_lines([_off_point_pair([0.17, 0.18], [0.16, 0.18], avx)]) if ln.startswith("-")
    ]
    assert "differs by -2.9%" in line and "AVX2 (x)" in line and "AVX512 (y)" in line
    assert "not an effect of the method" in line
    unrecorded = "".join(off_point_lines([_off_point_pair([0.17], [0.16], (None, "cpu: AVX512 (y)"))]))
    assert "do not all record their processor" in unrecorded
    one_kind = "".join(off_point_lines([_off_point_pair([0.17], [0.16], ("cpu: AVX2 (x)",) * 2)]))
    assert "a fault to report" in one_kind  # one model on one kind of processor must train alike
    assert off_point_lines([_off_point_pair([0.17], [0.16], point={"kd_weight": 1.0})]) == []  # SGFD itself
    other_backbone = _off_point_pair([0.17], [0.16])
    other_backbone.distilled.specs[0] = other_backbone.distilled.specs[0].model_copy(update={"params": {}})
    assert off_point_lines([other_backbone]) == []  # another backbone point: not the plain arm's model
    reference = _off_point_pair([0.17], [0.16])
    reference.distilled.records[0]["run_dir"] = None  # built from cached runs, trains nothing
    assert off_point_lines([reference]) == []


def test_a_runs_processor_kind_is_where_it_was_made_not_where_it_is_read(tmp_path):
    """A finished run read again on another machine keeps the kind it recorded; one made before runs recorded
    it has none (not this machine's)."""
    from distillrec.experiment.executor import Job, _compute
    from distillrec.training.checkpoint import write_json

    job = Job("{}", str(tmp_path))
    assert _compute(job).startswith("cpu: ")  # nothing trained: a reference arm evaluated here
    write_json(tmp_path / "env.json", {"compute": "cpu: AVX2 (elsewhere)"})
    assert _compute(job, tmp_path) == "cpu: AVX2 (elsewhere)"
    write_json(tmp_path / "env.json", {"torch": "2.13.0"})
    assert _compute(job, tmp_path) is None
