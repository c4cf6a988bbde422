"""Whether a distillation method is worth trying on a model and its data: each method's premise, measured
on a finished run (`diagnose`), and datasets derived from real ones in which one premise is made to hold
(`write_variant`).

Layer: above `experiment` (it loads runs and reuses the probe and per-modality diagnostics) and `features`
(variants re-embed text), below `cli`.
"""

from distillrec.diagnose.report import SCHEMA, THRESHOLDS, diagnose, render_markdown, render_table, rows
from distillrec.diagnose.variants import KINDS, VariantResult, write_premise_variants, write_variant

__all__ = [
    "KINDS",
    "SCHEMA",
    "THRESHOLDS",
    "VariantResult",
    "diagnose",
    "render_markdown",
    "render_table",
    "rows",
    "write_premise_variants",
    "write_variant",
]
