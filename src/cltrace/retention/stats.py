"""Statistics over prompts: bootstrap confidence intervals, effective budget (docs/METHODS.md
§5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean over prompts (NaNs dropped)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    a = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def interpolate_budget(budgets: Sequence[float], kls: Sequence[float], target: float) -> float:
    """The budget at which a KL-vs-K curve reaches ``target`` (linear interpolation).

    KL falls as K grows; the curve is made monotone (running minimum) first. Returns ``inf``
    when the curve never gets that low and the smallest budget when it starts below.
    """
    k = np.asarray(budgets, dtype=float)
    y = np.minimum.accumulate(np.asarray(kls, dtype=float)[np.argsort(k)])
    k = np.sort(k)
    if target >= y[0]:
        return float(k[0])
    if target < y[-1]:
        return math.inf
    i = int(np.argmax(y <= target))
    k0, k1, y0, y1 = k[i - 1], k[i], y[i - 1], y[i]
    return float(k0 + (k1 - k0) * (y0 - target) / (y0 - y1)) if y0 != y1 else float(k1)


def effective_budget(
    budgets: Sequence[float],
    baseline_kl_per_prompt: np.ndarray,
    target_kl_per_prompt: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(K', low, high): where the baseline's mean KL curve meets the method's mean KL.

    ``baseline_kl_per_prompt`` is [prompts, budgets]; ``target_kl_per_prompt`` is [prompts]
    (the method at one budget). The CI resamples prompts jointly.
    """
    base = np.asarray(baseline_kl_per_prompt, dtype=float)
    tgt = np.asarray(target_kl_per_prompt, dtype=float)
    point = interpolate_budget(budgets, base.mean(0), tgt.mean())
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, base.shape[0], base.shape[0])
        boots.append(interpolate_budget(budgets, base[idx].mean(0), tgt[idx].mean()))
    b = np.asarray(boots)
    # a resample whose curve never gets low enough gives K' = inf; interpolating between a
    # finite value and inf is undefined, so then the CI takes the nearest resample instead
    if np.isfinite(b).all():
        low, high = np.quantile(b, [0.025, 0.975], method="linear")
    else:
        low, high = np.quantile(b, [0.025, 0.975], method="inverted_cdf")
    return point, float(low), float(high)
