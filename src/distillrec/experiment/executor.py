"""Where an experiment's jobs run: in this process, in a local process pool, or as Ray tasks.

A job is one training run (a resolved `RunSpec` and where its folder goes); it is independent of every
other job, so the three executors give the same metrics for the same seeds (on CPU, with the same number of
threads per job). A job that raises is retried once; if it fails again its error is returned with its name
and the experiment goes on without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from distillrec.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a worker process loads only what its job needs
    from distillrec.data.dataset import Dataset
    from distillrec.experiment.spec import RunSpec

log = logging.getLogger("distillrec.experiment")

ExecutorName = Literal["serial", "local", "ray"]


@dataclass(frozen=True)
class Job:
    """One run to make: its specification (as JSON, so it travels to any process), folder root, device."""

    spec_json: str
    out: str
    device: str = "cpu"
    threads: int = 1
    extras: tuple[str, ...] = ()  # plug-ins to compute on the finished run (report runs only)
    evaluate: str | None = None  # "module:function" of a control that is evaluated, not trained

    @property
    def name(self) -> str:
        from distillrec.experiment.spec import RunSpec

        spec = RunSpec.model_validate_json(self.spec_json)
        return f"{spec.label}@{spec.key()}/seed{spec.seed}"


@dataclass
class Outcome:
    job: Job
    record: dict[str, Any] | None = None  # what `run_job` returned
    error: str | None = None
    attempts: int = 1
    arrays: dict[str, Any] = field(default_factory=dict)


def _dataset(source: str, name: str, split: str, split_seed: int) -> Dataset:
    """The dataset a job names, read once per process while its folder's files stay as they are."""
    folder = Path(source) if source else None  # a dataset folder, or a file in it (the interactions)
    if folder is not None and folder.is_file():
        folder = folder.parent
    stamp = (
        tuple(
            sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
        )
        if folder is not None and folder.is_dir()
        else ()
    )
    return _read_dataset(source, name, split, split_seed, stamp)


@lru_cache(maxsize=4)
def _read_dataset(source: str, name: str, split: str, split_seed: int, stamp: tuple[Any, ...]) -> Dataset:
    from distillrec.data.registry import load_dataset

    return load_dataset(source if source and Path(source).exists() else name, split=split, seed=split_seed)


def run_job(job: Job) -> dict[str, Any]:
    """Train (or reuse, or resume) one run and return its record: metrics, per-user test values, extras.

    The job's thread share holds while it runs; the caller's own setting comes back after (the serial
    executor runs jobs in the caller's process)."""
    from distillrec.training.env import torch_threads

    with torch_threads(job.threads):
        return _run_job(job)


