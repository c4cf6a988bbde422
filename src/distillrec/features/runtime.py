"""What every encoder shares: the device, offline model loading and the progress bar.

Kept apart from the encoders so that both the text and the image path pick the device the same way
(`auto` = a GPU when there is one) and never reach the network: models are read from local folders only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from distillrec.errors import ConfigError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")


def resolve_device(device: str | None) -> str:
    """`auto` (or None) -> 'cuda' when a GPU is present, else 'cpu'; an explicit device is checked."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not _DEVICE.fullmatch(device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda (cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA device is available")
    return device


@contextmanager
def offline() -> Iterator[None]:
    """Hugging Face libraries told not to reach the network while a model loads (and their own
    progress bars off: ours is the one that counts items)."""
    saved = {k: os.environ.get(k) for k in OFFLINE_VARS}
    os.environ.update({k: "1" for k in OFFLINE_VARS})
    restore_bars: Callable[[], None] | None = None
    try:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            restore_bars = hf_logging.enable_progress_bar
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if restore_bars is not None:
            restore_bars()


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened: for errors that wrap a library's failure."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def progress(total: int, description: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A rich bar over `total` items on a terminal (silent when quiet or piped); yields `advance(n)`."""
    if quiet or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(description),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)
