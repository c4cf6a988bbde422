"""Search spaces: kept here for importers; they live in `distillrec.models.space` (a model declares one)."""

from distillrec.models.space import (
    Dimension,
    Space,
    describe,
    grid,
    grid_size,
    is_finite,
    parse_space,
    suggest,
)

__all__ = ["Dimension", "Space", "describe", "grid", "grid_size", "is_finite", "parse_space", "suggest"]
