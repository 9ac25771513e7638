"""Bootstrap CIs and effective budgets against direct computations."""

import math

import numpy as np

from cltrace.graph.nodes import cantor, inverse_cantor
from cltrace.retention import bootstrap_ci, effective_budget, interpolate_budget, kl_last


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 20).tolist()
    large = rng.normal(1.0, 1.0, 2000).tolist()
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi and abs(m - np.mean(small)) < 1e-12
    _, lo2, hi2 = bootstrap_ci(large)
    assert (hi2 - lo2) < (hi - lo)
    # the normal-theory half width is a good check at n = 2000
    half = 1.96 * np.std(large) / math.sqrt(len(large))
    assert abs((hi2 - lo2) / 2 - half) < 0.15 * half
    assert bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))


def test_interpolate_budget_linear_and_edges():
    ks, kls = [50, 100, 200], [1.0, 0.6, 0.2]
    assert interpolate_budget(ks, kls, 0.8) == 75.0
    assert interpolate_budget(ks, kls, 0.4) == 150.0
    assert interpolate_budget(ks, kls, 2.0) == 50.0
    assert interpolate_budget(ks, kls, 0.1) == math.inf
    # a non-monotone curve is made monotone before interpolating
    assert interpolate_budget([50, 100, 200], [1.0, 0.5, 0.7], 0.75) == 75.0


def test_effective_budget_of_identical_curves_is_the_budget():
    ks = [50, 100, 200]
    rng = np.random.default_rng(1)
    base = np.array([[1.0, 0.6, 0.2]]) + rng.normal(0, 0.01, (30, 3))
    point, lo, hi = effective_budget(ks, base, base[:, 0], n_boot=200)
    assert abs(point - 50.0) < 1e-9 and lo - 1e-9 <= point <= hi + 1e-9
    point, _, _ = effective_budget(ks, base, base[:, 1], n_boot=50)
    assert abs(point - 100.0) < 1e-6


def test_kl_and_cantor():
    p = np.array([2.0, 1.0, 0.0])
    import torch

    logits = torch.tensor(p)
    q = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    kl = kl_last(logits, q)
    pp = np.exp(p) / np.exp(p).sum()
    qq = np.exp(q[1].numpy()) / np.exp(q[1].numpy()).sum()
    assert kl[0] == 0.0
    assert abs(float(kl[1]) - float((pp * np.log(pp / qq)).sum())) < 1e-6
    for layer in range(5):
        for f in (0, 1, 17, 4095):
            assert inverse_cantor(cantor(layer, f)) == (layer, f)
    assert len({cantor(a, b) for a in range(30) for b in range(30)}) == 900
