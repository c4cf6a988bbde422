"""Does `diagnose` predict? Its verdict on each tuned plain backbone beside what the fair experiment measured.

For every experiment definition given (the methods' own reports on the original data and the premise
variants, experiments/diagnose-*.yaml), the finished comparisons of each method's main arm (controls left
out) are read back without training anything (the engine in `partial` mode on a copy of the studies). For
each comparison, the method's diagnostic runs on the plain arm's first report seed run — the tuned plain
backbone a user would diagnose; trained again from its specification where this checkout lacks the folder —
and is set beside the measured outcome: the relative change of the test
metric, its per-user bootstrap interval and the Holm-adjusted p of its report. "Helped" is a gain with
Holm-adjusted p below the report's α.

Per method: the cases, how often the verdict named the outcome (cases where it said "cannot tell" or "not
applicable" left out), Spearman's rank correlation between the diagnostic quantity and the measured change
(n and p), and the threshold `thresholds.fit` would choose from these cases beside the one shipped.

A quantity, once measured, is kept beside the ledger (`diagnose.records`, `<state>/diagnoses.jsonl`, under
version control) and read from there by later invocations, so a fresh checkout trains nothing to reproduce
the document; `remeasure` measures every quantity again.

Every diagnosed folder is checked against the ledger: run folders are not under version control, so a folder
trained again (now or by an earlier invocation, here or on another machine) may hold another model of the same
specification (training drifts between processors that round otherwise). The diagnostic then reads that model,
not the one whose figures the comparison reports; the report names each such case and by how much its test
figures differ, since it also shows how much the quantity moves between two trainings of one specification.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distillrec.diagnose.records import VERSION as RECORD_VERSION
from distillrec.diagnose.records import DiagnosisRecords, Record
from distillrec.diagnose.thresholds import Case, fit
from distillrec.errors import DistillrecError

log = logging.getLogger("distillrec.proof")

MAIN_ARMS = ("ckd", "sgfd", "cdl")
EXACT_MAX_N = 7  # up to 7 pairs (5,040 orderings) Spearman's p is exact, by permutation


@dataclass(frozen=True)
class Outcome:
    """One comparison: the diagnostic on the plain backbone, and what the method did to it."""

    method: str
    dataset: str
    backbone: str
    definition: str
    run: str  # the diagnosed plain run folder
    value: float | None
    verdict: str
    threshold: float | None
    relative_change: float
    ci95_relative: tuple[float, float] | None
    p_holm: float | None
    n_seeds: int
    helped: bool

    loo_verdict: str = "cannot tell"  # the verdict under the threshold fitted to the method's other cases
    loo_threshold: float | None = None
    # largest absolute difference of the diagnosed run's test metrics from the ledger's record of that run;
    # 0: the very model whose figures the comparison reports; None: not comparable (no test metrics)
    ledger_gap: float | None = None
    # the quantity was read from the state's records, measured by an earlier invocation
    recorded: bool = False
    values: tuple[float | None, ...] = ()  # each diagnosed report run's, in seed order; value is their mean
    interval: tuple[float, float] | None = None  # the mean's 95% interval over several runs

    @property
    def reported_model(self) -> bool:
        """Whether the diagnosed folder holds the model whose figures the comparison reports."""
        from distillrec.experiment.engine import SAME_MODEL_TOLERANCE

        return self.ledger_gap is None or self.ledger_gap <= SAME_MODEL_TOLERANCE

    @property
    def predicted(self) -> bool | None:
        """Whether the left-out verdict named the outcome; None when it named none."""
        if self.loo_verdict == "likely to help":
            return self.helped
        if self.loo_verdict == "unlikely":
            return not self.helped
        return None


def left_out(outcomes: list[Outcome]) -> list[Outcome]:
    """Each case's verdict under the threshold `fit` chooses from the method's *other* measured cases
    (leave-one-out), so no case is judged by a threshold it helped to set; "cannot tell" without others."""
    from dataclasses import replace

    from distillrec.diagnose.thresholds import verdict

    out = []
    for o in outcomes:
        others = tuple(
            Case(x.value, x.helped, x.run)
            for x in outcomes
            if x is not o and x.method == o.method and x.value is not None
        )
        if o.value is None or not others:
            out.append(replace(o, loo_verdict="cannot tell", loo_threshold=None))
            continue
        t = fit(others)
        out.append(replace(o, loo_verdict=verdict(o.value, t, o.interval), loo_threshold=t))
    return out


def _diagnostic(method: str, run_dir: Path, train_teachers: bool, device: str) -> dict[str, Any]:
    from distillrec.diagnose.report import diagnose_cdl, diagnose_ckd, diagnose_sgfd
    from distillrec.experiment.api import load_run

    run = load_run(run_dir, device=device)
    if method == "ckd":
        return diagnose_ckd(run, train_teachers)
    return diagnose_sgfd(run) if method == "sgfd" else diagnose_cdl(run)


def _retrained(result: Any, arm: Any, index: int, device: str) -> Path:
    """A plain report run's folder trained again from its specification, as the experiment's job trained
    it (same threads per job): run folders are not kept under version control, the ledger is, so a fresh
    checkout has the figures but not the models to diagnose. Whether the new model is the ledger's is
    checked by the caller (`Ledger.folder_gap`), as for every diagnosed folder."""
    from distillrec.experiment.executor import Job, run_job, threads_per_job

    spec, rec = arm.specs[index], arm.records[index]
    definition = result.definition
    jobs = definition.jobs if definition.executor != "serial" else 1
    log.info(
        "training %s seed %d again to diagnose it (its folder is not in this checkout)", spec.label, spec.seed
    )
    folder = result.ledger.run_dir(rec)
    out = folder.parents[2]  # <out>/<dataset>/<label>@<key>/seed<n>: where the experiment's jobs trained it
    new = run_job(Job(spec.model_dump_json(), str(out), device, threads_per_job(jobs, definition.threads)))
    if Path(new["run_dir"]).resolve() != folder.resolve():
        raise DistillrecError(
            f"{folder}: the ledger's folder is not where its specification trains ({new['run_dir']})"
        )
    return Path(new["run_dir"])


@dataclass(frozen=True)
class _Measured:
    value: float | None
    run: str
    gap: float | None
    recorded: bool


def _measure(
    method: str,
    result: Any,
    arm: Any,
    index: int,
    records: DiagnosisRecords,
    train_teachers: bool,
    device: str,
    retrain: bool,
    remeasure: bool,
) -> _Measured | None:
    """The quantity of the plain arm's report run `index`: from the state's records, else measured (on its
    folder, trained again where missing and `retrain`) and recorded; None without a folder to diagnose."""
    from distillrec.diagnose.report import QUANTITIES

    rec = arm.records[index]
    kept = None if remeasure else records.get(rec["id"], method, QUANTITIES[method])
    if kept is not None:
        return _Measured(kept.value, kept.run, kept.ledger_gap, True)
    run_dir = result.ledger.run_dir(rec)
    if run_dir is not None and not (run_dir / "metrics.json").exists() and retrain:
        run_dir = _retrained(result, arm, index, device)
    if run_dir is None or not (run_dir / "metrics.json").exists():
        return None
    value = _finite(_diagnostic(method, run_dir, train_teachers, device)["value"])
    gap = result.ledger.folder_gap(rec)
    if value is not None:
        records.add(Record(rec["id"], method, QUANTITIES[method], RECORD_VERSION, value, str(run_dir), gap))
    return _Measured(value, str(run_dir), gap, False)


def collect(
    definitions: list[Path],
    train_teachers: bool = True,
    device: str = "cpu",
    retrain: bool = True,
    remeasure: bool = False,
    seeds: int = 1,
) -> tuple[list[Outcome], list[str]]:
    """The outcomes of every finished main-arm comparison of the definitions (each with how far its
    diagnosed folders are from the ledger's figures), and what is still pending. The diagnostic runs on the
    plain arm's first `seeds` report runs; over several, their mean is judged, "cannot tell" where the
    threshold lies inside its 95% interval. A quantity measured by an earlier invocation is read from the
    state folder's records (`diagnose.records`) unless `remeasure`."""
    from distillrec.diagnose.report import THRESHOLDS
    from distillrec.diagnose.thresholds import mean_interval, verdict
    from distillrec.experiment.definition import load_definition
    from distillrec.experiment.report import finished_part

    if seeds < 1:
        raise DistillrecError(f"seeds must be at least 1, not {seeds}")
    outcomes: list[Outcome] = []
    pending: list[str] = []
    for file in definitions:
        definition = load_definition(file)
        result, comps = finished_part(definition.state_dir(), definition)
        records = DiagnosisRecords(definition.state_dir())
        pending += [f"{file}: {p}" for p in result.pending]
        pending += [f"{file}: failed: {f}" for f in result.failures]
        for c in comps:
            if c.arm not in MAIN_ARMS:
                continue
            indices = [i for i, r in enumerate(c.plain.records) if r][:seeds]  # the first finished seeds
            measured = [
                _measure(c.method, result, c.plain, i, records, train_teachers, device, retrain, remeasure)
                for i in indices
            ]
            if not measured or any(m is None for m in measured):
                pending.append(f"{file}: {c.dataset}/{c.backbone}: no plain report run folder to diagnose")
                continue
            ms = [m for m in measured if m is not None]
            values = tuple(m.value for m in ms)
            value, interval = (None, None)
            if all(v is not None for v in values):
                value, interval = mean_interval([v for v in values if v is not None])
            gaps = [m.gap for m in ms if m.gap is not None]
            p = c.stats.get("p_holm")
            change = c.stats["relative_change"]
            ci = c.stats.get("ci95_relative")
            threshold = THRESHOLDS[c.method].value
            outcomes.append(
                Outcome(
                    method=c.method,
                    dataset=c.dataset,
                    backbone=c.backbone,
                    definition=str(file),
                    run=ms[0].run,
                    value=value,
                    verdict=verdict(value, threshold, interval),
                    threshold=threshold,
                    relative_change=change,
                    ci95_relative=(ci[0], ci[1]) if ci else None,
                    p_holm=p,
                    n_seeds=int(c.stats.get("n_seeds", 0)),
                    helped=bool(p is not None and p < definition.alpha and change > 0),
                    ledger_gap=max(gaps) if gaps else None,
                    recorded=all(m.recorded for m in ms),
                    values=values,
                    interval=interval,
                )
            )
    return left_out(outcomes), pending


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def spearman(xs: list[float], ys: list[float]) -> tuple[float | None, float | None, int]:
    """Spearman's ρ with its two-sided p (exact over every ordering up to EXACT_MAX_N pairs), and n;
    (None, None, n) below three pairs or for a constant side."""
    from scipy import stats

    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None, n
    rho, p = stats.spearmanr(xs, ys)
    if n <= EXACT_MAX_N:  # the t approximation is wrong for few pairs (ρ = 1 gives p = 0 at n = 3)
        import itertools

        rx, ry = stats.rankdata(xs), stats.rankdata(ys)
        ranked = [stats.spearmanr(rx, perm)[0] for perm in itertools.permutations(ry)]
        p = sum(abs(r) >= abs(rho) - 1e-12 for r in ranked) / len(ranked)
    return float(rho), float(p), n


def summary(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Per method: cases, verdicts that named the outcome, Spearman ρ, and the threshold re-fitted here."""
    out: dict[str, dict[str, Any]] = {}
    for method in sorted({o.method for o in outcomes}):
        cases = [o for o in outcomes if o.method == method]
        measured = [o for o in cases if o.value is not None]
        rho, p, n = spearman([o.value for o in measured], [o.relative_change for o in measured])  # type: ignore[misc]
        named = [o.predicted for o in cases if o.predicted is not None]
        refit = fit(tuple(Case(o.value, o.helped, o.run) for o in measured)) if measured else None  # type: ignore[arg-type]
        out[method] = {
            "cases": len(cases),
            "helped": sum(o.helped for o in cases),
            "verdicts_named": len(named),
            "verdicts_right": sum(bool(x) for x in named),
            "spearman_rho": rho,
            "spearman_p": p,
            "spearman_n": n,
            "threshold_shipped": next((o.threshold for o in cases if o.threshold is not None), None),
            "threshold_refit": refit,
        }
    return out


def to_json(outcomes: list[Outcome], pending: list[str]) -> dict[str, Any]:
    return {
        "outcomes": [{**asdict(o), "predicted": o.predicted} for o in outcomes],
        "summary": summary(outcomes),
        "pending": pending,
    }


def _num(x: float | None, spec: str = ".4g") -> str:
    return "–" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}%"


def _conclusion(s: dict[str, Any]) -> str:
    if s["cases"] == 0:
        return "No finished comparison yet."
    parts = [
        f"The method helped in {s['helped']} of {s['cases']} case(s); the left-out verdict (threshold fitted "
        f"to the other cases) named the outcome in {s['verdicts_right']} of the {s['verdicts_named']} where it "
        "named one."
    ]
    if s["helped"] == 0:
        likely = s["verdicts_named"] - s["verdicts_right"]
        tested = (
            f"the {likely} 'likely to help' verdict(s) were wrong"
            if likely
            else "no 'likely to help' verdict has been put to the test"
        )
        parts.append(
            f"With no case where the method helped, an 'unlikely' could not be wrong and {tested}: the advice "
            "is not yet shown to predict a gain."
        )
    if s["spearman_rho"] is None:
        parts.append(
            f"Too few measured cases (n = {s['spearman_n']}) for a rank correlation between the quantity "
            "and the gain."
        )
    else:
        holds = "goes" if s["spearman_p"] < 0.05 and s["spearman_rho"] > 0 else "is not shown to go"
        parts.append(
            f"Spearman ρ between the quantity and the measured change {s['spearman_rho']:+.2f} "
            f"(n = {s['spearman_n']}, p = {s['spearman_p']:.3g}): a larger quantity {holds} with a "
            "larger gain at α = 0.05."
        )
    return " ".join(parts)


def _recorded_note(o: Outcome) -> str:
    """What the shipped evidence (`thresholds.EVIDENCE`) records for the same run, measured by an earlier
    diagnosis: the only measure here of how far the quantity moved between the two trainings."""
    from distillrec.diagnose.thresholds import EVIDENCE

    run = Path(o.run)
    name = f"{run.parent.name}/{run.name}"
    # the folder's name, not a prefix of another's (seed1 is not seed10)
    recorded = [c.value for c in EVIDENCE.get(o.method, ()) if re.search(rf"{re.escape(name)}\b", c.source)]
    if len(recorded) != 1 or o.value is None:
        return ""
    return f"; its quantity {o.value:.4g} here, {recorded[0]:.4g} in the shipped evidence for this run"


def _diagnosed(outcomes: list[Outcome]) -> str:
    n = max((len(o.values) for o in outcomes), default=1)
    if n <= 1:
        return "first report-seed run"
    return (
        f"first {n} report-seed runs, their mean judged (the quantity column gives its 95% interval; "
        "'cannot tell' where the threshold lies inside it)"
    )


def _quantity(o: Outcome) -> str:
    if o.interval is None:
        return _num(o.value)
    return f"{_num(o.value)} ({_num(o.interval[0])} … {_num(o.interval[1])})"


def _what_would(outcomes: list[Outcome], stats: dict[str, dict[str, Any]]) -> list[str]:
    """Where the advice is not shown to predict: what would show it, drawn from these cases."""
    unshown = [m for m, s in stats.items() if s["helped"] == 0 or (s["spearman_p"] or 1.0) >= 0.05]
    if not unshown:
        return []
    lines = ["## What would show the advice predicts", ""]
    if any(stats[m]["helped"] == 0 for m in unshown):
        names = ", ".join(m.upper() for m in unshown if stats[m]["helped"] == 0)
        lines.append(
            f"- A case where the method helps ({names}: none yet). Without one a threshold can only be the "
            "largest quantity at which the method did not help, and no 'likely to help' can be confirmed; "
            "a stronger premise variant, or a larger test set for a gain now inside its interval, is where "
            "to look for one."
        )
    near = [
        o
        for o in outcomes
        if o.value is not None
        and o.loo_threshold is not None
        and o.interval is None
        and abs(o.value - o.loo_threshold) <= 0.1 * abs(o.loo_threshold)
    ]
    if near:
        lines.append(
            f"- Sturdier quantities: {len(near)} case(s) lie within a tenth of their left-out threshold on one "
            "seed-1 run, where another training of the specification (or of its teachers) can move the "
            "quantity across it. `--seeds N` judges the mean over each plain arm's first N report runs, "
            "'cannot tell' where the threshold lies inside its 95% interval."
        )
    negative = [m.upper() for m in unshown if (stats[m]["spearman_rho"] or 0.0) < 0]
    if negative:
        lines.append(
            f"- A quantity that ranks the gains ({', '.join(negative)}: a larger quantity went with a smaller "
            "change here): the measured premise is not what decides the outcome on these cases."
        )
    return [*lines, ""] if len(lines) > 2 else []


def markdown(outcomes: list[Outcome], pending: list[str], command: str) -> str:
    """docs/results/diagnose.md: per method the cases, verdict vs outcome, and the rank correlation."""
    lines = [
        "# Does `distillrec diagnose` predict the gain?",
        "",
        f"Regenerate: `{command}`.",
        "",
        "Each row is one comparison of a fair experiment (tuned plain backbone against the distilled arm, "
        "equal budgets, fresh report seeds, Holm-adjusted across its report). The diagnostic ran on the plain "
        f"arm's {_diagnosed(outcomes)}; *helped* is a gain with Holm-adjusted p below α. The shipped thresholds "
        "(`distillrec/diagnose/thresholds.py`) are fitted to these very cases, so their verdicts here prove "
        "nothing; each case is judged instead by its *left-out* verdict, under the threshold `fit` chooses from "
        "the method's other cases (leave-one-out; 'cannot tell' when there is no other case). It is *right* "
        "when 'likely to help' met a significant gain or 'unlikely' met none. Spearman's p is exact (every "
        f"ordering) up to {EXACT_MAX_N} cases. Each quantity is measured once and kept in the experiment's state "
        "folder (`diagnoses.jsonl`); "
        f"{sum(o.recorded for o in outcomes)} of the {len(outcomes)} here were read from there "
        "(`--remeasure` measures them again).",
        "",
    ]
    stats = summary(outcomes)
    for method, s in stats.items():
        lines += [f"## {method.upper()}", "", _conclusion(s), ""]
        lines += [
            "| dataset | backbone | quantity | shipped verdict | left-out threshold | left-out verdict "
            "| change (95% CI) | Holm p | outcome | right? |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for o in (o for o in outcomes if o.method == method):
            ci = f" ({_pct(o.ci95_relative[0])} … {_pct(o.ci95_relative[1])})" if o.ci95_relative else ""
            right = {True: "yes", False: "no", None: "–"}[o.predicted]
            lines.append(
                f"| {o.dataset} | {o.backbone} | {_quantity(o)}{'' if o.reported_model else ' †'} | {o.verdict} | {_num(o.loo_threshold)} "
                f"| {o.loo_verdict} | {_pct(o.relative_change)}{ci} "
                f"| {_num(o.p_holm, '.3g')} | {'helped' if o.helped else 'no gain'} | {right} |"
            )
        lines += [
            "",
            f"Threshold shipped {_num(s['threshold_shipped'])}; fitted to these cases "
            f"{_num(s['threshold_refit'])} (`diagnose.thresholds.fit`).",
            "",
        ]
    other = [o for o in outcomes if not o.reported_model]
    if other:
        lines += [
            "## † Diagnosed models that are not the reported ones",
            "",
            "Run folders are not under version control, the ledger is: where a checkout lacked a folder it was "
            "trained again from its specification, and this training did not reproduce the ledger's figures "
            "(processors that round otherwise drift apart over a training). The diagnostic read that second "
            "model of the same specification, not the one whose figures the comparison reports, so read its "
            "quantity as one training's draw (where the shipped evidence records the run, the two values show "
            "how far the quantity moves between trainings). Test metrics of the diagnosed folder against the "
            "ledger's record of the run:",
            "",
            *[
                f"- {o.method.upper()}, {o.dataset}/{o.backbone}: `{o.run}` differs by up to {o.ledger_gap:.2g}"
                + _recorded_note(o)
                for o in other
            ],
            "",
        ]
    lines += _what_would(outcomes, stats)
    if pending:
        lines += ["## Not finished yet", "", *[f"- {p}" for p in pending], ""]
    return "\n".join(lines)
