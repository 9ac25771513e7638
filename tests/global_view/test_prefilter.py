"""Pre-filtering: local strengths by brute force, precision at k on a handmade table, and
restricted attribution rows equal to the full graph's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cltrace.global_view.era import PairTable
from cltrace.global_view.prefilter import (
    compare_rankings,
    features_of,
    local_strengths,
    prefiltered_features,
    restricted_rows,
    spearman,
)
from cltrace.graph import attribute
from cltrace.testing import random_transcoder, tiny_model

PROMPTS = ["w3 w8 w1 w3 w8 w9", "w5 w2 w7 w5 w2"]


@pytest.fixture(scope="module")
def setup():
    adapter = tiny_model("gpt2", n_layers=3)
    tc = random_transcoder(adapter, d_features=16).requires_grad_(False)
    graphs = [attribute(adapter, tc, p) for p in PROMPTS]
    return adapter, tc, graphs


def test_local_strengths_are_mean_summed_abs_edges(setup):
    _, tc, graphs = setup
    got = local_strengths(graphs, tc.d_features)
    want: dict = {}
    for g in graphs:
        idx = g.index
        for r in range(idx.n_features):
            for c in range(idx.n_features):
                w = float(g.adjacency[r, c])
                if w != 0:
                    key = ((int(idx.feat_layer[c]), int(idx.feat_id[c])),
                           (int(idx.feat_layer[r]), int(idx.feat_id[r])))  # fmt: skip
                    want[key] = want.get(key, 0.0) + abs(w) / len(graphs)
    assert set(got) == set(want) and len(want) > 20
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6)
        assert k[0][0] < k[1][0]  # edges only run from earlier to later layers


def test_precision_at_k_and_spearman_on_a_handmade_table():
    feats = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    # pairs (src idx, tgt idx): global TWERA magnitudes
    src = np.array([0, 1, 0, 2, 3])
    tgt = np.array([2, 3, 4, 4, 4])
    tw = np.array([5.0, -4.0, 3.0, 2.0, 1.0])
    table = PairTable(feats, src, tgt, tw.copy(), tw.copy(), tw, np.ones(5))
    f = feats
    local = {(f[0], f[2]): 9.0, (f[2], f[4]): 8.0, (f[1], f[3]): 1.0, (f[1], f[2]): 0.5}
    cmp = compare_rankings(table, local, feats, ks=[1, 2, 3])
    # top-1 global (0->2) is top-1 local; top-2 global {0->2, 1->3} vs local {0->2, 2->4}
    assert cmp.precision["twera"] == {1: 1.0, 2: 0.5, 3: 2 / 3}
    assert cmp.n_universe == 2 * 2 + 2 * 1 + 2 * 1 and cmp.n_local == 4
    assert cmp.chance[2] == pytest.approx(2 / 8)
    union = sorted(set(local) | set(table.keys()))
    g = np.array([dict(zip(table.keys(), np.abs(tw), strict=True)).get(p, 0.0) for p in union])
    loc = np.array([local.get(p, 0.0) for p in union])

    def ranks(x):  # average ranks by counting: #smaller + (#equal + 1) / 2
        return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])

    assert cmp.spearman["twera"] == pytest.approx(np.corrcoef(ranks(g), ranks(loc))[0, 1])
    assert prefiltered_features(table, 2) == {f[0], f[2], f[1], f[3]}


def test_spearman_handles_ties_and_constants():
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 2, 3])) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_restricted_rows_are_the_full_graph_rows(setup):
    adapter, tc, graphs = setup
    g = graphs[0]
    feats = features_of([g])
    keep = set(feats[::3])
    rows, chosen = restricted_rows(adapter, tc, PROMPTS[0], keep, batch_size=3)
    idx = g.index
    want = [i for i in range(idx.n_features)
            if (int(idx.feat_layer[i]), int(idx.feat_id[i])) in keep]  # fmt: skip
    assert chosen.tolist() == want and 0 < len(want) < idx.n_features
    torch.testing.assert_close(rows, g.adjacency[want], rtol=1e-5, atol=1e-6)