def _run_job(job: Job) -> dict[str, Any]:
    from distillrec.experiment.api import PER_USER_FILE, read_per_user, train_one
    from distillrec.experiment.plugins import extract
    from distillrec.experiment.spec import RunSpec
    from distillrec.training.rundir import recorded_content_hash

    spec = RunSpec.model_validate_json(job.spec_json)
    ds = _dataset(spec.data.source, spec.data.name, spec.data.split, spec.data.split_seed)
    if job.evaluate:
        return _evaluate_reference(job.evaluate, job, spec, ds)
    folder = spec.run_dir(job.out)
    recorded = recorded_content_hash(folder)
    if recorded is not None and recorded != ds.content_hash:  # trained on other contents: set aside, again
        aside = folder.with_name(f"{folder.name}.other-data-{recorded}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
    result = train_one(spec, ds, job.out, job.device, resume=True, quiet=True)
    run_dir = result.run_dir
    assert run_dir is not None, "a job's run has its folder under the job's root"
    per_user_file = run_dir / PER_USER_FILE
    if not per_user_file.exists():  # a run finished before per-user values were kept: evaluate it again
        from distillrec.experiment.api import load_run, per_user_test

        users, per_user = per_user_test(load_run(run_dir, device=job.device))
    else:
        users, per_user = read_per_user(per_user_file)
    extras = {name: extract(name, run_dir, result.metrics) for name in job.extras}
    return {
        "run_dir": str(run_dir),
        "data_hash": ds.content_hash,  # features and labels too: a regenerated variant is told apart
        "compute": _compute(job, run_dir),
        "metrics": {k: result.metrics[k] for k in ("valid", "test", "best_epoch", "epochs_run", "seconds")},
        "users": users,
        "per_user": per_user,
        "extras": extras,
    }


def _compute(job: Job, run_dir: Path | None = None) -> str | None:
    """The processor kind a run trained on, as its folder recorded it (None from a run made before runs
    recorded it); without a folder, this machine's (a reference arm evaluated here)."""
    from distillrec.training.env import compute_kind
    from distillrec.training.rundir import recorded_compute
    from distillrec.training.trainer import resolve_device

    if run_dir is not None:
        return recorded_compute(run_dir)
    return compute_kind(resolve_device(job.device))


def _evaluate_reference(target: str, job: Job, spec: RunSpec, ds: Dataset) -> dict[str, Any]:
    """A control that is a model of its own built from cached runs (e.g. an ensemble of teachers);
    `target` ("module:function") evaluates it."""
    import importlib
    import time

    module, name = target.split(":")
    start = time.perf_counter()
    out = getattr(importlib.import_module(module), name)(
        ds, spec.model, spec.params, spec.train_config(), spec.seed, job.device, job.out
    )
    return {
        "run_dir": None,
        "data_hash": ds.content_hash,
        "compute": _compute(job),
        "metrics": {
            "valid": out["valid"],
            "test": out["test"],
            "best_epoch": 0,
            "epochs_run": 0,
            "seconds": round(time.perf_counter() - start, 2),
        },
        "users": out["users"],
        "per_user": out["per_user_test"],
        "extras": {},
    }


def _guarded(job: Job) -> dict[str, Any]:
    """`run_job` with the traceback turned into text, so every executor reports failures alike."""
    try:
        return {"ok": run_job(job)}
    except Exception as exc:  # noqa: BLE001 - any failure of one job must not stop the others
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def _init_worker(parent: int) -> None:
    """A pool worker ends when the process that drives the experiment is gone (killed, interrupted), so
    no orphan keeps training into a run folder that a resumed experiment will use."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class Pool:
    """Submits jobs, yields outcomes as they finish, retries a failed job once."""

    def __init__(
        self,
        executor: ExecutorName,
        jobs: int,
        ray_address: str | None = None,
        submit_fn: Callable[[Job], dict[str, Any]] | None = None,
    ) -> None:
        if executor not in ("serial", "local", "ray"):
            raise ConfigError(f"--executor must be serial, local or ray, got {executor!r}")
        self.executor = executor
        self.jobs = max(1, jobs if executor != "serial" else 1)
        self.fn = submit_fn or _guarded
        self._pool: ProcessPoolExecutor | None = None
        self._ray: Any = None  # the ray module and the remote job function, with the ray executor
        self._remote: Any = None
        if executor == "local":
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(
                self.jobs,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        elif executor == "ray":
            self._ray = _start_ray(ray_address)
            self._remote = self._ray.remote(num_cpus=1, max_retries=0)(self.fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def capacity(self) -> int:
        return self.jobs

    def run(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        """Run every job (at most `capacity` at a time); yield each outcome when it is final."""
        pending = list(jobs)
        attempts: dict[Job, int] = {}
        if self.executor == "serial":
            for job in pending:
                yield self._settle(job, self.fn(job), attempts, lambda j: self.fn(j))
            return
        in_flight: dict[Any, Job] = {}
        while pending or in_flight:
            while pending and len(in_flight) < self.capacity:
                job = pending.pop(0)
                in_flight[self._submit(job)] = job
            for handle in self._wait(list(in_flight)):
                job = in_flight.pop(handle)
                raw = self._result(handle)
                attempts[job] = attempts.get(job, 0) + 1
                if "error" in raw and attempts[job] < 2:
                    log.warning("job %s failed (%s); retrying once", job.name, raw["error"])
                    in_flight[self._submit(job)] = job
                    continue
                yield _outcome(job, raw, attempts[job])

    def _settle(self, job: Job, raw: dict, attempts: dict, again: Callable) -> Outcome:
        if "error" in raw:
            log.warning("job %s failed (%s); retrying once", job.name, raw["error"])
            return _outcome(job, again(job), 2)
        return _outcome(job, raw, 1)

    def _submit(self, job: Job) -> Any:
        if self._pool is not None:
            return self._pool.submit(self.fn, job)
        return self._remote.remote(job)

    def _wait(self, handles: list[Any]) -> list[Any]:
        if self._pool is not None:
            done, _ = wait(handles, return_when=FIRST_COMPLETED)
            return list(done)
        done, _ = self._ray.wait(handles, num_returns=1)
        return done

    def _result(self, handle: Any) -> dict[str, Any]:
        try:
            return handle.result() if isinstance(handle, Future) else self._ray.get(handle)
        except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
            return {"error": f"worker died: {type(exc).__name__}: {exc}"}


def _outcome(job: Job, raw: dict[str, Any], attempts: int) -> Outcome:
    if "error" in raw:
        return Outcome(job, None, raw["error"], attempts)
    return Outcome(job, raw["ok"], None, attempts)


def _start_ray(address: str | None) -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = (
            {"address": address} if address else {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}
        )
        ray.init(log_to_driver=False, ignore_reinit_error=True, **kwargs)
    return ray


def threads_per_job(jobs: int, threads: int | None = None) -> int:
    """Threads per job so that jobs × threads ≤ cores (or the given number)."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))
