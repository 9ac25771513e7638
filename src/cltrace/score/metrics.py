"""Separation statistics of FADE (docs/METHODS.md §7) in plain numpy.

Every function returns a :class:`Score`: a value, or NaN with the reason the value is undefined
(no positives, no negatives, constant scores), so that one degenerate feature never stops a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

NAN = math.nan


@dataclass(frozen=True)
class Score:
    """One metric value, or NaN and why."""

    value: float
    """The metric; NaN when it is undefined for this feature."""
    reason: str = ""
    """Empty when ``value`` is defined; otherwise one sentence on why it is not."""

    @property
    def ok(self) -> bool:
        return not math.isnan(self.value)


def _arr(x: Sequence[float] | np.ndarray) -> Float[np.ndarray, " n"]:
    return np.asarray(x, dtype=float).reshape(-1)


def auroc(neg: Sequence[float], pos: Sequence[float]) -> Score:
    """P(a_pos > a_neg) + 0.5 P(a_pos = a_neg) over all (pos, neg) pairs (Mann-Whitney U).

    Ties count one half, as in the usual ROC area, so two identical distributions give 0.5.
    """
    n, p = _arr(neg), _arr(pos)
    if p.size == 0 or n.size == 0:
        which = "positive" if p.size == 0 else "negative"
        return Score(NAN, f"no {which} samples")
    both = np.concatenate([n, p])
    if np.all(both == both[0]):
        return Score(NAN, "activations are constant over all samples")
    ranks = _midranks(both)
    u = ranks[n.size :].sum() - p.size * (p.size + 1) / 2
    return Score(float(u / (p.size * n.size)))


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(x.size, dtype=float)
    # group boundaries of equal values
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], x.size]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2
    return ranks


def strict_gini(neg: Sequence[float], pos: Sequence[float]) -> Score:
    """``|2 P(a_pos > a_neg) - 1|`` with a strict ``>``: ties count as failures, not halves (the
    statistic PIE's stage III uses). Two identical distributions give ``|2 P(>) - 1|``, not 0."""
    n, p = _arr(neg), _arr(pos)
    if p.size == 0 or n.size == 0:
        which = "positive" if p.size == 0 else "negative"
        return Score(NAN, f"no {which} samples")
    greater = (p[:, None] > n[None, :]).mean()
    return Score(float(abs(2 * greater - 1)))


def gini(neg: Sequence[float], pos: Sequence[float]) -> Score:
    """FADE's separation ``|2 AUROC - 1|`` in [0, 1] (0: no separation, 1: perfect)."""
    a = auroc(neg, pos)
    return Score(abs(2 * a.value - 1), a.reason) if a.ok else a


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> Score:
    """Step-wise average precision ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds.

    Samples with equal scores enter together (one threshold), so the result does not depend on
    the order of ties.
    """
    s, y = _arr(scores), np.asarray(labels, dtype=bool).reshape(-1)
    n_pos = int(y.sum())
    if n_pos == 0:
        return Score(NAN, "no positive samples")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_group]
    seen = (np.arange(s.size) + 1)[last_of_group]
    precision = tp / seen
    recall = tp / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return Score(float((d_recall * precision).sum()))


def separation(neg: Sequence[float], pos: Sequence[float]) -> tuple[Score, Score]:
    """FADE's pair ``(G, AP)`` for negatives ``neg`` and positives ``pos``.

    AP is taken in the direction that separates: when AUROC < 0.5 the scores are negated first.
    """
    a = auroc(neg, pos)
    if not a.ok:
        return a, a
    sign = -1.0 if a.value < 0.5 else 1.0
    scores = sign * np.concatenate([_arr(neg), _arr(pos)])
    labels = np.r_[np.zeros(len(_arr(neg)), bool), np.ones(len(_arr(pos)), bool)]
    return Score(abs(2 * a.value - 1)), average_precision(scores, labels)


def balanced_accuracy(predicted: Sequence[bool], truth: Sequence[bool]) -> Score:
    """Mean of the true-positive and true-negative rates (chance = 0.5)."""
    p = np.asarray(predicted, dtype=bool).reshape(-1)
    t = np.asarray(truth, dtype=bool).reshape(-1)
    if t.all() or not t.any():
        which = "negative" if t.all() else "positive"
        return Score(NAN, f"no {which} examples were judged")
    tpr = (p & t).sum() / t.sum()
    tnr = (~p & ~t).sum() / (~t).sum()
    return Score(float((tpr + tnr) / 2))
