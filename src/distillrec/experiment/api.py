"""The Python API: train a model over seeds into run folders, and load a finished run back.

from distillrec import load_dataset, train, load_run
results = train("lightgcn", "scientific", seeds=[1, 2, 3])
run = load_run(results[0].run_dir)
run.recommend([0, 1, 2], k=10)
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset, interactions_to_csr
from distillrec.data.registry import load_dataset
from distillrec.errors import DistillrecError
from distillrec.eval.ranking import Evaluator
from distillrec.experiment.spec import (
    RunSpec,
    groups_of,
    read_config_file,
    read_run_config,
    resolve_spec,
    route,
)
from distillrec.models.base import Representation
from distillrec.models.registry import build_model
from distillrec.models.sequential.base import sequential
from distillrec.training.checkpoint import (
    RunFileError,
    load_checkpoint,
    read_json,
    read_npz,
    write_json,
    write_npz,
)
from distillrec.training.config import TrainConfig
from distillrec.training.defaults import resolve_train_config  # noqa: F401 - importers still find it here
from distillrec.training.ownership import own_run_folder
from distillrec.training.rundir import (
    refuse_other_configuration,
    refuse_other_contents,
    run_metrics,
    start_run_dir,
)
from distillrec.training.scoring import model_score_fn
from distillrec.training.tracking import make_tracker
from distillrec.training.trainer import Trainer, resolve_device, seed_everything, show_progress_lines

log = logging.getLogger("distillrec")


@dataclass
class RunResult:
    run_dir: Path | None
    metrics: dict[str, Any]


def _as_dataset(dataset: Dataset | str | Path, data_opts: dict[str, Any]) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(
        dataset, split=data_opts.get("split", "auto"), seed=int(data_opts.get("split_seed", 0))
    )


def dataset_for(spec: RunSpec) -> Dataset:
    """The dataset a specification names, read from where it was found (or by name)."""
    source = spec.data.source if spec.data.source and Path(spec.data.source).exists() else spec.data.name
    return load_dataset(source, split=spec.data.split, seed=spec.data.split_seed)


def train_one(
    spec: RunSpec,
    dataset: Dataset | None = None,
    out: Path | str | None = "runs",
    device: str = "auto",
    resume: bool = False,
    quiet: bool = True,
    log: str | None = None,
) -> RunResult:
    """Train and evaluate one run; write its folder under `out` (None: no files). `dataset`, when given,
    must be the one the specification names (it saves reading it again). `log="tensorboard"` also writes
    each epoch's history row into `<run_dir>/tensorboard/` (not part of the specification)."""
    ds = dataset if dataset is not None else dataset_for(spec)
    dev = resolve_device(device)
    cfg = spec.train_config()
    run_dir = spec.run_dir(out) if out is not None else None
    config = spec.as_config(ds.split_hash)
    with own_run_folder(run_dir) if run_dir is not None else contextlib.nullcontext():
        return _train_owned(spec, ds, dev, cfg, run_dir, config, out, resume, quiet, log)


def _train_owned(
    spec: RunSpec,
    ds: Dataset,
    dev: torch.device,
    cfg: TrainConfig,
    run_dir: Path | None,
    config: dict[str, Any],
    out: Path | str | None,
    resume: bool,
    quiet: bool,
    log: str | None = None,
) -> RunResult:
    """train_one's work, done while this process owns the run folder."""
    if run_dir is not None:
        if resume and (run_dir / "metrics.json").exists():  # finished: reuse it as stored, files untouched
            refuse_other_configuration(run_dir, config)
            refuse_other_contents(run_dir, ds)
            return RunResult(run_dir, read_json(run_dir / "metrics.json", RETRAIN))
    tracker = make_tracker(log, run_dir)  # refused (no tensorboard, no folder) before the folder is started
    if run_dir is not None:
        start_run_dir(run_dir, config, ds, dev)
    seed_everything(spec.seed)
    net = build_model(spec.model, ds, spec.params)
    distiller = None
    if spec.distill:
        from distillrec.distill.registry import build_distiller

        distiller = build_distiller(
            [spec.distill],
            ds,
            spec.model,
            groups_of(spec),
            dev,
            out,
            backbone_factory=lambda: build_model(spec.model, ds, spec.params),
            seed=spec.seed,
        )
    trainer = Trainer(net, ds, cfg, run_dir, distiller=distiller, device=dev, quiet=quiet, tracker=tracker)
    try:
        result = trainer.fit(resume=resume)
    finally:
        tracker.close()
    distill = [spec.distill] if spec.distill else []
    metrics = run_metrics(spec.model, distill, ds, spec.seed, cfg, result)
    metrics["spec_key"] = spec.key()
    if distiller is not None:
        metrics["distill_info"] = distiller.summary()
    if run_dir is not None:
        if result.per_user_test is not None:
            write_per_user(run_dir / PER_USER_FILE, *result.per_user_test)
        write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, metrics)


