"""Typed training settings; unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillrec.eval.metrics import METRICS as METRIC_NAMES


class TrainConfig(BaseModel):
    """How a model is optimised, selected and evaluated. Defaults follow the MMRec toolbox."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(
        1000, ge=1, description="maximum number of epochs (test metrics of an untrained model are no result)"
    )
    batch_size: int = Field(2048, ge=1, description="training pairs (or sequences) per step")
    n_negatives: int = Field(1, ge=1, description="negatives per positive (Batch.neg is [B, n] when > 1)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (models regularise in their loss)")
    patience: int = Field(20, ge=1, description="evaluations without validation gain before stopping")
    eval_every: int = Field(1, ge=1, description="epochs between validation evaluations")
    valid_metric: str = Field("recall@20", description="METRIC@K that selects the best epoch")
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50], description="cut-offs K evaluated")
    preset: Literal["mmrec", "strict"] = Field(
        "mmrec",
        description="mmrec: test masks train only (MMRec's protocol; next-item: the history stays rankable, "
        "RecBole's); strict: every known interaction but the target (train and valid; next-item: the history)",
    )
    eval_batch_size: int = Field(4096, ge=1, description="users scored per block in full ranking")
    seed: int = Field(999, description="the run's seed")
    clip_grad_norm: float | None = Field(
        None, description="clip the gradient norm to this (None: no clipping)"
    )

    @model_validator(mode="after")
    def _selection_metric_is_evaluated(self) -> TrainConfig:
        """Model selection reads `valid_metric` from the evaluation: its K must be one of `ks`."""
        name, _, k = self.valid_metric.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"valid_metric {self.valid_metric!r} must be METRIC@K with K in ks {self.ks}")
        if name not in METRIC_NAMES:
            raise ValueError(
                f"valid_metric {self.valid_metric!r}: unknown metric; known: {', '.join(METRIC_NAMES)}"
            )
        return self
