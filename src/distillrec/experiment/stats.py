"""Statistics of a fair plain-vs-distilled comparison: across training seeds, across test users, corrected.

A difference is called only when it holds both across training seeds (paired t-test) and across test users
(paired bootstrap): the intersection-union test takes the larger p, and Holm corrects over the metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from distillrec.errors import DistillrecError
from distillrec.experiment.results import ConfigRuns, format_p

# Resampled users held in memory at once (indices + gathered values): chunks of this many elements keep a
# bootstrap over a million users as light as one over a thousand. Results do not depend on it (see below).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SeedTest:
    """Seed-level comparison: relative change of the means and the paired t-test over shared seeds."""

    relative_change: float
    p: float | None
    n: int


@dataclass(frozen=True)
class Bootstrap:
    """User-level comparison: observed mean difference, percentile intervals and bootstrap p-value."""

    diff: float
    low: float
    high: float
    relative_low: float
    relative_high: float
    p: float
    n_users: int
    n_resamples: int


def _seed_values(values: dict[int, float], arm: str) -> np.ndarray:
    arr = np.array(list(values.values()), dtype=float)
    if arr.size == 0:
        raise DistillrecError(f"paired seed test: the {arm} arm has no seed values")
    if not np.all(np.isfinite(arr)):
        raise DistillrecError(f"paired seed test: the {arm} arm has a NaN or infinite value")
    return arr


def paired_seed_test(plain: dict[int, float], distilled: dict[int, float]) -> SeedTest:
    """Relative change of mean(distilled) over mean(plain), two-sided paired t-test over the shared seeds.

    Seeds pair the arms (same data split, same initialisation stream), so the test is on per-seed differences.
    p is None with fewer than 2 shared seeds, and 1.0 when every difference is exactly zero (scipy gives NaN).
    When the differences are all equal but non-zero (up to floating-point rounding of the inputs), the t
    statistic is infinite and p = 0.0: the limit of the test as the spread vanishes, and what scipy returns
    for exactly equal differences; rounding noise alone would otherwise make scipy warn and return an arbitrary
    tiny p. The relative change is NaN when the plain mean is zero.
    """
    xp = _seed_values(plain, "plain")
    xd = _seed_values(distilled, "distilled")
    mean_plain = float(xp.mean())
    rel = (float(xd.mean()) - mean_plain) / mean_plain if mean_plain else float("nan")
    shared = sorted(set(plain) & set(distilled))
    if len(shared) < 2:
        return SeedTest(rel, None, len(shared))
    a = np.array([plain[s] for s in shared], dtype=float)
    b = np.array([distilled[s] for s in shared], dtype=float)
    d = b - a
    if np.all(d == 0):
        return SeedTest(rel, 1.0, len(shared))
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    if np.ptp(d) <= 16 * np.finfo(float).eps * scale:
        return SeedTest(rel, 0.0, len(shared))
    return SeedTest(rel, float(stats.ttest_rel(b, a).pvalue), len(shared))


def _per_user(values: np.ndarray, arm: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise DistillrecError(
            f"paired bootstrap: {arm} values must be a non-empty [n_users] or [n_seeds, n_users] array, "
            f"got shape {arr.shape}"
        )
    if np.isnan(arr).any():
        raise DistillrecError(f"paired bootstrap: {arm} values contain NaN")
    if np.isinf(arr).any():
        raise DistillrecError(f"paired bootstrap: {arm} values contain an infinite value")
    return arr.mean(axis=0) if arr.ndim == 2 else arr


def paired_bootstrap(
    plain_users: np.ndarray,
    distilled_users: np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> Bootstrap:
    """Paired bootstrap over test users of the mean difference distilled − plain.

    Per-user values of shape [n_users] or [n_seeds, n_users] (averaged over seeds per user first); both arms
    hold the same users in the same order, and each resample draws the same users for both arms, so the
    between-user spread cancels. Intervals are percentile intervals (linear interpolation) of the resampled
    mean difference and of the resampled mean difference / resampled plain mean (NaN when some resample has
    a zero plain mean: the ratio is then unbounded).

    p-value: the percentile-interval inversion on the uncentred bootstrap distribution,
    p = min(1, 2 min(#{diff* ≤ 0} + 1, #{diff* ≥ 0} + 1) / (n_resamples + 1)), so p < 1 − level roughly when
    0 lies outside the reported interval; identical arms give exactly 1, and no resample is ever reported as
    p = 0 (the floor is 2 / (n_resamples + 1)).

    Users are drawn as floor(n_users · U) with U from ``np.random.default_rng(seed).random``: one 64-bit draw
    per index, so the resamples (and results) do not depend on the chunk size used to bound memory.
    """
    if n_resamples < 1:
        raise DistillrecError(f"paired bootstrap: n_resamples must be at least 1, got {n_resamples}")
    if not 0 < level < 1:
        raise DistillrecError(f"paired bootstrap: level must lie strictly between 0 and 1, got {level}")
    raw_plain, raw_dist = np.asarray(plain_users), np.asarray(distilled_users)
    if raw_plain.shape != raw_dist.shape:
        raise DistillrecError(
            f"paired bootstrap: plain and distilled values differ in shape {raw_plain.shape} vs {raw_dist.shape}"
        )
    plain = _per_user(raw_plain, "plain")
    delta = _per_user(raw_dist, "distilled") - plain
    n = plain.size

    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    plain_means = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):  # a handful of memory-bounded blocks, each vectorised
        stop = min(start + chunk, n_resamples)
        idx = np.minimum((rng.random((stop - start, n)) * n).astype(np.intp), n - 1)
        diffs[start:stop] = delta[idx].mean(axis=1)
        plain_means[start:stop] = plain[idx].mean(axis=1)

    tails = [(1 - level) / 2, (1 + level) / 2]
    low, high = (float(q) for q in np.quantile(diffs, tails))
    if np.any(plain_means == 0):
        rel_low = rel_high = float("nan")
    else:
        rel_low, rel_high = (float(q) for q in np.quantile(diffs / plain_means, tails))
    below = int(np.count_nonzero(diffs <= 0))
    above = int(np.count_nonzero(diffs >= 0))
    p = min(1.0, 2 * (min(below, above) + 1) / (n_resamples + 1))
    return Bootstrap(float(delta.mean()), low, high, rel_low, rel_high, p, n, n_resamples)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni step-down adjusted p-values: controls the family-wise error over the metrics compared.

    Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) p_(j)), which keeps the adjusted values
    monotone in the raw ones. None (no test) stays None and does not count in m.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not present:
        return out
    raw = np.array([p_values[i] for i in present], dtype=float)
    if np.isnan(raw).any() or (raw < 0).any() or (raw > 1).any():
        raise DistillrecError(f"holm: p-values must lie in [0, 1], got {[p_values[i] for i in present]}")
    m = raw.size
    order = np.argsort(raw, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(raw[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    for i, p in zip(present, adjusted, strict=True):
        out[i] = float(p)
    return out


def combined_p(p_seeds: float | None, p_users: float | None) -> float | None:
    """Intersection–union test: the larger p, so a difference is called only if it holds across training seeds
    and across test users; the one that exists when the other is None, None when both are."""
    given = [p for p in (p_seeds, p_users) if p is not None]
    return max(given) if given else None


def _fmt_diff(x: float) -> str:
    """Four decimals, as the report's tables; a difference too small for them in scientific notation;
    rounding noise is zero."""
    if abs(x) < 1e-12:
        x = 0.0
    return f"{x:+.4f}" if x == 0 or abs(x) >= 5e-5 else f"{x:+.2e}"


def verdict(
    metric: str,
    rel: float,
    p_adjusted: float | None,
    ci: tuple[float, float],
    n_seeds: int,
    n_users: int,
    alpha: float = 0.05,
    level: float = 0.95,
) -> str:
    """One plain report sentence: 'helps' / 'hurts' when p_adjusted < alpha, else a neutral
    'no significant difference'; 'not tested' without a p-value.

    The direction comes from the relative change (from the confidence interval when that is NaN); should a
    significant result's interval lie wholly on the other side of zero, the sentence says 'inconsistent'
    rather than pick a side. ``level`` only labels the interval (the level the bootstrap was run at).
    """
    low, high = ci
    ci_sign = 1 if low > 0 else -1 if high < 0 else 0
    if p_adjusted is None:
        word = "not tested"
    elif p_adjusted < alpha:
        direction = int(np.sign(rel)) if math.isfinite(rel) and rel != 0 else ci_sign
        if direction == 0 or (ci_sign != 0 and ci_sign != direction):
            word = "inconsistent"
        else:
            word = "helps" if direction > 0 else "hurts"
    else:
        word = "no significant difference"

    change = f"{rel:+.1%}" if math.isfinite(rel) else "relative change n/a"
    text = f"{word}: {metric} {change}"
    if math.isfinite(low) and math.isfinite(high) and n_users > 0:
        users = f"{n_users:,} user" + ("" if n_users == 1 else "s")
        text += f" ({level * 100:g}% CI of the difference {_fmt_diff(low)} to {_fmt_diff(high)} over {users})"
    seeds = f"{n_seeds} seed" + ("" if n_seeds == 1 else "s")
    if p_adjusted is None:
        return f"{text}, no p-value over {seeds}"
    return f"{text}, Holm-adjusted p {format_p(p_adjusted)} over {seeds}"


def compare_configs(
    first: ConfigRuns, second: ConfigRuns, metrics: list[str], n_resamples: int = 10_000
) -> dict[str, dict[str, Any]]:
    """The statistics of an experiment's comparison for two configurations a user trained (second against
    first), per metric: relative change, paired t-test over shared seeds, per-user paired bootstrap (where
    every run kept its per-user test values and both evaluated the same users), the larger p of the two,
    and Holm over the metrics. How the two were chosen is not known here: that is the experiment's part."""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        seeds = paired_seed_test(first.values(m), second.values(m))
        a, b = first.per_user(m), second.per_user(m)
        why = a if isinstance(a, str) else b if isinstance(b, str) else None
        boot = None
        if not isinstance(a, str) and not isinstance(b, str):
            if np.array_equal(a[1], b[1]):
                # each averaged over its own seeds first: the two may have run different numbers of them
                first_users, second_users = _per_user(a[0], "first"), _per_user(b[0], "second")
                boot = paired_bootstrap(first_users, second_users, n_resamples=n_resamples, seed=0)
            else:
                why = "the two configurations were evaluated on different test users (another split?)"
        out[m] = {
            "relative_change": seeds.relative_change,
            "p_value": seeds.p,  # the paired t-test over seeds, as before the per-user figures were added
            "paired_seeds": seeds.n,
            "p_seeds": seeds.p,
            "p_users": boot.p if boot else None,
            "ci95": [boot.low, boot.high] if boot else None,
            "n_users": boot.n_users if boot else 0,
            "no_users_because": why,
            "p": combined_p(seeds.p, boot.p if boot else None),
        }
    for m, p in zip(out, holm([row["p"] for row in out.values()]), strict=True):
        out[m]["p_holm"] = p
    return out