PER_USER_FILE = "per_user_test.npz"
RETRAIN = "resume the run with --resume after deleting metrics.json, or retrain it"


def write_per_user(path: Path, users: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """Per-user test metrics (the test set's own sampling error is estimated from them), atomically."""
    write_npz(path, users=users, **{k: np.asarray(v, dtype=np.float32) for k, v in values.items()})


def read_per_user(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    arr = read_npz(path, "retrain the run (or resume it after deleting metrics.json)")
    return arr["users"], {k: v for k, v in arr.items() if k != "users"}


def specs_for(
    model: str,
    dataset: Dataset,
    seeds: list[int] | tuple[int, ...],
    assignments: dict[str, Any] | None = None,
    distill: str | None = None,
) -> list[RunSpec]:
    """One resolved specification per seed."""
    return [
        resolve_spec(model, dataset.name, assignments, distill, seed, source=dataset.source) for seed in seeds
    ]


def train(
    model: str,
    dataset: Dataset | str | Path = "scientific",
    seeds: list[int] | tuple[int, ...] = (999,),
    set: dict[str, Any] | None = None,  # noqa: A002 - mirrors the CLI's --set
    out: Path | str | None = "runs",
    device: str = "auto",
    resume: bool = False,
    quiet: bool = False,
    distill: list[str] | str | None = None,
    config: Path | str | None = None,
    log: str | None = None,
) -> list[RunResult]:
    """Train `model` once per seed. Options: a configuration file (`config`) and flat `key: value`
    assignments over it (see `distillrec train --help`); `log="tensorboard"`: per-epoch scalars into each
    run folder's `tensorboard/`. Progress shows as a bar in a terminal or notebook, else as log lines
    (`quiet=True`: none)."""
    if not quiet:
        show_progress_lines()
    ds, specs = _resolve(model, dataset, seeds, set, distill, config)
    return [train_one(spec, ds, out, device, resume, quiet, log) for spec in specs]


def _resolve(
    model: str,
    dataset: Dataset | str | Path,
    seeds: list[int] | tuple[int, ...],
    set: dict[str, Any] | None,
    distill: list[str] | str | None,  # noqa: A002
    config: Path | str | None,
) -> tuple[Dataset, list[RunSpec]]:
    names = [distill] if isinstance(distill, str) else list(distill or [])
    if len(names) > 1:
        from distillrec.distill.registry import check_distill

        check_distill(names, model, {})  # refused with the reason
    method = names[0] if names else None
    assignments = {**(read_config_file(config) if config else {}), **(set or {})}
    ds = _as_dataset(dataset, route(assignments, method)["data"])
    return ds, specs_for(model, ds, seeds, assignments, method)


def resolved_configs(
    model: str,
    dataset: Dataset | str | Path = "scientific",
    seeds: list[int] | tuple[int, ...] = (999,),
    set: dict[str, Any] | None = None,  # noqa: A002 - mirrors the CLI's --set
    distill: list[str] | str | None = None,
    config: Path | str | None = None,
    out: Path | str = "runs",
) -> list[tuple[Path, dict[str, Any]]]:
    """What `train` with these arguments would write as each run's config.yaml, and where; trains nothing."""
    ds, specs = _resolve(model, dataset, seeds, set, distill, config)
    return [(spec.run_dir(out), spec.as_config(ds.split_hash)) for spec in specs]


class Run:
    """A finished run loaded back: its dataset (with the saved split), model and best weights."""

    def __init__(self, run_dir: Path | str, device: str = "auto") -> None:
        self.run_dir = Path(run_dir)
        cfg_path = self.run_dir / "config.yaml"
        if not cfg_path.exists():
            raise DistillrecError(f"{self.run_dir} is not a run folder (no config.yaml)")
        if not (self.run_dir / "metrics.json").exists():
            raise DistillrecError(
                f"{self.run_dir} has not finished (no metrics.json); resume it with --resume"
            )
        self.config = read_run_config(cfg_path, "retrain the run")
        self.metrics = read_json(self.run_dir / "metrics.json", RETRAIN)
        self.device = resolve_device(device)
        d = self.config["dataset"]
        source = d["source"] if d.get("source") and Path(d["source"]).exists() else d["name"]
        ds = load_dataset(source, split=d.get("split", "auto"), seed=int(d.get("split_seed", 0)))
        self.dataset = _with_saved_split(ds, self.run_dir / "split.npz")
        if self.dataset.split_hash != d["split_hash"]:
            raise DistillrecError(
                f"{self.run_dir}: the dataset's split no longer matches the run's split hash"
            )
        self.train_config = TrainConfig(**self.config["train"])
        self.model = build_model(self.config["model"], self.dataset, self.config["params"]).to(self.device)
        self.model.fit(self.dataset)
        if self.model.trainable:  # never score untrained weights in place of the run's
            state = load_checkpoint(self.run_dir / "best.pt", self.device, RETRAIN)
            try:
                self.model.load_state_dict(state["model"])
            except (KeyError, RuntimeError):
                raise RunFileError(
                    f"{self.run_dir / 'best.pt'}: holds no weights of this run's model; retrain the run"
                ) from None
        self.model.eval()
        self.features = {m: f.to(self.device) for m, f in self.dataset.features.items()}

    def representation(self) -> Representation:
        with torch.no_grad():
            return self.model.represent(self.features)

    def evaluate(
        self, split: str = "test", preset: str | None = None, ks: list[int] | None = None
    ) -> dict[str, float]:
        if self.model.task == "next-item":
            from distillrec.training.next_item import evaluate_next

            strict = (preset or self.train_config.preset) == "strict"  # strict masks the user's history
            return evaluate_next(
                sequential(self.model),
                self.dataset,
                self.features,
                split,
                ks or self.train_config.ks,
                mask_history=strict,
            )
        ev = Evaluator(
            self.dataset, preset or self.train_config.preset, ks or self.train_config.ks, self.device
        )
        return ev.evaluate(model_score_fn(self.model, self.representation()), split)

    def recommend(
        self, users: list[int] | np.ndarray | None = None, k: int = 10, exclude_seen: bool = False
    ) -> np.ndarray:
        """Top-k item ids per user ([len(users), k]); masks what the test evaluation masked, or every
        known interaction with `exclude_seen`."""
        ds = self.dataset
        if users is None:
            users = np.arange(ds.n_users)
        users = np.asarray(users, dtype=np.int64)
        bad = users[(users < 0) | (users >= ds.n_users)]
        if len(bad):
            raise DistillrecError(f"unknown user id {int(bad[0])}: the dataset has users 0..{ds.n_users - 1}")
        if k < 1 or k > ds.n_items:
            raise DistillrecError(f"k must be between 1 and {ds.n_items} (the number of items), got {k}")
        if self.model.task == "next-item":  # next items after each user's whole known history
            from distillrec.training.next_item import recommend_next

            with torch.no_grad():
                return recommend_next(
                    sequential(self.model), ds, self.features, users, k, exclude_seen
                ).numpy()
        preset = "strict" if exclude_seen else self.train_config.preset
        ev = Evaluator(ds, preset, (k,), self.device)
        if exclude_seen:  # every known interaction, test included
            ev.mask_matrix = lambda split: (ds.train + ds.valid + ds.test).tocsr()  # type: ignore[method-assign]
        _, top = ev.topk(
            model_score_fn(self.model, self.representation()), "test", k, torch.from_numpy(users)
        )
        return top.cpu().numpy()


def _with_saved_split(ds: Dataset, path: Path) -> Dataset:
    if not path.exists():
        return ds
    arr = read_npz(path, "the run's split is unreadable: retrain the run")
    mats = []
    for label in range(3):
        sel = arr["x_label"] == label
        mats.append(interactions_to_csr(arr["user"][sel], arr["item"][sel], ds.n_users, ds.n_items))
    ds.train, ds.valid, ds.test = (sp.csr_matrix(m) for m in mats)
    return ds


def per_user_test(run: Run) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-user test metrics of a finished run's best weights, evaluated as the trainer evaluates."""
    from distillrec.training.tasks import make_task

    task = make_task(
        run.model.task, run.dataset, run.train_config, run.device, run.model.trainable, run.model
    )
    with torch.no_grad():
        task.evaluate(run.model, run.features, "test", per_user=True)
    return task.last_per_user


def load_run(run_dir: Path | str, device: str = "auto") -> Run:
    return Run(run_dir, device)
