"""Full-ranking evaluation: vectorized metrics over all items, protocol presets."""

from distillrec.eval.metrics import METRICS, metrics_from_hits
from distillrec.eval.ranking import PRESETS, Evaluator, buffered_score_fn, dot_score_fn

# The model-taking one-offs `evaluate` and `rank_topk` live in distillrec.training.scoring: eval knows no models.
__all__ = ["METRICS", "PRESETS", "Evaluator", "buffered_score_fn", "dot_score_fn", "metrics_from_hits"]
