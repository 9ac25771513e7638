"""Which natural texts get rated (FADE's percentile bins) or shown to a rater (detection)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int

FADE_BINS: tuple[float, ...] = (0.0, 50.0, 75.0, 95.0, 100.0)
"""Percentile edges of FADE's rating bins: [0, 50), [50, 75), [75, 95), [95, 100]."""


def bin_sample(
    scores: Float[np.ndarray, " n"],
    n_samples: int = 500,
    top_share: float = 0.1,
    bins: Sequence[float] = FADE_BINS,
    seed: int = 0,
    exclude: Sequence[int] = (),
) -> Int[np.ndarray, " k"]:
    """Indices of texts to rate, following FADE (docs/METHODS.md §7).

    Texts are ranked by activation and split into percentile bins; ``floor(n_samples *
    (1 - top_share) / n_bins)`` are drawn uniformly from each bin (the whole bin if smaller);
    the rest, up to ``n_samples``, are the highest-activation texts not drawn yet ("top
    sampling"). With 500 samples and FADE's four bins that is 112 per bin plus 52 from the top.
    ``exclude`` removes texts already used (for the second, sparse-concept round).
    """
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(len(scores)), np.asarray(exclude, dtype=int))
    if pool.size <= n_samples:
        return pool
    ranked = pool[np.argsort(scores[pool], kind="mergesort")]
    n_bins = len(bins) - 1
    per_bin = int(n_samples * (1 - top_share) / n_bins)
    edges = np.floor(np.asarray(bins) / 100 * ranked.size).astype(int)
    chosen: list[int] = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = ranked[lo:hi]
        take = min(per_bin, members.size)
        chosen.extend(rng.choice(members, size=take, replace=False).tolist())
    taken = set(chosen)
    for i in ranked[::-1]:
        if len(chosen) >= n_samples:
            break
        if int(i) not in taken:
            chosen.append(int(i))
            taken.add(int(i))
    return np.asarray(chosen, dtype=int)


def top_and_random(
    scores: Float[np.ndarray, " n"], n_top: int = 10, n_random: int = 10, seed: int = 42
) -> Int[np.ndarray, " k"]:
    """PIE's rating sample: the ``n_top`` highest-activation texts plus ``n_random`` others."""
    order = np.argsort(-scores, kind="mergesort")
    top = order[:n_top]
    rest = order[n_top:]
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=min(n_random, rest.size), replace=False) if rest.size else []
    return np.concatenate([top, np.asarray(extra, dtype=int)]).astype(int)


def detection_sample(
    scores: Float[np.ndarray, " n"], n_each: int = 10, seed: int = 0
) -> tuple[Int[np.ndarray, " a"], Int[np.ndarray, " b"]]:
    """``(activating, non_activating)`` text indices for detection and fuzzing.

    Activating examples are spread over activation quantiles of the texts where the feature
    fires (not only the top), so a description must cover its weaker cases too; non-activating
    ones are drawn uniformly from texts where it never fires.
    """
    rng = np.random.default_rng(seed)
    fires = np.flatnonzero(scores != 0)
    silent = np.flatnonzero(scores == 0)
    if fires.size > n_each:
        ranked = fires[np.argsort(np.abs(scores[fires]), kind="mergesort")]
        strata = np.array_split(ranked, n_each)
        fires = np.asarray([rng.choice(s) for s in strata if s.size], dtype=int)
    if silent.size > n_each:
        silent = rng.choice(silent, size=n_each, replace=False)
    return fires.astype(int), np.sort(silent).astype(int)
