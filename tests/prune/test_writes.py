"""Delta writes built on demand against the dense table they replace, on the bundled model: FAP
scores bit for bit, removal patches, lazy decoders, and the memory held."""

import pytest
import torch

from cltrace.models import load_model
from cltrace.paths import BUNDLED_CLT_DIR, BUNDLED_PLT_DIR
from cltrace.prune import compute_components, fap_scores, metric_gradients
from cltrace.prune import writes as writes_module
from cltrace.tasks import get_task
from cltrace.transcoders import load_transcoder

from .conftest import dense_writes


@pytest.fixture(scope="module")
def bundled():
    adapter = load_model(None)
    pairs = get_task("ioi").make_pairs(adapter, 2, seed=0)
    return adapter, pairs


def _dense_fap(comps, tc, grads):
    """The formula cltrace used before: one dense table, one elementwise product, one sum."""
    g = grads[:, comps.position].permute(1, 0, 2)
    return (dense_writes(comps, tc) * g).sum((1, 2))


@pytest.mark.parametrize("which", ["clt", "plt"])
def test_fap_scores_equal_the_dense_table_bit_for_bit(bundled, which, monkeypatch):
    adapter, pairs = bundled
    tc = load_transcoder(BUNDLED_CLT_DIR if which == "clt" else BUNDLED_PLT_DIR, model=adapter)
    for pair in pairs:
        comps = compute_components(adapter, tc, pair)
        grads = metric_gradients(comps, tc, "direct")
        want = _dense_fap(comps, tc, grads)
        assert want.abs().max() > 1e-3  # real scores, not zeros against zeros
        assert torch.equal(fap_scores(comps, grads), want)
        # blocks of 7 occurrences give the same bits: each sum runs over the same terms
        monkeypatch.setattr(writes_module, "BLOCK_BYTES", 7 * 4 * tc.n_layers * tc.d_model)
        assert torch.equal(fap_scores(comps, grads), want)
        monkeypatch.undo()


def test_patches_equal_the_dense_table_and_the_cache_changes_nothing(bundled, monkeypatch):
    adapter, pairs = bundled
    tc = load_transcoder(BUNDLED_CLT_DIR, model=adapter)
    comps = compute_components(adapter, tc, pairs[0])
    table = dense_writes(comps, tc)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, comps.n, generator=g) < 0.3
    want = torch.zeros(3, comps.n_pos, tc.n_layers, tc.d_model)
    for b in range(3):
        for o in masks[b].nonzero().squeeze(1).tolist():
            want[b, int(comps.position[o])] += table[o]
    got = comps.patch_for(masks)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert comps.deltas.nbytes > 0
    # with no room for cached groups every group is rebuilt, to the same bits
    monkeypatch.setattr(writes_module, "GROUP_CACHE_BYTES", 0)
    fresh = compute_components(adapter, tc, pairs[0])
    assert torch.equal(fresh.patch_for(masks), got)
    assert fresh.deltas._group_bytes == 0 and not fresh.deltas._groups


def test_writes_hold_less_than_half_the_dense_table(bundled):
    adapter, pairs = bundled
    tc = load_transcoder(BUNDLED_CLT_DIR, model=adapter)
    comps = compute_components(adapter, tc, pairs[0])
    L, D = tc.n_layers, tc.d_model
    assert comps.deltas.nbytes < comps.n * L * D * 4 / 2
    comps.patch_for(torch.rand(4, comps.n) < 0.5)  # fills the group cache
    # the cached groups hold each occurrence's targets from its own layer on, no zeros
    assert comps.deltas._group_bytes == 4 * D * int((L - comps.layer).sum())


def test_lazy_decoders_give_the_same_stage_one(bundled):
    adapter, pairs = bundled
    eager = load_transcoder(BUNDLED_CLT_DIR, model=adapter)
    lazy = load_transcoder(BUNDLED_CLT_DIR, model=adapter, lazy_decoder=True)
    assert lazy.W_dec is None and lazy.lazy.rows_read == 0
    active = set()
    for pair in pairs:
        a = compute_components(adapter, eager, pair)
        b = compute_components(adapter, lazy, pair)
        active |= {(int(la), int(f)) for la, f in zip(b.layer, b.feature, strict=True)}
        assert torch.equal(a.feature, b.feature) and torch.equal(a.a_clean, b.a_clean)
        fa = fap_scores(a, metric_gradients(a, eager, "direct"))
        assert torch.equal(fap_scores(b, metric_gradients(b, lazy, "direct")), fa)
        masks = torch.rand(5, a.n, generator=torch.Generator().manual_seed(1)) < 0.2
        masks[0] = False
        masks[0, int(fa.abs().argmax())] = True  # a single removal (rows added one by one)
        assert torch.equal(a.run_removals(masks), b.run_removals(masks))
    # only rows of active features were read, each once (the row cache serves repeats)
    assert lazy.lazy.rows_read == len(active) < eager.n_features()
    assert lazy.lazy.cached_bytes <= lazy.lazy.cache_bytes
