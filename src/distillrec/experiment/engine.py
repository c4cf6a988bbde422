"""The fair comparison engine: does method X help backbone Y on this data?

For each dataset and backbone, every step on validation only:
  1. *tune*: `budget` trials over the backbone's declared search space (its YAML `search:`);
  2. each distilled arm (a method, or one of its controls) starts from the tuned backbone (its teachers too)
     and gets `budget` trials over the distiller's space, the off point (every weight 0) among them;
     the plain arm gets `budget` more trials of its own space, so both arms have had the same number;
  3. each arm's chosen point is run on the report seeds, disjoint from the selection seeds.
A trial's score is the mean validation metric over the selection seeds. Trials are Optuna trials stored in
the experiment folder (a journal file), runs are cached in a ledger beside it: an interrupted experiment
resumes where it stopped and a finished run is never trained again.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distillrec.errors import DistillrecError
from distillrec.experiment.definition import ExperimentDef
from distillrec.experiment.executor import Job, Outcome, Pool, threads_per_job
from distillrec.experiment.spec import RunSpec, resolve_spec, route
from distillrec.models.space import (
    Space,
    distributions,
    grid,
    grid_size,
    is_finite,
    parse_space,
    space_key,
    suggest,
    within,
)
from distillrec.training.checkpoint import npz_bytes

if TYPE_CHECKING:  # imported where used, so that planning an experiment stays cheap
    from optuna.trial import FrozenTrial

    from distillrec.data.dataset import Dataset
    from distillrec.models.base import Recommender

# (search point, seed) -> the run's spec
SpecMaker = Callable[[dict[str, Any], int], RunSpec]
SelectionSpecs = Callable[[dict[str, Any]], list[RunSpec]]  # a point's selection runs

log = logging.getLogger("distillrec.experiment")
# per-user test values kept for report runs: the compared metrics and the secondary ones
MAX_LISTED_POINTS = 100_000  # a finite space up to this size is listed, so that no point is scored twice
PER_USER_METRICS = {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@20"}


# ----------------------------------------------------------------------------- the ledger
def _point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _params_of(t: FrozenTrial) -> dict[str, Any]:
    """A trial's point; a queued trial that was never asked holds it as its fixed parameters."""
    return dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))


def _duplicate(t: FrozenTrial) -> bool:
    """A proposal of a point the search had scored, set aside unevaluated (see `Engine.search`)."""
    return bool(t.user_attrs.get("duplicate"))


def failures_of(trials: list[FrozenTrial], params: dict[str, Any], forgiven: Set[int] = frozenset()) -> int:
    import optuna

    key = _point_key(params)
    return sum(
        t.state == optuna.trial.TrialState.FAIL
        and t.number not in forgiven
        and not _duplicate(t)
        and _point_key(t.params) == key
        for t in trials
    )


def budget_trials(trials: list[FrozenTrial], forgiven: Set[int] = frozenset()) -> list[FrozenTrial]:
    """The trials that use a study's budget, in order: the completed ones, and every failure of a point after
    its first. A point's first failure is asked again, so a crashed job (a killed worker, a full disk) never
    costs an arm a trial, or the off point its place in the search. `forgiven` failures (see `Forgiven`)
    count for nothing."""
    import optuna

    counted: list[FrozenTrial] = []
    fails: dict[str, int] = {}
    for t in trials:
        if t.number in forgiven or _duplicate(t):
            continue
        if t.state == optuna.trial.TrialState.COMPLETE:
            counted.append(t)
        elif t.state == optuna.trial.TrialState.FAIL:
            key = _point_key(t.params)
            fails[key] = fails.get(key, 0) + 1
            if fails[key] >= 2:
                counted.append(t)
    return counted


class Forgiven:
    """Trials that use no budget, by study: failures of a broken environment (the engine stopped because every
    job was failing), failures a user asked to retry (`retry_failed`) after fixing the cause, and completed
    trials whose runs are not those their point resolves to now (stale). Optuna cannot unmark a finished
    trial, so the list lives beside the journal; their planned points are asked again."""

    def __init__(self, root: Path) -> None:
        self.path = root / "forgiven_trials.json"
        self.trials: dict[str, list[int]] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def of(self, study: str) -> frozenset[int]:
        return frozenset(self.trials.get(study, ()))

    def add(self, study: str, numbers: Set[int]) -> None:
        from distillrec.atomic import atomic_write_text

        merged = sorted(self.of(study) | set(numbers))
        if numbers and merged != self.trials.get(study):
            self.trials[study] = merged
            atomic_write_text(self.path, json.dumps(self.trials, indent=1, sort_keys=True) + "\n")


