"""Full-ranking evaluation: vectorized metrics over all items, protocol presets."""

from distillrec.eval.metrics import METRICS, metrics_from_hits
from distillrec.eval.ranking import PRESETS, evaluate, rank_topk

__all__ = ["METRICS", "PRESETS", "evaluate", "metrics_from_hits", "rank_topk"]
