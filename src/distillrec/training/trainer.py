"""The training loop shared by every backbone and distiller.

Per epoch: the backbone's epoch hook (`Recommender.on_epoch_start`, e.g. FREEDOM's edge pruning), shuffle
the training pairs, draw negatives, one optimiser step per batch on the backbone's loss plus the distiller's
terms; every `eval_every` epochs rank all items for the validation users.
Early stopping keeps the best-validation weights (`best.pt`); `last.pt` holds everything needed to
resume (weights, optimiser, RNG states, history), so an interrupted run ends exactly as an
uninterrupted one with the same seed. Test metrics are computed once, for the best-validation weights.

The run folder's `last.pt`, `best.pt` and `history.csv` are written together at the end of an epoch once
`checkpoint_interval_s` seconds (environment variable DISTILLREC_CHECKPOINT_INTERVAL_S, default 5) have
passed since the last write, and always at the last epoch and at an early stop: on small data an epoch takes
less time than its synced checkpoint, and an interrupted run redoes at most that many seconds of work
(exactly, as it resumes from the RNG states of its last checkpoint). 0 writes every epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset
from distillrec.errors import ConfigError, DistillrecError
from distillrec.models.base import Recommender
from distillrec.training.checkpoint import load_checkpoint, save_checkpoint, write_run_file
from distillrec.training.config import TrainConfig
from distillrec.training.tasks import make_task
from distillrec.training.tracking import Tracker

if TYPE_CHECKING:
    from rich.progress import Progress

    from distillrec.distill.base import Distiller  # the layer above: distillers are handed in

log = logging.getLogger("distillrec.training")
RESTART = "run again without --resume to start the run over"
CHECKPOINT_INTERVAL_VAR = "DISTILLREC_CHECKPOINT_INTERVAL_S"
DEFAULT_CHECKPOINT_INTERVAL_S = 5.0


def checkpoint_interval() -> float:
    """Seconds between checkpoint writes: DISTILLREC_CHECKPOINT_INTERVAL_S, else the default."""
    raw = os.environ.get(CHECKPOINT_INTERVAL_VAR, "").strip()
    if not raw:
        return DEFAULT_CHECKPOINT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(
            f"{CHECKPOINT_INTERVAL_VAR}={raw!r}: give the seconds between checkpoints (0: every epoch)"
        )
    return value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`; anything else is one ConfigError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA devices")
    return dev


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    per_user_test: tuple[Any, dict[str, Any]] | None = None  # (user ids, {metric: per-user values})


class Trainer:
    """Trains one model on one dataset; optionally writes a run folder and resumes from it."""

    def __init__(
        self,
        model: Recommender,
        dataset: Dataset,
        config: TrainConfig,
        run_dir: Path | None = None,
        distiller: Distiller | None = None,
        device: torch.device | str = "cpu",
        quiet: bool = False,
        tracker: Tracker | None = None,  # each history row goes to it too (training.tracking)
        checkpoint_interval_s: float | None = None,  # None: checkpoint_interval()
    ) -> None:
        self.model = model.to(device)
        self.dataset = dataset
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else None
        self.distiller = distiller.to(device) if distiller is not None else None
        self.device = torch.device(device)
        self.quiet = quiet
        self.tracker = tracker or Tracker()
        self.checkpoint_interval_s = (
            checkpoint_interval() if checkpoint_interval_s is None else checkpoint_interval_s
        )
        self.features = {m: f.to(self.device) for m, f in dataset.features.items()}
        metric_k = config.valid_metric.split("@")
        if len(metric_k) != 2 or int(metric_k[1]) not in config.ks:
            raise ConfigError(
                f"valid_metric {config.valid_metric!r} must be <metric>@K with K in ks={config.ks}"
            )
        groups = [g for g in self.model.param_groups(config.lr) if g["params"]]
        if self.distiller is not None:
            extra = [p for p in self.distiller.parameters() if p.requires_grad]
            if extra:
                groups.append({"name": "distiller", "params": extra, "lr": config.lr})
        for g in groups:
            g["base_lr"] = g["lr"]
        self.trainable = model.trainable and len(groups) > 0
        self.optimizer = (
            torch.optim.Adam(groups, weight_decay=config.weight_decay) if self.trainable else None
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.task = make_task(model.task, dataset, config, self.device, self.trainable, model)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str, per_user: bool = False) -> dict[str, float]:
        self.model.eval()
        result = self.task.evaluate(self.model, self.features, split, per_user=per_user)
        self.model.train()
        return result

    # ----------------------------------------------------------------- state
    def _state(
        self, epoch: int, best: dict[str, Any], history: list[dict[str, Any]], bad: int
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "distiller": self.distiller.state_dict() if self.distiller is not None else {},
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": list(random.getstate()[1]),
            "best": best,
            "history": history,
            "bad_evals": bad,
        }

    def _restore(self, state: dict[str, Any]) -> tuple[int, dict[str, Any], list[dict[str, Any]], int]:
        self.model.load_state_dict(state["model"])
        if self.distiller is not None and state.get("distiller"):
            self.distiller.load_state_dict(state["distiller"])
        if self.optimizer and state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
        return state["epoch"], state["best"], state["history"], state["bad_evals"]

    # ----------------------------------------------------------------- training
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        factors = self.model.lr_multipliers(epoch)
        if self.distiller is not None:
            # a distiller may schedule the backbone's named groups (KDSR's asynchronous warm-up)
            factors = {**factors, **self.distiller.lr_multipliers(epoch)}
        optimizer = self.optimizer
        assert optimizer is not None, "only a trainable model trains"
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factors.get(group.get("name", ""), 1.0)
        # once per epoch, before its batches; a resumed run calls it for the epoch it continues with
        self.model.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        n_batches = 0
        for batch in self.task.batches(self.generator):
            rep = self.model.represent(self.features)
            out = self.model.loss(rep, batch)
            terms = dict(out) if isinstance(out, dict) else {"loss": out}
            if self.distiller is not None:
                terms.update(self.distiller.loss(self.model, rep, batch, epoch))
            total = cast(Tensor, sum(terms.values()))
            if not torch.isfinite(total):
                raise DistillrecError(
                    f"the loss became {total.item()} at epoch {epoch}; try a lower lr or stronger regularisation"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], self.config.clip_grad_norm
                )
            optimizer.step()
            for name, v in terms.items():
                sums[name] = sums.get(name, 0.0) + float(v.detach())
            n_batches += 1
        means = {name: s / max(1, n_batches) for name, s in sums.items()}
        if len(means) > 1:
            means["loss_total"] = sum(means.values())
        if self.distiller is not None:
            means.update(self.distiller.on_epoch_end(self.model, epoch))
        return means

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        start = time.perf_counter()
        self.model.fit(self.dataset)
        epoch, bad = 0, 0
        best: dict[str, Any] = {"epoch": 0, "score": -math.inf, "valid": {}}
        history: list[dict[str, Any]] = []
        last = self.run_dir / "last.pt" if self.run_dir else None
        if resume and last is not None and last.exists():
            epoch, best, history, bad = self._restore(load_checkpoint(last, self.device, RESTART))
            log.info("resumed from %s at epoch %d", last, epoch)
            # the time already spent counts: reported seconds cover the whole run, not this call
            start -= sum(row.get("train_s", 0.0) + row.get("eval_s", 0.0) for row in history)
        if not self.trainable:
            best = {"epoch": 0, "score": 0.0, "valid": self.evaluate("valid")}
        elif bad < cfg.patience:
            progress = _progress(cfg.epochs, epoch, self.quiet)
            best_state: dict[str, Tensor] | None = None  # best weights not yet in best.pt
            written = time.perf_counter()
            with progress:
                while epoch < cfg.epochs:
                    epoch += 1
                    t0 = time.perf_counter()
                    row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch)}
                    row["train_s"] = round(time.perf_counter() - t0, 4)
                    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                        t1 = time.perf_counter()
                        valid = self.evaluate("valid")
                        row["eval_s"] = round(time.perf_counter() - t1, 4)
                        row.update({f"valid_{k}": v for k, v in valid.items()})
                        score = valid[cfg.valid_metric]
                        if score > best["score"]:
                            best, bad = {"epoch": epoch, "score": score, "valid": valid}, 0
                            best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                            self._best_state = best_state
                        else:
                            bad += 1
                    history.append(row)
                    self.tracker.log(row)
                    progress.update(epoch, row, best)
                    due = time.perf_counter() - written >= self.checkpoint_interval_s
                    if self.run_dir and (due or epoch == cfg.epochs or bad >= cfg.patience):
                        # best.pt before last.pt: a kill between the two leaves a best.pt ahead of last.pt,
                        # which the resumed run, retracing the same epochs, writes again identically
                        if best_state is not None:
                            save_checkpoint(
                                self.run_dir / "best.pt", {"model": best_state, "epoch": best["epoch"]}
                            )
                            best_state = None
                        save_checkpoint(self.run_dir / "last.pt", self._state(epoch, best, history, bad))
                        self._write_history(self.run_dir, history)
                        written = time.perf_counter()
                    if bad >= cfg.patience:
                        log.info("early stop at epoch %d (best %d)", epoch, best["epoch"])
                        break
        if self.trainable and best["epoch"] > 0:
            if self.run_dir:
                self.model.load_state_dict(load_checkpoint(self.run_dir / "best.pt", self.device)["model"])
            else:
                self.model.load_state_dict(self._best_state)
        test = self.evaluate("test", per_user=True)
        if not self.quiet:
            log.info(
                "best epoch %d of %d: valid %s %.4f, test %s %.4f",
                best["epoch"],
                epoch,
                cfg.valid_metric,
                best["valid"].get(cfg.valid_metric, float("nan")),
                cfg.valid_metric,
                test.get(cfg.valid_metric, float("nan")),
            )
        return TrainResult(
            best["epoch"],
            epoch,
            best["valid"],
            test,
            history,
            time.perf_counter() - start,
            getattr(self.task, "last_per_user", None),
        )

    def _write_history(self, run_dir: Path, history: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        write_run_file(run_dir / "history.csv", buf.getvalue().encode())


def _live_display() -> bool:
    """A terminal or a notebook: where a progress bar redraws in place."""
    if sys.stderr.isatty():
        return True
    from rich.console import Console

    return Console().is_jupyter


def show_progress_lines() -> None:
    """Where no progress bar can redraw and nobody configured logging (a script run by the Python API),
    progress lines would be dropped: send this package's INFO lines to stderr."""
    import logging

    pkg = logging.getLogger("distillrec")
    if not pkg.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        pkg.addHandler(handler)
        pkg.setLevel(logging.INFO)


class _progress:
    """A rich progress bar on a terminal; a log line per evaluation otherwise."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.bar: Progress | None = None
        if not quiet and _live_display():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("epoch"),
                MofNCompleteColumn(),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,  # the finished bar stays: epochs run, time, best epoch
            )
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def __enter__(self) -> _progress:
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar:
            self.bar.__exit__(*exc)

    def update(self, epoch: int, row: dict[str, Any], best: dict[str, Any]) -> None:
        loss = row.get("loss_total", row.get("loss", float("nan")))
        info = f"loss {loss:.4f}  best valid {best['score']:.4f} @ {best['epoch']}"
        if self.bar:
            self.bar.update(self.task, completed=epoch, info=info)
        elif not self.quiet:
            log.info("epoch %d  %s", epoch, info)
