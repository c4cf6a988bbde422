"""Learning-rate schedules for the trainer's per-group multipliers.

The asynchronous warm-up (`AsyncWarmup`, `warmup_factors`) lives in `distillrec.models.schedules`, where
both of its users (the next-item backbones and CDL) reach it without importing upwards; it is re-exported
here for code that looks for the schedules beside the trainer.
"""

from __future__ import annotations

from distillrec.models.schedules import AsyncWarmup, warmup_factors

__all__ = ["AsyncWarmup", "warmup_factors"]
