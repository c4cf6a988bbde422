"""Learning-rate schedules applied per epoch through the trainer's per-group multipliers.

KDSR's asynchronous training: the modality-embedding tables start at lr/γ and reach lr linearly over
the first E epochs, so that early, noisy recommendation gradients do not wash out what the tables
were initialised with. The official code instead keeps a constant lr/γ for the whole run
(`legacy_constant_ratio`; its γ^len(schedule) = 2² = 4 is our default γ).

It lives under `models` because both of its users sit at or above it: the next-item backbones' own
warm-up (`models.sequential.base`) and CDL's (`distill.cdl`); the trainer only applies the factors.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AsyncWarmup(BaseModel):
    """Factor of the base lr for a parameter group, per 1-based epoch."""

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(4.0, ge=1.0, description="the group starts at lr / gamma")
    epochs: int = Field(10, ge=0, description="epochs to reach the full lr")
    legacy_constant_ratio: bool = Field(False, description="official code: lr / gamma for every epoch")

    def factor(self, epoch: int) -> float:
        """1/γ at epoch 1, rising linearly to 1 at epoch E + 1 and staying there."""
        start = 1.0 / self.gamma
        if self.legacy_constant_ratio:
            return start
        if self.epochs == 0:
            return 1.0
        progress = min(max(epoch - 1, 0) / self.epochs, 1.0)
        return start + (1.0 - start) * progress


def warmup_factors(schedule: AsyncWarmup | None, groups: tuple[str, ...], epoch: int) -> dict[str, float]:
    """{group: factor} for the named groups, {} when there is no schedule."""
    if schedule is None:
        return {}
    f = schedule.factor(epoch)
    return {g: f for g in groups}
