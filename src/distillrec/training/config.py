"""Typed training settings; unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """How a model is optimised, selected and evaluated. Defaults follow the MMRec toolbox."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(1000, ge=1, description="maximum number of epochs (test metrics of an untrained model are no result)")
    batch_size: int = Field(2048, ge=1)
    n_negatives: int = Field(1, ge=1, description="negatives per positive (Batch.neg is [B, n] when > 1)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (models regularise in their loss)")
    patience: int = Field(20, ge=1, description="evaluations without validation gain before stopping")
    eval_every: int = Field(1, ge=1)
    valid_metric: str = "recall@20"
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    preset: Literal["mmrec", "strict"] = "mmrec"
    eval_batch_size: int = Field(4096, ge=1)
    seed: int = 999
    clip_grad_norm: float | None = None
