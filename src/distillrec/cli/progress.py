"""The experiment command's live status line on stderr: jobs done, cached, running and left, and how long
the jobs left would take at the pace of those trained so far."""

from __future__ import annotations

import sys
import time

from rich.console import Console


class JobProgress:
    """Jobs done / running / left and the best validation score so far, on one rich status line."""

    def __init__(self, total: int, running: int, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.running = running
        self.done = self.cached = 0
        self.left = total
        self.started = time.monotonic()
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet or not sys.stderr.isatty(),
        )
        self.task = self.bar.add_task("", total=total)

    def add(self, cached: int, todo: int) -> None:
        self.cached += cached
        self.bar.advance(self.task, cached)
        self._show(float("nan"))

    def done_one(self, best: float) -> None:
        self.done += 1
        self.bar.advance(self.task, 1)
        self._show(best)

    def _show(self, best: float) -> None:
        left = max(0, int(self.bar.tasks[0].total or 0) - self.done - self.cached)
        self.bar.update(
            self.task,
            description=f"jobs: {self.done} run, {self.cached} cached, "
            f"≤{min(self.running, left)} running, ≤{left} left{self.eta(left)}; best valid {best:.4f}",
        )

    def eta(self, left: int) -> str:
        """Time for the jobs left at the pace of the jobs trained so far (cached ones cost nothing, so they
        do not count); an upper bound like `left`, which counts every trial as a new point."""
        if self.done == 0 or left == 0:
            return ""
        seconds = int((time.monotonic() - self.started) / self.done * left)
        return f" (≤{seconds // 3600}h{seconds % 3600 // 60:02d}m at this pace)"

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
