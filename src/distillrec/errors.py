"""Errors the user caused (bad files, bad options): shown as one line, never a traceback."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DistillrecError(Exception):
    """Base class: the message alone is what the user sees."""


class DataError(DistillrecError):
    """A dataset file is malformed: the message names the file, the row and the problem."""


class ConfigError(DistillrecError):
    """An option or hyperparameter is unknown or invalid."""


def validation_message(exc: ValidationError) -> str:
    """One readable line from a pydantic ValidationError: 'key: problem; key: problem'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].lower()}" for e in exc.errors())


@contextmanager
def warnings_only_on_success() -> Iterator[None]:
    """Hold back the warnings a reader emits while it reads: a damaged file can make a library warn before it
    fails (numpy overflowing on an absurd .npy header, torch on an unknown pickle protocol), and the one
    error line the caller raises then says all there is to say. On success they are passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
