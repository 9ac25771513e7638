"""Co-activation statistics, ERA and TWERA against brute-force expectations over a tiny corpus."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.global_view.coactivation import CoactConfig, coactivation_stats
from cltrace.global_view.era import pair_table
from cltrace.testing import random_transcoder, tiny_model


@pytest.fixture(scope="module")
def setup():
    adapter = tiny_model("llama", n_layers=3)
    tc = random_transcoder(adapter, d_features=12).requires_grad_(False)
    rng = random.Random(0)
    docs = [" ".join(f"w{rng.randrange(60)}" for _ in range(rng.randrange(3, 12)))
            for _ in range(23)]  # fmt: skip
    feats = [(ly, f) for ly in range(3) for f in range(12)]
    return adapter, tc, docs, feats


def brute_force(adapter, tc, docs, feats, max_tokens):
    """Every token's activation vector, by the full encoder, then the expectations."""
    rows = []
    for d in docs:
        toks = torch.tensor([adapter.encode(d)[:max_tokens]])
        sites = adapter.sites("mlp_in")
        with torch.no_grad(), adapter.cache(sites) as c:
            adapter(toks)
        acts = torch.stack([tc.encode(ly, c[f"mlp_in.{ly}"][0]) for ly in range(3)])  # [L,p,F]
        for p in range(1, toks.shape[1]):
            rows.append([float(acts[ly, p, f]) for ly, f in feats])
    return np.array(rows, dtype=np.float64)  # [tokens, K]


def test_statistics_equal_brute_force_expectations(setup):
    adapter, tc, docs, feats = setup
    cfg = CoactConfig(n_docs=100, max_tokens=8, batch_size=4, chunk_docs=5)
    stats = coactivation_stats(adapter, tc, feats, cfg, docs=docs)
    A = brute_force(adapter, tc, docs, feats, 8)
    assert stats.n_tokens == A.shape[0]
    np.testing.assert_allclose(stats.sum, A.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.count, (A > 0).sum(0))
    np.testing.assert_allclose(stats.dense("prod"), A.T @ A, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.dense("ind"), A.T @ (A > 0), rtol=1e-5, atol=1e-6)

    table = pair_table(tc, stats)
    V = torch.zeros(len(feats), len(feats), dtype=torch.float64)
    for i, (ls, s) in enumerate(feats):
        for j, (lt, t) in enumerate(feats):
            if lt > ls:
                w = sum(tc.W_dec[ls][s, ell - ls].double() for ell in range(ls, lt))
                V[i, j] = w @ tc.W_enc[lt][t].double()
    n = A.shape[0]
    seen = set()
    for k in range(len(table)):
        i, j = int(table.src[k]), int(table.tgt[k])
        seen.add((i, j))
        era = np.mean((A[:, j] > 0) * A[:, i]) * float(V[i, j])
        twera = np.mean(A[:, j] * A[:, i]) / np.mean(A[:, j]) * float(V[i, j])
        np.testing.assert_allclose(table.v[k], float(V[i, j]), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(table.era[k], era, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(table.twera[k], twera, rtol=1e-5, atol=1e-8)
    # every pair left out either never co-activates (interference filter) or is not s -> t later
    for i, (ls, _) in enumerate(feats):
        for j, (lt, _) in enumerate(feats):
            if (i, j) not in seen:
                assert lt <= ls or not np.any((A[:, i] > 0) & (A[:, j] > 0))
    assert len(table) > 10 and n > 50
    top = table.top("twera", 3)
    assert abs(top[0]["twera"]) >= abs(top[1]["twera"]) >= abs(top[2]["twera"])


def test_interrupted_pass_resumes_to_the_same_result(setup, tmp_path):
    adapter, tc, docs, feats = setup
    cfg = CoactConfig(n_docs=100, max_tokens=8, batch_size=3, chunk_docs=4)
    state = tmp_path / "coact.npz"
    one = coactivation_stats(adapter, tc, feats, cfg, docs=docs)
    part = coactivation_stats(adapter, tc, feats, cfg, docs=docs, state_path=state,
                              stop_after_chunks=2)  # fmt: skip
    assert part.n_docs_done == 8
    resumed = coactivation_stats(adapter, tc, feats, cfg, docs=docs, state_path=state)
    assert resumed.n_docs_done == len(docs) and resumed.n_tokens == one.n_tokens
    np.testing.assert_allclose(resumed.dense("prod"), one.dense("prod"), rtol=1e-12)
    np.testing.assert_allclose(resumed.dense("ind"), one.dense("ind"), rtol=1e-12)
    with pytest.raises(CltraceError, match="other features or options"):
        coactivation_stats(adapter, tc, feats[:5], cfg, docs=docs, state_path=state)
