"""An experiment's answer: each distilled arm against the plain arm of the same backbone, with the test
set's own uncertainty (a per-user paired bootstrap), the training noise (a paired test over report seeds),
and Holm's correction across the comparisons of one report. A difference is called only when it holds both
across seeds and across users (the larger of the two p-values), after the correction."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillrec.experiment.definition import ExperimentDef
from distillrec.experiment.engine import ArmResult, Engine, ExperimentResult, Forgiven, Ledger
from distillrec.experiment.plugins import PLUGINS
from distillrec.experiment.results import format_p, mean_std
from distillrec.experiment.stats import combined_p, holm, paired_bootstrap, paired_seed_test, verdict
from distillrec.models.space import describe, parse_space

SECONDARY = {
    "recall@20": ("recall@10", "ndcg@10", "ndcg@20"),
    "hit@20": ("hit@10", "ndcg@10", "ndcg@20", "mrr@20"),
}


@dataclass
class Comparison:
    dataset: str
    backbone: str
    arm: str
    metric: str
    plain: ArmResult
    distilled: ArmResult
    stats: dict[str, Any]

    @property
    def method(self) -> str:
        return self.arm.split(":", 1)[0]

    def values(self, which: str, metric: str | None = None) -> dict[int, float]:
        arm = self.plain if which == "plain" else self.distilled
        m = metric or self.metric
        return {
            s.seed: r["metrics"]["test"][m]
            for s, r in zip(arm.specs, arm.records, strict=True)
            if r is not None and m in r["metrics"]["test"]
        }

    def plain_extras(self, plugin: str) -> list[dict[str, Any]]:
        return [r.get("extras", {}).get(plugin, {}) for r in self.plain.records if r]

    def distilled_extras(self, plugin: str) -> list[dict[str, Any]]:
        return [r.get("extras", {}).get(plugin, {}) for r in self.distilled.records if r]


def several_datasets(datasets: Iterable[str]) -> bool:
    """Whether a report spans datasets, so that every line naming a backbone names its dataset too."""
    return len(set(datasets)) > 1


def where(dataset: str, several: bool) -> str:
    """The dataset beside a backbone's name, where the report spans more than one."""
    return f" ({dataset})" if several else ""


