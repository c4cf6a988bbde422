"""Errors the user caused (bad files, bad options): shown as one line, never a traceback."""

from __future__ import annotations

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
