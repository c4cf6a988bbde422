"""The thresholds of the verdicts, fitted from measured outcomes, in one place.

Each method's threshold is fitted (`fit`) from EVIDENCE: for each measured case, the diagnostic's quantity
on the plain model or data, and whether the method then helped under the fair protocol (its experiment
report calls a difference only if it holds over seeds and test users, Holm-adjusted, α = 0.05). The
verdict is "likely to help" when the quantity exceeds the threshold, else "unlikely". With no case where
the method helped, the threshold is the largest quantity at which it did not: the verdict then says
"likely" only beyond anything measured so far. Re-fit by adding the premise-variant outcomes
(experiments/diagnose-*.yaml) to EVIDENCE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["likely to help", "unlikely", "cannot tell", "not applicable"]


@dataclass(frozen=True)
class Case:
    """One measured case: the diagnostic's value, whether the method helped, and where both come from."""

    value: float
    helped: bool
    source: str


@dataclass(frozen=True)
class Threshold:
    quantity: str
    value: float
    cases: tuple[Case, ...] = field(default_factory=tuple)


EVIDENCE: dict[str, tuple[Case, ...]] = {
    # headroom_m = (teacher − inside) / teacher, test Recall@20 means over report seeds 1-5, from the table
    # "Each modality alone" of docs/results/ckd.md; helped = the "Plain vs distilled" row of the ckd arm.
    "ckd": (
        Case(
            (0.1744 - 0.1163) / 0.1744,  # image (text: 0.073)
            False,  # +3.2%, Holm p 0.611
            "docs/results/ckd.md: vbpr on scientific",
        ),
        Case(
            (0.1489 - 0.1472) / 0.1489,  # image (text: 0.002)
            False,  # +3.0%, Holm p 0.611
            "docs/results/ckd.md: deepstyle on scientific",
        ),
    ),
    # label signal beyond the features (diagnose.semantics) of scientific as shipped, measured by
    # `semantic_gap(load_dataset("scientific"))`: share unseparated 0.157, observed 0.163, chance 0.089.
    "sgfd": (
        Case(
            0.01155107602894119,
            False,  # +1.6%, Holm p 0.363
            "docs/results/sgfd.md: grcn on scientific (the data's value, measured by diagnose.semantics)",
        ),
    ),
    # forgetting (diagnose.forgetting) of a plain gru4rec with modality tables on scientific (seed 1,
    # defaults, `--distill forgetting`, best epoch 34): code_corr image 0.9918 -> 0.9895, text 0.9851 ->
    # 0.9826 (an untuned run; the tuned plain GRU4Rec's checkpoint would be the better measurement). The
    # outcome, docs/results/kdsr.md: hit@20 0.1889 plain vs 0.1901 with CDL, +0.6%, Holm p 0.415.
    "cdl": (
        Case(
            0.0025012369749741747,
            False,  # +0.6%, Holm p 0.415
            "docs/results/kdsr.md: gru4rec (modality_input) on scientific",
        ),
    ),
}


def fit(cases: tuple[Case, ...]) -> float:
    """The threshold t ("likely" iff value > t) with the fewest misclassified cases; among equals, the
    largest (the more cautious verdict)."""
    candidates = sorted({c.value for c in cases} | {min(c.value for c in cases) - 1e-9})
    errors = [sum((c.value > t) != c.helped for c in cases) for t in candidates]
    best = min(errors)
    return max(t for t, e in zip(candidates, errors, strict=True) if e == best)


def thresholds(quantities: dict[str, str]) -> dict[str, Threshold]:
    """Each method's fitted threshold, named by its quantity."""
    return {m: Threshold(q, fit(EVIDENCE[m]), EVIDENCE[m]) for m, q in quantities.items()}


def verdict(value: float | None, threshold: float) -> Verdict:
    if value is None or value != value:  # None or NaN: not measured
        return "cannot tell"
    return "likely to help" if value > threshold else "unlikely"