def _per_user_matrix(result: ExperimentResult, arm: ArmResult, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """[seeds, users] of one arm's per-user test values (finished seeds only) and the user ids."""
    rows, users = [], None
    for spec, rec in zip(arm.specs, arm.records, strict=True):
        if rec is None:
            continue
        u, values = result.ledger.per_user(spec)
        if users is not None and not np.array_equal(u, users):
            raise ValueError(f"{spec.label}: report runs were evaluated on different users")
        users = u
        rows.append(values[metric])
    return np.asarray(rows), users if users is not None else np.empty(0, dtype=np.int64)


def comparisons(result: ExperimentResult) -> list[Comparison]:
    """Every distilled arm against its plain arm, Holm-adjusted across the whole report."""
    out: list[Comparison] = []
    d = result.definition
    for b in result.backbones:
        plain_users, users = _per_user_matrix(result, b.plain, b.metric)
        for arm in b.arms:
            c = Comparison(b.dataset, b.backbone, arm.name, b.metric, b.plain, arm, {})
            seed_test = paired_seed_test(c.values("plain"), c.values("distilled"))
            dist_users, users2 = _per_user_matrix(result, arm, b.metric)
            boot = None
            if len(plain_users) and len(dist_users) and np.array_equal(users, users2):
                boot = paired_bootstrap(plain_users, dist_users, n_resamples=d.bootstrap, seed=0)
            c.stats = {
                "relative_change": seed_test.relative_change,
                "p_seeds": seed_test.p,
                "n_seeds": seed_test.n,
                "p_users": boot.p if boot else None,
                "ci95": [boot.low, boot.high] if boot else None,
                "ci95_relative": [boot.relative_low, boot.relative_high] if boot else None,
                "n_users": boot.n_users if boot else 0,
                "p": combined_p(seed_test.p, boot.p if boot else None),
            }
            out.append(c)
    adjusted = holm([c.stats["p"] for c in out])
    for c, p in zip(out, adjusted, strict=True):
        c.stats["p_holm"] = p
        ci = tuple(c.stats["ci95"]) if c.stats["ci95"] else (float("nan"), float("nan"))
        c.stats["verdict"] = verdict(
            c.metric, c.stats["relative_change"], p, ci, c.stats["n_seeds"], c.stats["n_users"], alpha=d.alpha
        )
    return out


def _summary(values: dict[int, float]) -> dict[str, Any]:
    vals = [values[s] for s in sorted(values)]
    mean, std = mean_std(vals) if vals else (float("nan"), float("nan"))
    return {"mean": mean, "std": std, "values": vals}


def to_json(result: ExperimentResult, comps: list[Comparison]) -> dict[str, Any]:
    d = result.definition
    rows = []
    for c in comps:
        rows.append(
            {
                "dataset": c.dataset,
                "backbone": c.backbone,
                "method": c.method,
                "arm": c.arm,
                "metric": c.metric,
                "plain": _summary(c.values("plain")),
                "distilled": _summary(c.values("distilled")),
                "relative_change": c.stats["relative_change"],
                "p_seeds": c.stats["p_seeds"],
                "p_users": c.stats["p_users"],
                "p_holm": c.stats["p_holm"],
                "ci95": c.stats["ci95"],
                "ci95_relative": c.stats["ci95_relative"],
                "verdict": c.stats["verdict"],
                "trials": {"plain": c.plain.trials, "distilled": c.distilled.trials},
                "chosen": {"plain": c.plain.point, "distilled": c.distilled.point},
                "selection_seeds": list(d.selection_seeds),
                "report_seeds": list(d.seeds),
            }
        )
    backbones = [
        {
            "dataset": b.dataset,
            "backbone": b.backbone,
            "metric": b.metric,
            "plain": _summary(
                {
                    s.seed: r["metrics"]["test"][b.metric]
                    for s, r in zip(b.plain.specs, b.plain.records, strict=True)
                    if r
                }
            ),
            "chosen": b.plain.point,
            "trials": b.plain.trials,
            "searches": {
                name: {
                    "trials": search.trials,
                    "budget": search.budget,
                    "distinct_points": search.distinct_points,
                    "failed": search.failed,
                    "stopped_short": search.exhausted,  # its finite space wholly scored before the budget
                }
                for name, search in b.searches.items()
            },
        }
        for b in result.backbones
    ]
    return {
        "experiment": d.name,
        "comparisons": rows,
        "backbones": backbones,
        "failures": result.failures,
        "pending": result.pending,
    }


# ----------------------------------------------------------------------------- markdown
def _fmt_point(point: dict[str, Any]) -> str:
    return (
        ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
        or "defaults"
    )


def _ms(values: dict[int, float]) -> str:
    if not values:
        return "–"
    m, s = mean_std(list(values.values()))
    return f"{m:.4f} ± {s:.4f}"


def markdown(result: ExperimentResult, comps: list[Comparison], command: str) -> str:
    d = result.definition
    first = result.backbones[0] if result.backbones else None
    lines = [
        f"# {d.title or d.name}",
        "",
        f"Written by `{command}` (definition: `{d.name}`).",
        "",
        *(
            [
                f"**In progress**: not finished yet, so not in this document: {'; '.join(result.pending)}. "
                "Rerunning the command resumes the experiment where it stopped.",
                "",
            ]
            if result.pending
            else []
        ),
        "## Protocol",
        "",
        f"Every choice on validation only. Each backbone is tuned with {d.budget} trials over its declared search "
        f"space{'; ' if d.methods else '. '}"
        + (
            "each distilled arm then starts from the tuned backbone (its teachers too) and gets "
            f"{d.budget} trials over the method's space, the off point (every weight 0) among them, while the "
            f"plain arm gets {d.budget} more trials of its own: both arms are given {2 * d.budget} trials. "
            if d.methods
            else ""
        )
        + _exhausted_note(result)
        + _reference_note(d)
        + f"A trial's score is the mean validation metric over the selection seeds {d.selection_seeds}, which "
        f"are never reported. The chosen points are run on the report seeds {d.seeds}. Sampler: "
        f"{'a grid walk where one stage covers a finite space, else ' if d.sampler == 'auto' else ''}"
        f"{'TPE' if d.sampler != 'grid' else 'grid'} (seed {d.sampler_seed}). Options applied to every run: "
        f"{_fmt_point(d.set) if d.set else 'none'}"
        + "".join(f"; {b} only: {_fmt_point(o)}" for b, o in d.backbone_set.items() if o)
        + ".",
        "",
    ]
    if first is not None and not comps:
        lines += [
            f"Test metric: {first.metric} (mean ± std over report seeds). This report compares no arms, so it "
            "tests nothing: each row is one tuned backbone.",
            "",
        ]
    if first is not None and comps:
        lines += [
            f"Test metric compared: {first.metric} (mean ± std over report seeds). Statistics: relative change of "
            "the means; p (seeds) = paired t-test over report seeds (training noise); 95% CI = per-user paired "
            f"bootstrap ({d.bootstrap:,} resamples) of the difference of the seed-averaged per-user values "
            "(test-set noise); a difference is called only if it holds on both (p = the larger of the two), "
            f"Holm-adjusted over the {len(comps)} comparisons of this report, at α = {d.alpha}.",
            "",
        ]
    anchor_col = bool(d.anchors)
    lines += [
        "## Tuned backbones (test, report seeds)",
        "",
        *([f"Anchor: {d.anchor_note}", ""] if d.anchor_note else []),
        "| dataset | backbone | "
        + (first.metric if first else "metric")
        + " | secondary | "
        + ("anchor | " if anchor_col else "")
        + "chosen on validation | valid score | trials | s / run |",
        "|---|---|---|---|" + ("---|" if anchor_col else "") + "---|---|---|---|",
    ]
    for b in result.backbones:
        plain_vals = {
            s.seed: r["metrics"]["test"][b.metric]
            for s, r in zip(b.plain.specs, b.plain.records, strict=True)
            if r
        }
        sec = []
        for m in SECONDARY.get(b.metric, ()):
            v = {
                s.seed: r["metrics"]["test"][m]
                for s, r in zip(b.plain.specs, b.plain.records, strict=True)
                if r and m in r["metrics"]["test"]
            }
            if v:
                sec.append(f"{m} {np.mean(list(v.values())):.4f}")
        anchor = (
            (f"{d.anchors[b.backbone]:.4f} | " if b.backbone in d.anchors else "– | ") if anchor_col else ""
        )
        seconds = [r["metrics"]["seconds"] for r in b.plain.records if r]
        lines.append(
            f"| {b.dataset} | {b.backbone} | {_ms(plain_vals)} | {', '.join(sec)} | {anchor}"
            f"{_fmt_point(b.plain.point)} | {b.plain.valid_score:.4f} | {b.plain.trials} | "
            f"{np.mean(seconds) if seconds else float('nan'):.0f} |"
        )
    lines.append("")
    if comps:
        lines += [
            "## Plain vs distilled (test)",
            "",
            "| dataset | backbone | arm | plain | distilled | change | 95% CI of the difference | "
            "p (seeds) | p (users) | p (Holm) | trials plain / distilled |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in comps:
            s = c.stats
            ci = f"{s['ci95'][0]:+.4f} to {s['ci95'][1]:+.4f}" if s["ci95"] else "–"
            lines.append(
                f"| {c.dataset} | {c.backbone} | {c.arm} | {_ms(c.values('plain'))} | {_ms(c.values('distilled'))} | "
                f"{s['relative_change']:+.1%} | {ci} | {format_p(s['p_seeds'])} | {format_p(s['p_users'])} | "
                f"{format_p(s['p_holm'])} | {c.plain.trials} / {c.distilled.trials} |"
            )
        lines += [
            "",
            "Secondary metrics (descriptive, not tested):",
            "",
            "| dataset | backbone | arm | metric | plain | distilled |",
            "|---|---|---|---|---|---|",
        ]
        for c in comps:
            for m in SECONDARY.get(c.metric, ()):
                lines.append(
                    f"| {c.dataset} | {c.backbone} | {c.arm} | {m} | {_ms(c.values('plain', m))} | "
                    f"{_ms(c.values('distilled', m))} |"
                )
        lines += ["", "## Search (validation)", ""]
        datasets = several_datasets(b.dataset for b in result.backbones)
        for b in result.backbones:
            for name, search in b.searches.items():
                best, score = search.best
                lines.append(
                    f"- **{b.backbone} / {name}**{where(b.dataset, datasets)}: {search.trials} trials "
                    f"({search.failed} failed), "
                    f"{search.distinct_points} distinct points; "
                    f"best {_fmt_point(best)} ({score:.4f})"
                )
        for method in dict.fromkeys(c.method for c in comps):
            if method in PLUGINS:
                lines += ["", *PLUGINS[method].section([c for c in comps if c.method == method])]
        lines += [
            "## Reading",
            "",
            *[f"- **{c.backbone} + {c.arm}** ({c.dataset}): {c.stats['verdict']}." for c in comps],
            "",
            *off_point_lines(comps),
            *mechanism_lines(comps),
            *family_lines(comps, d.alpha),
            *across_lines(comps),
        ]
    lines += run_folder_lines(result)
    if result.failures:
        lines += ["## Jobs that failed twice", "", *[f"- {f}" for f in result.failures], ""]
    lines += ["## Search spaces", ""]
    from distillrec.distill.registry import distiller_class
    from distillrec.training.defaults import search_space

    for backbone in d.backbones:
        lines.append(f"- {backbone}: {describe(search_space(backbone))}")
    for method in d.methods:
        cls = distiller_class(method)
        lines.append(
            f"- {method}: {describe(parse_space(getattr(cls, 'search_space', {}), method))}; off point "
            f"{_fmt_point(getattr(cls, 'off_point', {}))}"
            + (
                f" (every point with {_fmt_point(cls.off_when)} trains the same model)"
                if cls.off_when
                else ""
            )
            + "; controls "
            + (", ".join(f"{k} ({_fmt_point(v)})" for k, v in getattr(cls, "controls", {}).items()) or "none")
        )
    lines.append("")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _exhausted_note(result: ExperimentResult) -> str:
    """A stage that has scored every point of its finite space stops short of its budget (a trial more
    would buy nothing): name those stages, so that "given" is not read as "used"."""
    datasets = several_datasets(b.dataset for b in result.backbones)
    short = [
        f"{b.backbone} / {name}{where(b.dataset, datasets)} ({search.trials} of {search.budget})"
        for b in result.backbones
        for name, search in b.searches.items()
        if search.exhausted
    ]
    if not short:
        return ""
    one = len(short) == 1
    return (
        f"{'A stage' if one else 'These stages'} scored every point of {'its' if one else 'their'} "
        f"finite space before the budget was spent and stopped there, with nothing left to buy: "
        f"{'; '.join(short)}. "
    )


def _reference_note(d: ExperimentDef) -> str:
    """Controls that are evaluated, not trained, have had only the tuning stage's trials: say so, since
    their column reads fewer trials than the plain arm's (a handicap to them, not an advantage)."""
    from distillrec.distill.registry import distiller_class

    names = [
        f"{m}:{control}"
        for m in d.methods
        for control in getattr(distiller_class(m), "reference_controls", {})
        if d.controls
    ]
    if not names:
        return ""
    one = len(names) == 1
    return (
        f"{'The control' if one else 'The controls'} {' and '.join(f'`{n}`' for n in names)} "
        f"{'is' if one else 'are'} evaluated, not trained: built at the tuned backbone's point "
        f"(teachers trained there), with no search of {'its' if one else 'their'} own, so "
        f"{'it has' if one else 'they have'} had the tuning stage's {d.budget} trials against the plain "
        f"arm's {2 * d.budget}. "
    )


def run_folder_lines(result: ExperimentResult) -> list[str]:
    """Where each reported figure's runs are, so that any of them can be trained again and compared
    (`distillrec rerun`). Arms evaluated rather than trained (CKD's teacher ensemble) have no folder."""
    lines = []
    state = result.ledger.root.resolve()  # the ledger's folder, also when the report reads it from a copy
    with contextlib.suppress(ValueError):  # under the working folder: no machine's absolute path
        state = state.relative_to(Path.cwd().resolve())
    for b in result.backbones:
        for arm in (b.plain, *b.arms):
            found = [state / r["run_dir"] for r in arm.records if r and r.get("run_dir")]
            if not found:
                continue
            parents = sorted({str(f.parent) for f in found})
            seeds = ",".join(sorted({f.name.removeprefix("seed") for f in found}, key=int))
            where = "; ".join(f"`{p}/seed{{{seeds}}}`" for p in parents)
            lines.append(f"- {b.dataset} / {b.backbone} / {arm.name}: {where}")
    if lines:
        lines = [
            "## Run folders of the reported figures",
            "",
            "Each one holds its config.yaml, metrics and per-user results; `distillrec rerun FOLDER` trains it "
            "again and compares every metric with the stored ones.",
            "",
            *lines,
            "",
        ]
    return lines


def across_lines(comps: list[Comparison]) -> list[str]:
    """Each arm's changes over the backbones and datasets of the report, side by side: whether a small
    shift recurs everywhere is what the single comparisons, each too noisy, cannot show. Descriptive: the
    cases share test users and are not independent, so no test is made of them."""
    arms = list(dict.fromkeys(c.arm for c in comps))
    over = "backbones and datasets" if several_datasets(c.dataset for c in comps) else "backbones"
    lines = []
    for arm in arms:
        changes = [c.stats["relative_change"] for c in comps if c.arm == arm]
        if len(changes) < 2:
            continue
        up = sum(ch > 0 for ch in changes)
        lines.append(
            f"- **{arm}**: higher in {up} of {len(changes)} cases, mean {np.mean(changes):+.1%} "
            f"(from {min(changes):+.1%} to {max(changes):+.1%})."
        )
    if lines:
        lines = [
            f"Across {over} (descriptive, not a test: the cases share their test users):",
            "",
            *lines,
            "",
        ]
    return lines


def family_lines(comps: list[Comparison], alpha: float) -> list[str]:
    """Where controls share the Holm family with the methods, the methods' figures with the controls left
    out: counting the controls makes the correction harsher on the method, and a reader should see whether
    a verdict rests on that choice."""
    controls = [c for c in comps if ":" in c.arm]
    main = [c for c in comps if ":" not in c.arm]
    if not controls or not main:
        return []
    alone = holm([c.stats["p"] for c in main])
    datasets = several_datasets(c.dataset for c in comps)

    def name(c: Comparison) -> str:
        return f"{c.backbone} + {c.arm}{where(c.dataset, datasets)}"

    def names(selected: list[Comparison]) -> str:
        return ", ".join(name(c) for c in selected) or "none"

    below_alone = [c for c, p in zip(main, alone, strict=True) if p is not None and p < alpha]
    below_counted = [c for c in main if c.stats["p_holm"] is not None and c.stats["p_holm"] < alpha]
    figures = ", ".join(f"{name(c)} {format_p(p)}" for c, p in zip(main, alone, strict=True))
    tail = (
        "the same as with the controls counted"
        if below_alone == below_counted
        else f"with the controls counted: {names(below_counted)}"
    )
    return [
        f"Holm over the {_count(len(main), 'method comparison')} alone (the "
        f"{_count(len(controls), 'control arm')} left out of the family): {figures}; below {alpha:g}: "
        f"{names(below_alone)} ({tail}).",
        "",
    ]


def trains_the_plain_model(c: Comparison) -> bool:
    """Validation chose the distiller's off point on the plain arm's own backbone point: the two arms then
    train one model with the same seeds (bit for bit on one kind of processor, as the tests check)."""
    from distillrec.distill.registry import distiller_class

    plain, mine = c.plain.specs, c.distilled.specs
    if not plain or not mine or any(r is None or r.get("run_dir") is None for r in c.distilled.records):
        return False  # a reference arm (an ensemble built from cached runs) trains nothing of its own
    a, b = plain[0], mine[0]
    same_backbone = (a.model, a.params, a.train, a.data) == (b.model, b.params, b.train, b.data)
    cls = distiller_class(c.method)
    return same_backbone and bool(cls.at_off_point(cls.Options(**b.distill_options)))


def off_point_lines(comps: list[Comparison]) -> list[str]:
    """Arms whose chosen point trains the plain model: their change is not the method's. Where their
    figures still differ from the plain arm's, the difference is how far two trainings of one model drift
    apart (their runs were made on processors that round otherwise), a floor under every other change of
    the report, and the line names the processors so a reader can tell."""
    lines = []
    datasets = several_datasets(c.dataset for c in comps)
    for c in comps:
        if not trains_the_plain_model(c):
            continue
        head = (
            f"- **{c.backbone} + {c.arm}**{where(c.dataset, datasets)}: validation chose the off point, where "
            "the arm trains the plain model with the plain arm's seeds"
        )
        if c.values("distilled") == c.values("plain"):
            lines.append(f"{head}; its runs give the plain arm's figures.")
            continue
        unknown = "a processor not recorded"
        kinds = [
            sorted({str(r.get("compute") or unknown) for r in arm.records if r})
            for arm in (c.plain, c.distilled)
        ]
        if unknown in kinds[0] + kinds[1]:
            cause = (
                "their runs do not all record their processor (runs made before the ledger kept it), so "
                "processors whose kernels round otherwise may have trained the two arms, and a model's "
                "training path follows that rounding"
            )
        elif kinds[0] == kinds[1]:
            cause = (
                f"both arms ran on {', '.join(kinds[0])}, where one model trains bit for bit alike: "
                "the runs are not reproducible there, which is a fault to report"
            )
        else:
            cause = (
                f"the plain arm's runs were made on {' and '.join(kinds[0])}, the arm's on "
                f"{' and '.join(kinds[1])}, and a model's training path follows its processor's rounding"
            )
        lines.append(
            f"{head}, yet its test {c.metric} differs by {c.stats['relative_change']:+.1%}: {cause}. The change "
            "is how far two trainings of one model drift apart, not an effect of the method."
        )
    if lines:
        lines = ["Arms at their off point:", "", *lines, ""]
    return lines


def _control_share(control: Comparison, method_change: float) -> str:
    """How much of the method's (positive, clear) change a control reaches; a control that changes nothing or
    goes the other way reaches none of it, which a negative percentage would only obscure."""
    name, change = control.arm.split(":", 1)[1], control.stats["relative_change"]
    if change <= 0:
        return f"{name} reaches none of it ({change:+.1%})"
    return f"{name} reaches {change / method_change:.0%} of it"


def mechanism_lines(comps: list[Comparison]) -> list[str]:
    """Where a method has controls: how much of the method's change each control reaches on its own, so a
    reader can tell the mechanism the paper claims from what a simpler arm already does. The share is only
    given where the method's own change stands out of the test set's noise (its bootstrap interval excludes
    zero): a ratio to a change indistinguishable from zero (say +0.5%) reads as a large number that means
    nothing."""
    lines = []
    datasets = several_datasets(c.dataset for c in comps)
    for c in comps:
        if ":" in c.arm:
            continue
        controls = [
            o
            for o in comps
            if o.method == c.arm and ":" in o.arm and (o.dataset, o.backbone) == (c.dataset, c.backbone)
        ]
        if not controls:
            continue
        parts = [f"{o.arm.split(':', 1)[1]} {o.stats['relative_change']:+.1%}" for o in controls]
        same = [
            f" {o.arm.split(':', 1)[1]} gives the method's own figures: what it changes plays no part at the point "
            "validation chose."
            for o in controls
            if _same_runs(c, o)
        ]
        rel = c.stats["relative_change"]
        ci = c.stats.get("ci95")
        if rel <= 0:
            share = "the method itself shows no gain to attribute"
        elif ci is not None and ci[0] <= 0:
            share = "the method's own change is within the test set's noise, its 95% CI includes 0: no share to attribute"
        else:
            share = "; ".join(_control_share(o, rel) for o in controls)
        lines.append(
            f"- **{c.backbone}{where(c.dataset, datasets)}**: {c.arm} {rel:+.1%} against the tuned plain backbone; controls: "
            f"{', '.join(parts)} ({share})." + "".join(same)
        )
    if lines:
        lines = ["Controls (relative changes against the same tuned plain arm):", "", *lines, ""]
    return lines


def _same_runs(method: Comparison, control: Comparison) -> bool:
    """A control whose chosen point is the method's and whose every test figure is the method's: the point
    validation chose leaves out what the control changes (SGFD at ce_weight 0, where the teachers never see
    the labels it shuffles), so the control tells nothing about the mechanism there."""
    mine, theirs = method.distilled, control.distilled
    if any(theirs.point.get(k) != v for k, v in mine.point.items()) or not mine.records:  # + its own options
        return False
    return all(
        a is not None and b is not None and a["metrics"]["test"] == b["metrics"]["test"]
        for a, b in zip(mine.records, theirs.records, strict=True)
    )


def finished_part(path: Path, definition: Any) -> tuple[ExperimentResult, list[Comparison]]:
    """A definition's finished part and its comparisons, read-only: the engine (in `partial` mode, which
    trains nothing) reads the folder's ledger and the trials it set aside, and works on a copy of the studies'
    journal."""
    with tempfile.TemporaryDirectory(prefix="distillrec-report-") as tmp:
        journal = path / "optuna.journal"
        data = journal.read_bytes() if journal.is_file() else b""
        (Path(tmp) / "optuna.journal").write_bytes(data[: data.rfind(b"\n") + 1])  # no line cut by a writer
        engine = Engine(definition.model_copy(update={"out": tmp}), partial=True)
        engine.ledger = Ledger(path)
        engine.forgiven = Forgiven(path)  # read only: a partial engine sets nothing aside
        result = engine.run()
    return result, comparisons(result)
