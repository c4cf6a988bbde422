"""Experiment tracking: each per-epoch history row, as the trainer appends it, sent to a viewer.

`Tracker` records nothing (the default); `TensorBoardTracker` writes every numeric value of the row (loss
terms, validation metrics, timing, a distiller's per-epoch values such as CKD's `ckd_lambda_<m>` or CDL's
`forget_corr_<m>`) as a TensorBoard scalar at step = epoch, under the tag `tag(key)`:
`valid_<metric>` -> `valid/<metric>`, `train_s`/`eval_s` -> `time/…`, anything else -> `train/<key>`.
A resumed run continues the same folder: its writer opens with `purge_step` = the first epoch it logs, so
events a killed session wrote after its last checkpoint are hidden and each curve has one value per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillrec.errors import ConfigError

if TYPE_CHECKING:  # tensorboard is an optional extra
    from torch.utils.tensorboard import SummaryWriter

TRACKERS = ("tensorboard",)


def tag(key: str) -> str:
    """The TensorBoard tag of a history column."""
    if key.startswith("valid_"):
        return "valid/" + key.removeprefix("valid_")
    if key in ("train_s", "eval_s"):
        return f"time/{key}"
    return f"train/{key}"


class Tracker:
    """Receives every history row the trainer appends; records nothing."""

    def log(self, row: dict[str, Any]) -> None:
        """One epoch's row (its `epoch` key is the step)."""

    def close(self) -> None:
        """Flush and release whatever the tracker holds."""


class TensorBoardTracker(Tracker):
    """Scalars into `log_dir` (a run's `tensorboard/` folder); the writer opens at the first row."""

    def __init__(self, log_dir: Path | str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError('--log tensorboard needs tensorboard: pip install -e ".[track]"') from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer: SummaryWriter | None = None

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        if self.writer is None:  # this session's first epoch: anything logged at or after it is stale
            self.writer = self._writer_class(str(self.log_dir), purge_step=step)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), float(value), step)
        self.writer.flush()  # once per epoch: a killed run loses nothing it had checkpointed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def make_tracker(name: str | None, run_dir: Path | None) -> Tracker:
    """The tracker `--log NAME` asks for, writing into `run_dir` (None or "none": no tracking)."""
    if name in (None, "", "none"):
        return Tracker()
    if name not in TRACKERS:
        raise ConfigError(f"--log {name!r} is unknown; choose one of: {', '.join(TRACKERS)}")
    if run_dir is None:
        raise ConfigError(f"--log {name} writes into the run folder; give an output folder (out)")
    return TensorBoardTracker(run_dir / "tensorboard")