# a run folder whose test metrics are the ledger's within this holds the model the ledger recorded
SAME_MODEL_TOLERANCE = 1e-9


class Ledger:
    """Finished runs of an experiment, by specification key and seed: metrics, per-user test values,
    plug-in summaries. Written only by the driving process; small enough to keep under version control."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "ledger.jsonl"
        self.arrays = root / "per_user"
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill: the run is simply made again
                        continue
                    self.records[rec["id"]] = rec

    @staticmethod
    def run_id(spec: RunSpec) -> str:
        return f"{spec.key()}-seed{spec.seed}"

    def get(self, spec: RunSpec) -> dict[str, Any] | None:
        return self.records.get(self.run_id(spec))

    def add(self, spec: RunSpec, record: dict[str, Any], per_user: bool) -> dict[str, Any]:
        """Keep a finished run; its per-user test values only for report runs (they feed the bootstrap)."""
        rid = self.run_id(spec)
        if per_user:
            self.arrays.mkdir(parents=True, exist_ok=True)
            kept = {
                k: np.asarray(v, np.float32) for k, v in record["per_user"].items() if k in PER_USER_METRICS
            }
            tmp = self.arrays / f".{rid}.npz.tmp"
            tmp.write_bytes(npz_bytes(users=record["users"], **kept))
            tmp.replace(self.arrays / f"{rid}.npz")
        run_dir = Path(record["run_dir"]) if record.get("run_dir") else None
        if run_dir is not None and run_dir.is_relative_to(self.root):
            run_dir = run_dir.relative_to(self.root)
        extras = record.get("extras", {})
        old = self.records.get(rid)
        if (
            old
            and old["metrics"] == record["metrics"]
            and old["run_dir"] == (str(run_dir) if run_dir else None)
        ):
            # the same run summarised for another experiment's plug-ins (two definitions share a tuned
            # backbone's report runs): the summaries it had stay beside the new ones
            extras = {**old.get("extras", {}), **extras}
        entry = {
            "id": rid,
            "key": spec.key(),
            "seed": spec.seed,
            "label": spec.label,
            "metrics": record["metrics"],
            "extras": extras,
            "run_dir": str(run_dir) if run_dir else None,
            "per_user": per_user,
            "dataset": spec.data.name,
            "data_hash": record.get("data_hash"),
            "compute": record.get("compute"),  # the processor kind: one model rounds otherwise across kinds
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry, default=float) + "\n")
        self.records[rid] = entry
        return entry

    def drop_other_data(self, dataset: str, data_hash: str) -> int:
        """Forget the runs of `dataset` trained on other contents than `data_hash` (features or labels
        regenerated since, or a record withdrawn by hand with another hash), so they are trained again; the
        ledger keeps their lines. Runs recorded before data hashes were kept cannot be told and stay."""

        def of(rec: dict[str, Any]) -> str | None:
            if rec.get("dataset"):
                return str(rec["dataset"])
            parts = Path(rec.get("run_dir") or "").parts  # runs/<dataset>/<label>@<key>/seed<n>
            return parts[1] if len(parts) == 4 else None

        gone = [
            rid
            for rid, rec in self.records.items()
            if rec.get("data_hash") not in (None, data_hash) and of(rec) == dataset
        ]
        for rid in gone:
            del self.records[rid]
        if gone:
            log.warning(
                "%s: %d finished runs were trained on other contents of the dataset than those on disk now "
                "(hash %s); they do not count, and the experiment trains them again",
                dataset,
                len(gone),
                data_hash,
            )
        return len(gone)

    def has_per_user(self, spec: RunSpec) -> bool:
        return (self.arrays / f"{self.run_id(spec)}.npz").exists()

    def run_dir(self, rec: dict[str, Any]) -> Path | None:
        return (self.root / rec["run_dir"]) if rec.get("run_dir") else None

    def folder_gap(self, rec: dict[str, Any]) -> float | None:
        """Largest absolute difference between the test metrics of the run's folder on disk and the ledger's
        record of the run; None without a folder or metrics to compare. Folders are not under version
        control: one trained again (on a processor that rounds otherwise) can hold another model of the
        same specification."""
        from distillrec.training.checkpoint import read_json

        run_dir = self.run_dir(rec)
        if run_dir is None or not (run_dir / "metrics.json").exists():
            return None
        here = (
            read_json(run_dir / "metrics.json", "delete the run folder to train it again").get("test") or {}
        )
        stored = rec.get("metrics", {}).get("test") or {}
        shared = [k for k in stored if k in here]
        return max(abs(float(stored[k]) - float(here[k])) for k in shared) if shared else None

    def holds_recorded_model(self, rec: dict[str, Any]) -> bool:
        """Whether the run's folder on disk is the model the ledger's figures come from."""
        gap = self.folder_gap(rec)
        return gap is not None and gap <= SAME_MODEL_TOLERANCE

    def per_user(self, spec: RunSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with np.load(self.arrays / f"{self.run_id(spec)}.npz") as arr:
            return arr["users"], {k: arr[k] for k in arr.files if k != "users"}


# ----------------------------------------------------------------------------- arms and results
@dataclass(frozen=True)
class Arm:
    """A distilled arm: a method with its free search space and the options a control fixes."""

    method: str
    control: str | None
    fixed: dict[str, Any]
    space: Space
    off_point: dict[str, Any]

    @property
    def name(self) -> str:
        return self.method if self.control is None else f"{self.method}:{self.control}"


def arms_for(method: str, with_controls: bool) -> list[Arm]:
    from distillrec.distill.registry import distiller_class

    cls = distiller_class(method)
    full = parse_space(getattr(cls, "search_space", {}), where=f"distiller {method!r}")
    off = dict(getattr(cls, "off_point", {}))
    arms = [Arm(method, None, {}, full, off)]
    if with_controls:
        for control, fixed in getattr(cls, "controls", {}).items():
            space = {k: d for k, d in full.items() if k not in fixed}
            arms.append(
                Arm(method, control, dict(fixed), space, {k: v for k, v in off.items() if k in space})
            )
    return arms


@dataclass
class Search:
    """One search stage's outcome: every trial's point and score, and the chosen point."""

    name: str
    trials: int = 0
    points: list[tuple[dict[str, Any], float | None]] = field(default_factory=list)
    failed: int = 0
    budget: int = 0  # the trials this stage may use
    exhausted: bool = False  # it scored every point of its finite space before `budget` was spent

    @property
    def distinct_points(self) -> int:
        return len({_point_key(p) for p, _ in self.points})

    @property
    def best(self) -> tuple[dict[str, Any], float]:
        scored = [(p, s) for p, s in self.points if s is not None]
        if not scored:
            return {}, float("nan")
        return max(scored, key=lambda ps: ps[1])

    def chosen(self) -> tuple[dict[str, Any], float]:
        """The best point, for an arm to be reported with; a stage whose trials all failed has none."""
        if not any(s is not None for _, s in self.points):
            raise StageFailed(f"{self.name}: all {self.trials} trials failed, so there is no point to report")
        return self.best


@dataclass
class ArmResult:
    """A chosen point's report runs: one record per report seed (a ledger entry) and its specs."""

    name: str
    point: dict[str, Any]
    valid_score: float
    specs: list[RunSpec] = field(default_factory=list)
    records: list[dict[str, Any] | None] = field(default_factory=list)  # None: a run that failed twice
    trials: int = 0


