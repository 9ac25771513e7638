"""Virtual weights against the dense decoder-encoder product on tiny transcoders."""

from __future__ import annotations

import pytest
import torch

from cltrace.global_view.virtual import (
    pair_virtual_weights,
    top_sources,
    top_targets,
    virtual_weights,
)
from cltrace.testing import random_transcoder, tiny_model
from cltrace.transcoders import load_transcoder, save_transcoder


def dense_v(tc) -> torch.Tensor:
    """``V`` over all L*F features by explicit sums over decoders (row = l_s*F + s)."""
    L, F = tc.n_layers, tc.d_features
    V = torch.zeros(L * F, L * F, dtype=torch.float64)
    tc = tc.requires_grad_(False)
    for ls in range(L):
        dec = tc.W_dec[ls].double()  # [F, n_out, D]
        for lt in range(ls + 1, L):
            if tc.cfg.cross_layer:
                write = sum(dec[:, ell - ls] for ell in range(ls, lt))
            else:
                write = dec[:, 0]
            V[ls * F : (ls + 1) * F, lt * F : (lt + 1) * F] = write @ tc.W_enc[lt].double().T
    return V


@pytest.fixture(scope="module", params=["clt", "plt"])
def tc(request):
    adapter = tiny_model("gpt2", n_layers=4)
    return random_transcoder(adapter, d_features=24, cross_layer=request.param == "clt")


def _all(tc):
    return [(ly, f) for ly in range(tc.n_layers) for f in range(tc.d_features)]


def test_dense_and_pairwise_match_the_product(tc):
    V = dense_v(tc)
    feats = _all(tc)
    got = virtual_weights(tc, feats, feats)
    torch.testing.assert_close(got.double(), V, rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    pick = torch.randint(len(feats), (200, 2), generator=g).tolist()
    pairs = [(feats[a], feats[b]) for a, b in pick]
    want = torch.tensor([float(V[a, b]) for a, b in pick])
    torch.testing.assert_close(pair_virtual_weights(tc, pairs, block=7), want, rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_top_k_lists_are_the_dense_top_k(tc):
    V = dense_v(tc)
    F, k = tc.d_features, 5
    queries = [(3, 0), (2, 5), (1, 7), (0, 3)]
    src = top_sources(tc, queries, k=k, block=10)  # blocks smaller than a layer
    tgt = top_targets(tc, queries, k=k, block=9)
    for i, (layer, f) in enumerate(queries):
        col = V[:, layer * F + f]
        n_partners = layer * F
        if n_partners == 0:
            assert (src.partner_layer[i] == -1).all()
        else:
            want = col.abs().topk(k).indices
            got = src.partner_layer[i] * F + src.partner_id[i]
            assert set(got.tolist()) == set(want.tolist())
            torch.testing.assert_close(src.weight[i].double(), col[got], rtol=1e-5, atol=1e-6)
        row = V[layer * F + f]
        if layer == tc.n_layers - 1:
            assert (tgt.partner_layer[i] == -1).all()
        else:
            want = row.abs().topk(k).indices
            got = tgt.partner_layer[i] * F + tgt.partner_id[i]
            assert set(got.tolist()) == set(want.tolist())
            torch.testing.assert_close(tgt.weight[i].double(), row[got], rtol=1e-5, atol=1e-6)


def test_lazy_decoders_give_the_same_weights(tc, tmp_path):
    save_transcoder(tc, tmp_path / "tc")
    lazy = load_transcoder(tmp_path / "tc", lazy_decoder=True)
    assert lazy.lazy is not None
    queries = [(3, 1), (2, 2)]
    a, b = top_sources(tc, queries, k=4), top_sources(lazy, queries, k=4, block=5)
    assert torch.equal(a.partner_id, b.partner_id)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)


def test_unknown_feature_is_one_sentence(tc):
    from cltrace.errors import CltraceError

    with pytest.raises(CltraceError, match="does not exist"):
        virtual_weights(tc, [(0, 999)], [(1, 0)])
