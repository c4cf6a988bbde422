"""Errors the user caused (bad files, bad options): shown as one line, never a traceback."""


class DistillrecError(Exception):
    """Base class: the message alone is what the user sees."""


class DataError(DistillrecError):
    """A dataset file is malformed: the message names the file, the row and the problem."""


class ConfigError(DistillrecError):
    """An option or hyperparameter is unknown or invalid."""


def validation_message(exc) -> str:  # noqa: ANN001 - a pydantic ValidationError
    """One readable line from a pydantic ValidationError: 'key: problem; key: problem'."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].lower()}" for e in exc.errors())