@dataclass
class BackboneResult:
    dataset: str
    backbone: str
    metric: str  # the compared test metric: recall@20 (top-K) or hit@20 (next-item)
    valid_metric: str
    tuned: Search
    plain: ArmResult
    arms: list[ArmResult] = field(default_factory=list)
    searches: dict[str, Search] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    definition: ExperimentDef
    backbones: list[BackboneResult]
    failures: list[str]
    ledger: Ledger
    pending: list[str] = field(
        default_factory=list
    )  # backbones not finished (a report written with --partial)


class Pending(Exception):
    """A stage of a backbone is not finished and the engine was asked not to train (`partial`)."""


class StageFailed(Exception):
    """Every trial of a search stage failed: the backbone has no chosen point, so it is not reported."""


class SystemicFailure(DistillrecError):
    """Job after job fails, whatever it runs (a broken install, a full disk): the experiment stops instead of
    spending the arms' budgets on failures. The failures use no budget; a rerun resumes."""


# ----------------------------------------------------------------------------- the engine
class Engine:
    def __init__(
        self,
        definition: ExperimentDef,
        progress: Any | None = None,
        partial: bool = False,
        retry_failed: bool = False,
    ) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.d = definition
        self.root = definition.state_dir().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_out = str(self.root / "runs")
        self.ledger = Ledger(self.root)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = JournalStorage(JournalFileBackend(str(self.root / "optuna.journal")))
        self.threads = threads_per_job(
            definition.jobs if definition.executor != "serial" else 1, definition.threads
        )
        self.failures: list[str] = []
        self.progress = progress
        self.best_valid = float("nan")
        self.pool: Pool | None = None
        self.partial = partial  # report what is finished; train nothing
        self.references: dict[str, str] = {}  # pseudo-method label -> evaluating function
        self.forgiven = Forgiven(self.root)
        self.retry_failed = retry_failed  # past failures of every study touched use no budget
        # failed jobs since the last job that succeeded, and the trials told FAIL meanwhile
        self._streak: list[str] = []
        self._streak_trials: list[tuple[str, int]] = []

    # -- jobs
    def _job(self, spec: RunSpec, extras: tuple[str, ...] = ()) -> Job:
        return Job(
            spec.model_dump_json(),
            self.runs_out,
            self.d.device,
            self.threads,
            extras,
            self.references.get(spec.distill or ""),
        )

    def run_specs(
        self, specs: list[RunSpec], extras: tuple[str, ...] = (), report: bool = False
    ) -> list[dict[str, Any] | None]:
        """Ledger entries for `specs` (None for a job that failed twice), training only what is missing.
        Report runs keep per-user test values and the plug-ins' summaries (`extras`)."""
        todo: dict[str, RunSpec] = {}
        for spec in specs:
            rec = self.ledger.get(spec)
            if rec is None:
                todo.setdefault(Ledger.run_id(spec), spec)
                continue
            missing = [e for e in extras if e not in rec.get("extras", {})]
            unsummarised = missing or (report and not self.ledger.has_per_user(spec))
            # the run is on disk: only its summaries are made (no training), never from another model
            if unsummarised and self.ledger.holds_recorded_model(rec):
                todo.setdefault(Ledger.run_id(spec), spec)
        if self.progress:
            self.progress.add(len(specs) - len(todo), len(todo))
        if todo and self.partial:
            raise Pending(f"{len(todo)} runs not finished")
        if todo:
            assert self.pool is not None
            for outcome in self.pool.run([self._job(s, extras) for s in todo.values()]):
                self._settle(outcome, report)
            if len(self._streak) >= self._systemic_limit():
                self._stop_systemic()
        return [self.ledger.get(s) for s in specs]

    def _systemic_limit(self) -> int:
        """Consecutive failed jobs that mean the environment, not a point, is broken: more than one point's
        selection runs twice over, or one arm's report runs, can fail on their own."""
        return max(8, 2 * len(self.d.selection_seeds) + 1, len(self.d.seeds) + 1)

    def _stop_systemic(self) -> None:
        by_study: dict[str, set[int]] = {}
        for study, number in self._streak_trials:
            by_study.setdefault(study, set()).add(number)
        for study, numbers in by_study.items():
            self.forgiven.add(study, numbers)
        raise SystemicFailure(
            f"stopped: the last {len(self._streak)} jobs all failed; the last was {self._streak[-1]}. "
            "Finished runs are kept and these failures use no trial budget: fix the cause and run the same "
            "command again to resume"
        )

    def _settle(self, outcome: Outcome, report: bool) -> None:
        spec = RunSpec.model_validate_json(outcome.job.spec_json)
        if outcome.record is None:
            name = outcome.job.name
            self.failures.append(f"{name}: {outcome.error} (after {outcome.attempts} attempts)")
            self._streak.append(f"{name}: {outcome.error}")
            log.error("job %s failed twice: %s", name, outcome.error)
        else:
            self._streak.clear()
            self._streak_trials.clear()
            self.ledger.add(spec, outcome.record, per_user=report)
        if self.progress:
            self.progress.done_one(self.best_valid)

    # -- specs
    def spec(
        self,
        ds: Dataset,
        backbone: str,
        point: dict[str, Any],
        method: str | None = None,
        method_point: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> RunSpec:
        assignments = {**self.d.set, **self.d.backbone_set.get(backbone, {})}
        for key, value in point.items():
            assignments[key if key.startswith("train.") else f"model.{key}"] = value
        for key, value in (method_point or {}).items():
            assignments[f"{method}.{key}"] = value
        # a method's options in `set` apply to that method's runs only
        assignments = {
            k: v
            for k, v in assignments.items()
            if "." not in k or k.split(".", 1)[0] in ("train", "model", "data", method)
        }
        return resolve_spec(backbone, ds.name, assignments, method, seed, source=ds.source)

    # -- search
    def search(
        self,
        study_name: str,
        space: Space,
        trials: int,
        make_spec: SpecMaker,
        enqueue: dict[str, Any] | None,
        canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Search:
        """Run the study `study_name` up to `trials` finished trials (resuming it); return its outcome.

        `canonical` maps a point to the one it trains the same model as (a distiller's off point family);
        in a finite space, points with one canonical point are one point: none is scored twice."""
        import optuna

        def same(params: dict[str, Any]) -> str:
            return _point_key(canonical(dict(params)) if canonical else params)

        # a planned point outside the declared space (SGFD's off point: its weights are searched over
        # non-zero values only) is one trial of the budget, evaluated beside the study rather than in it
        beside = {k: v for k, v in (enqueue or {}).items() if k in space}
        beside_point = beside if space and beside and not within(beside, space) else None
        trials -= beside_point is not None
        walk = self._walks_grid(space, spare=int(beside_point is not None))
        study_name = self._successor(self._study_name(study_name, space))
        sampler = optuna.samplers.TPESampler(
            seed=self.d.sampler_seed, constant_liar=True, n_startup_trials=min(4, self.d.budget)
        )
        study = optuna.create_study(
            study_name=study_name,
            storage=self.storage,
            direction="maximize",
            load_if_exists=True,
            sampler=sampler,
        )
        # a covered finite space is walked point by point (queued in order); otherwise the given point
        # (the defaults, or the distiller's off point) is tried first and TPE proposes the rest
        planned = (
            (grid(space) if walk else ([beside] if beside and beside_point is None else [])) if space else []
        )
        if not study.trials:
            for point in planned:
                study.enqueue_trial(point, skip_if_exists=True)
        seeds = self.d.selection_seeds
        resolved: dict[str, list[RunSpec]] = {}

        def selection_specs(point: dict[str, Any]) -> list[RunSpec]:
            """A point's selection runs, resolved once per search (a sampler repeats points)."""
            key = _point_key(point)
            if key not in resolved:
                resolved[key] = [make_spec(dict(point), s) for s in seeds]
            return resolved[key]

        result = Search(study_name, budget=trials + (beside_point is not None))
        if beside_point is not None:
            specs_beside = selection_specs(beside_point)
            got_beside = [r for r in self.run_specs(specs_beside) if r is not None]
            complete = len(got_beside) == len(specs_beside)
            result.trials, result.failed = 1, int(not complete)
            result.points.append(
                (dict(beside_point), self._score(specs_beside, got_beside) if complete else None)
            )
        forgiven = self._forgive(study_name, study, planned, selection_specs)
        scored = optuna.trial.TrialState.COMPLETE  # a failure's absence of a score steers nothing
        past = study.get_trials(deepcopy=False)
        if not self.partial and any(past[n].state == scored for n in forgiven):
            study_name, study = self._move(study_name, study, forgiven, sampler)
            forgiven = frozenset()
        result.name = study_name
        listed = self._listed(space, same)
        while True:
            now = study.get_trials(deepcopy=False)
            kept = budget_trials(now, forgiven)
            done = len(kept)
            # trials asked by an interrupted session and never told are evaluated again (runs cached)
            orphans = [t for t in now if t.state == optuna.trial.TrialState.RUNNING]
            want = min(trials - done, max(1, math.ceil(self._capacity() / len(seeds))))
            if want <= 0:  # this budget is spent; a trial still running beyond it is another definition's
                break  # (a longer search of the same shared study, e.g. a plain arm's extra trials)
            counted = {same(t.params) for t in kept}
            queued = {same(_params_of(t)) for t in now if t.state == optuna.trial.TrialState.WAITING}
            unscored = None if listed is None else [k for k in listed if k not in counted]
            if unscored == [] and not orphans and not queued:  # a finite space wholly scored: nothing to buy
                result.exhausted = True
                break
            if self.partial:
                raise Pending(f"{study_name}: {done} of {trials} trials finished")
            batch: list[tuple[int, dict[str, Any]]] = [(t.number, dict(t.params)) for t in orphans]
            taken = {same(p) for _, p in batch}
            while len(batch) < want:
                trial = study.ask()
                point = suggest(trial, space)
                key = same(point)
                if unscored is not None and (key in taken or key in counted):
                    # a point this search has scored (or is scoring) again: it would cost a trial and buy
                    # nothing, so it is set aside and an unscored point asked instead (seeded choice)
                    trial.set_user_attr("duplicate", True)
                    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                    fresh = [k for k in unscored if k not in taken and k not in queued]
                    if not fresh:
                        break
                    rng = random.Random(f"{self.d.sampler_seed}:{study_name}:{trial.number}")
                    study.enqueue_trial(json.loads(rng.choice(fresh)), skip_if_exists=False)
                    continue
                taken.add(key)
                batch.append((trial.number, point))
            if not batch:
                break
            specs = {n: selection_specs(p) for n, p in batch}
            flat = [s for group in specs.values() for s in group]
            records = dict(zip([Ledger.run_id(s) for s in flat], self.run_specs(flat), strict=True))
            for number, _point in sorted(batch, key=lambda np_: np_[0]):
                got = [r for s in specs[number] if (r := records[Ledger.run_id(s)]) is not None]
                if len(got) < len(specs[number]):
                    study.tell(number, state=optuna.trial.TrialState.FAIL)
                    self._streak_trials.append((study_name, number))
                    # a point's first failure is asked again before it costs a trial
                    if failures_of(study.trials, _point, forgiven) == 1:
                        study.enqueue_trial(_point, skip_if_exists=False)
                    continue
                score = self._score(specs[number], got)
                study.tell(number, score)
                if not (score <= self.best_valid):  # NaN-safe maximum for the progress display
                    self.best_valid = score
        for t in budget_trials(study.trials, forgiven)[:trials]:
            result.trials += 1
            value = None
            if t.state == optuna.trial.TrialState.COMPLETE:  # scored from the ledger, not the stored value
                t_specs = selection_specs(t.params)
                recs = [r for s in t_specs if (r := self.ledger.get(s)) is not None]
                value = self._score(t_specs, recs) if len(recs) == len(t_specs) else t.value
            result.points.append((dict(t.params), value))
            result.failed += t.state == optuna.trial.TrialState.FAIL
        return result

    @staticmethod
    def _score(specs: list[RunSpec], records: list[dict[str, Any]]) -> float:
        """A trial's score: the mean over its selection runs of the validation metric each run selected its
        best epoch by (from its own resolved specification, never re-resolved)."""
        return float(
            np.mean(
                [r["metrics"]["valid"][s.train["valid_metric"]] for s, r in zip(specs, records, strict=True)]
            )
        )

    def _stale(self, study: Any, selection_specs: SelectionSpecs, skip: frozenset[int]) -> frozenset[int]:
        """Completed trials whose runs are not those their point resolves to now (they ran under other
        settings, e.g. with the package's files gone mid-run): they use no budget and are asked again."""
        import optuna

        return frozenset(
            t.number
            for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.number not in skip
            and any(self.ledger.get(s) is None for s in selection_specs(t.params))
        )

    def _forgive(
        self,
        study_name: str,
        study: Any,
        planned: list[dict[str, Any]],
        selection_specs: SelectionSpecs,
    ) -> frozenset[int]:
        """The study's trials that use no budget: those set aside before, all of its failures with
        `retry_failed`, and stale ones found now (`_stale`). A planned point (the off point, the defaults, a
        grid point) whose trials were all set aside is queued again, so that a failure never takes it out of
        the search; the sampler proposes the rest afresh. A partial engine records and queues nothing."""
        import optuna

        if self.retry_failed and not self.partial:
            failed = {t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL}
            self.forgiven.add(study_name, failed)
        stale = self._stale(study, selection_specs, self.forgiven.of(study_name))
        if stale and not self.partial:
            log.warning(
                "%s: %d trials ran under other settings; their points are asked again", study_name, len(stale)
            )
            self.forgiven.add(study_name, stale)
        forgiven = self.forgiven.of(study_name) | stale
        if forgiven and not self.partial:
            live = {_point_key(_params_of(t)) for t in study.trials if t.number not in forgiven}
            lost = {_point_key(t.params) for t in study.trials if t.number in forgiven} - live
            for point in planned:
                if _point_key(point) in lost:
                    study.enqueue_trial(point, skip_if_exists=False)
                    lost.discard(_point_key(point))
        return forgiven

    def fingerprint(self, backbone: str) -> str:
        """What a backbone's studies depend on besides the backbone: experiments that agree on it share
        their studies and runs (a backbone is tuned once for every report that uses it)."""
        import hashlib

        protocol = {
            "set": self.d.set,
            "selection_seeds": self.d.selection_seeds,
            "budget": self.d.budget,
            "sampler": self.d.sampler,
            "sampler_seed": self.d.sampler_seed,
        }
        if self.d.backbone_set.get(backbone):
            protocol["backbone_set"] = self.d.backbone_set[backbone]
        text = json.dumps(protocol, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def _common_groups(self) -> dict[str, dict[str, Any]]:
        """The training, model and data options of `set` (a method's options apply to its runs only)."""
        return route(
            {
                k: v
                for k, v in self.d.set.items()
                if "." not in k or k.split(".", 1)[0] in ("train", "model", "data")
            }
        )

    def _capacity(self) -> int:
        return self.pool.capacity if self.pool else 1

    def _study_name(self, base: str, space: Space) -> str:
        """A study is named by what it searches: `base` while the study of that name searched this very space
        (or has no trial yet), else `base~<hash of the space>`, so that a space changed in a model's YAML or a
        distiller starts a study of its own instead of mixing points of two spaces (which Optuna refuses)."""
        import optuna

        if base in optuna.study.get_all_study_names(storage=self.storage):
            done = optuna.load_study(study_name=base, storage=self.storage).get_trials(deepcopy=False)
            if all(t.distributions == distributions(space) for t in done if t.distributions):
                return base
            return f"{base}~{space_key(space)}"
        return base

    @staticmethod
    def _listed(space: Space, key: Callable[[dict[str, Any]], str] = _point_key) -> list[str] | None:
        """The keys of a finite space's distinct points, for a search to propose none twice; None for a space
        that is not finite or too large to list, where a repeated point is left to chance."""
        if not space or not is_finite(space) or grid_size(space) > MAX_LISTED_POINTS:
            return None
        return list(dict.fromkeys(key(p) for p in grid(space)))

    def _successor(self, name: str) -> str:
        """The study that carries on `name`'s search: itself, or the last of the studies it moved to."""
        import optuna

        names = set(optuna.study.get_all_study_names(storage=self.storage))
        while name in names:
            moved = optuna.load_study(study_name=name, storage=self.storage).user_attrs.get("moved_to")
            if not moved:
                break
            name = moved
        return name

    def _move(self, name: str, study: Any, forgiven: frozenset[int], sampler: Any) -> tuple[str, Any]:
        """Carry a study whose completed trials were set aside on in a new study that holds only the kept
        ones: TPE learns from every completed trial of its study, and a set-aside score (a run on other data
        contents, under other settings) must not steer the points an arm is proposed, or that arm's search
        would have had more history than the others'. The kept trials keep their order; queued points and
        points asked but never told are queued again. `moved_to` is written last, so a move cut short by a
        kill is made again from the start."""
        import re

        import optuna

        state = optuna.trial.TrialState
        numbered = re.fullmatch(r"(.*)#(\d+)", name)
        successor = f"{numbered[1]}#{int(numbered[2]) + 1}" if numbered else f"{name}#2"
        if successor in optuna.study.get_all_study_names(storage=self.storage):
            optuna.delete_study(study_name=successor, storage=self.storage)
        new = optuna.create_study(
            study_name=successor, storage=self.storage, direction="maximize", sampler=sampler
        )
        for t in study.trials:
            if t.number in forgiven:
                continue
            if t.state in (state.COMPLETE, state.FAIL):
                new.add_trial(t)
            elif t.state in (state.WAITING, state.RUNNING):
                new.enqueue_trial(_params_of(t), skip_if_exists=False)
        study.set_user_attr("moved_to", successor)
        log.warning(
            "%s: %d set-aside trials left behind; the search goes on in %s", name, len(forgiven), successor
        )
        return successor, new

    def _walks_grid(self, space: Space, spare: int = 0) -> bool:
        """Walk the whole grid when the space is finite and one stage's budget (less `spare` trials spent
        outside the study) covers it (the choice depends on the budget only, so a study keeps its plan
        across stages and sessions)."""
        if self.d.sampler == "grid":
            if not is_finite(space):
                from distillrec.errors import ConfigError

                raise ConfigError("sampler grid needs finite (list) search spaces")
            return True
        return self.d.sampler == "auto" and is_finite(space) and grid_size(space) <= self.d.budget - spare

    # -- the protocol
    def run(self) -> ExperimentResult:
        from distillrec.data.registry import load_dataset
        from distillrec.models.registry import model_class
        from distillrec.training.defaults import search_space

        results: list[BackboneResult] = []
        pending: list[str] = []
        executor = "serial" if self.partial else self.d.executor  # nothing to run: no workers to start
        with Pool(executor, self.d.jobs, self.d.ray_address) as pool:
            self.pool = pool
            for dataset in self.d.datasets:
                data_opts = self._common_groups()["data"]
                ds = load_dataset(
                    dataset, split=data_opts.get("split", "auto"), seed=int(data_opts.get("split_seed", 0))
                )
                self.ledger.drop_other_data(ds.name, ds.content_hash)
                for backbone in self.d.backbones:
                    log.info("%s / %s: tuning", ds.name, backbone)
                    try:
                        results.append(
                            self._backbone(ds, backbone, search_space(backbone), model_class(backbone))
                        )
                    except Pending as why:
                        pending.append(f"{ds.name}/{backbone} ({why})")
                    except StageFailed as why:
                        self.failures.append(str(why))
                        log.error("%s / %s not reported: %s", ds.name, backbone, why)
            self.pool = None
        return ExperimentResult(self.d, results, self.failures, self.ledger, pending)

    def _backbone(self, ds: Dataset, backbone: str, space: Space, cls: type[Recommender]) -> BackboneResult:
        from distillrec.distill.registry import distiller_class
        from distillrec.models.registry import default_params

        B = self.d.budget
        prefix = f"{ds.name}/{backbone}/{self.fingerprint(backbone)}"
        defaults = {k: v for k, v in default_params(backbone).items() if k in space}
        defaults.update(self._train_defaults(backbone, space))
        plain_spec = lambda p, s: self.spec(ds, backbone, p, seed=s)  # noqa: E731
        tuned = self.search(f"{prefix}/plain", space, B, plain_spec, defaults)
        tuned_point = tuned.chosen()[0]
        arms = [a for m in self.d.methods for a in arms_for(m, self.d.controls)]
        searches = {"tuned": tuned}
        for arm in arms:
            make = (
                lambda a: (
                    lambda p, s: self.spec(ds, backbone, tuned_point, a.method, {**a.fixed, **p}, seed=s)
                )
            )(arm)
            searches[arm.name] = self.search(
                f"{prefix}/{arm.name}",
                arm.space,
                B,
                make,
                arm.off_point,
                distiller_class(arm.method).canonical_point,
            )
        plain = (
            self.search(f"{prefix}/plain", space, 2 * B if arms else B, plain_spec, defaults)
            if arms
            else tuned
        )
        searches["plain"] = plain
        metric = "hit@20" if cls.task == "next-item" else "recall@20"
        extras = tuple(dict.fromkeys(a.method for a in arms))
        plain_point, plain_score = plain.chosen()
        chosen = {arm.name: searches[arm.name].chosen() for arm in arms}
        plain_arm = ArmResult("plain", plain_point, plain_score, trials=plain.trials)
        plain_arm.specs = [plain_spec(plain_point, s) for s in self.d.seeds]
        plain_arm.records = self.run_specs(plain_arm.specs, extras, report=True)
        result = BackboneResult(
            ds.name,
            backbone,
            metric,
            plain_arm.specs[0].train["valid_metric"],
            tuned,
            plain_arm,
            searches=searches,
        )
        for arm in arms:
            point, score = chosen[arm.name]
            res = ArmResult(
                arm.name, {**arm.fixed, **point}, score, trials=tuned.trials + searches[arm.name].trials
            )
            res.specs = [
                self.spec(ds, backbone, tuned_point, arm.method, {**arm.fixed, **point}, seed=s)
                for s in self.d.seeds
            ]
            res.records = self.run_specs(res.specs, (arm.method,), report=True)
            result.arms.append(res)
        if self.d.controls:
            result.arms += self._reference_arms(tuned, plain_spec)
        return result

    def _reference_arms(self, tuned: Search, plain_spec: SpecMaker) -> list[ArmResult]:
        """Controls that are evaluated, not trained (CKD's teacher ensemble), from the tuned backbone's
        settings and each report seed (no search: their trials are the tuned backbone's)."""
        from distillrec.distill.registry import distiller_class

        arms = []
        for method in self.d.methods:
            for control, target in getattr(distiller_class(method), "reference_controls", {}).items():
                label = f"{method}:{control}"
                self.references[label] = target
                specs = [
                    plain_spec(tuned.best[0], s).model_copy(update={"distill": label}) for s in self.d.seeds
                ]
                arm = ArmResult(label, dict(tuned.best[0]), float("nan"), specs, trials=tuned.trials)
                arm.records = self.run_specs(specs, (), report=True)
                arms.append(arm)
        return arms

    def _train_defaults(self, backbone: str, space: Space) -> dict[str, Any]:
        from distillrec.models.registry import train_defaults
        from distillrec.training.config import TrainConfig

        values = {**TrainConfig().model_dump(), **train_defaults(backbone)}
        return {k: values[k.removeprefix("train.")] for k in space if k.startswith("train.")}


def planned_jobs(d: ExperimentDef) -> int:
    """An upper bound on the jobs of an experiment (cached runs included), for the progress display."""
    per_backbone = d.budget * len(d.selection_seeds) * (1 + (1 if d.methods else 0)) + len(d.seeds)
    arms = 0
    for m in d.methods:
        arms += len(arms_for(m, d.controls))
    per_backbone += arms * (d.budget * len(d.selection_seeds) + len(d.seeds))
    return per_backbone * len(d.backbones) * len(d.datasets)
