"""Faithfulness curves: the averages are those of the single perturbations, recomputed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cltrace.global_view.mechanistic import (
    faithfulness_curves,
    render_html,
    strongest_occurrences,
)
from cltrace.interventions import Intervention, mechanistic_faithfulness
from cltrace.testing import random_transcoder, tiny_model

PROMPTS = ["w3 w8 w1 w3 w8 w9", "w5 w2 w7 w5 w2"]


def test_curves_average_the_single_perturbations():
    adapter = tiny_model("llama", n_layers=3)
    tc = random_transcoder(adapter, d_features=12).requires_grad_(False)
    curves = faithfulness_curves(adapter, tc, PROMPTS, per_layer=2)
    assert curves.ks == [1, 2]
    want = {m: {k: [] for k in (1, 2)} for m in ("iterative", "constrained")}
    n = 0
    for p in PROMPTS:
        occ = strongest_occurrences(adapter, tc, p, 2)
        assert [o[0] for o in occ] == [0, 0, 1, 1]
        for layer, pos, f in occ:
            n += 1
            for mode, rec in (("iterative", True), ("constrained", False)):
                r = mechanistic_faithfulness(
                    adapter, tc, p, [Intervention(layer, pos, f, scale=-1.0)], rec
                )
                for k in range(1, 3 - layer):
                    want[mode][k].append(float(r.cosine[k]))
    assert curves.n_perturbations == n == 8
    for mode, by_k in want.items():
        for i, k in enumerate((1, 2)):
            assert curves.cosine[mode].mean[i] == pytest.approx(np.mean(by_k[k]), rel=1e-6)
            assert curves.cosine[mode].n[i] == len(by_k[k])
            assert curves.cosine[mode].low[i] <= curves.cosine[mode].mean[i]
    assert all(math.isfinite(x) for x in curves.nmse["iterative"].mean)
    page = render_html(curves)
    assert page.count("<svg") == 2 and "NMSE" in page
