"""Patched rows resumed from a recorded patched run equal the whole hooked model."""

import pytest
import torch

from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
from cltrace.prune import methods as prune_methods
from cltrace.prune.resume import RowStates
from cltrace.testing import random_transcoder, tiny_model
from tests.prune.conftest import PAIR, dense_writes
from tests.prune.test_components import _full_run


def _singles(comps, writes, per_layer=2, seed=0):
    """Occurrences that write something, a few per layer and at several positions."""
    g = torch.Generator().manual_seed(seed)
    writes = writes.flatten(1).abs().amax(1) > 1e-3
    picked = []
    for layer in comps.layer.unique().tolist():
        idx = ((comps.layer == layer) & writes).nonzero().squeeze(1)
        picked += idx[torch.randperm(idx.numel(), generator=g)[:per_layer]].tolist()
    masks = torch.zeros(len(picked), comps.n, dtype=torch.bool)
    masks[torch.arange(len(picked)), torch.tensor(picked)] = True
    return masks


@pytest.mark.parametrize(("family", "window"), [("gpt2", None), ("llama", None), ("qwen3", None),
                                               ("gemma2", 4), ("gemma2", 64)])  # fmt: skip
def test_rows_resumed_from_recorded_runs_equal_the_whole_hooked_model(family, window):
    adapter = tiny_model(family, **({"sliding_window": window} if window else {}))
    tc = random_transcoder(adapter, d_features=24, skip=family == "gpt2")
    comps = compute_components(adapter, tc, PAIR)
    writes = dense_writes(comps, tc)
    singles = _singles(comps, writes)
    logits, states = comps.record_removals(singles, batch_size=3)
    assert torch.allclose(logits, comps.run_removals(singles), atol=1e-5)
    r = singles.shape[0]
    pairs = [(i, j) for i in range(r) for j in range(i + 1, r)]
    masks = torch.stack([singles[i] | singles[j] for i, j in pairs])
    bases = torch.tensor([i if k % 2 else j for k, (i, j) in enumerate(pairs)])
    got = comps.run_removals(masks, batch_size=4, bases=bases, states=states)
    for k, mask in enumerate(masks):
        want = _full_run(comps, writes, mask)
        assert torch.allclose(got[k], want, rtol=1e-5, atol=1e-5), (k, (got[k] - want).abs().max())
    # a base that removes everything the row removes: the base's own logits
    assert torch.equal(comps.run_removals(singles, bases=torch.arange(r), states=states), logits)
    # recorded in turn from a base: rows of three resume from the pairs
    _, pair_states = comps.record_removals(masks, bases=bases, states=states)
    triples = masks | singles[torch.arange(len(pairs)) % r]
    got = comps.run_removals(triples, bases=torch.arange(len(pairs)), states=pair_states)
    for k in range(0, len(pairs), 3):
        assert torch.allclose(got[k], _full_run(comps, writes, triples[k]), rtol=1e-5, atol=1e-5), k
    # the recorded states matter: the clean run's in their place gives other logits
    clean = comps.record_removals(torch.zeros_like(singles), batch_size=3)[1]
    fake = RowStates(states.masks, states.logits, clean.resid, clean.keys_values)
    wrong = comps.run_removals(masks, batch_size=4, bases=bases, states=fake)
    assert (wrong - comps.run_removals(masks)).abs().max() > 1e-4  # 10x the tolerance above


def test_recorded_residual_stream_is_the_patched_run():
    adapter = tiny_model("llama")
    tc = random_transcoder(adapter, d_features=24)
    comps = compute_components(adapter, tc, PAIR)
    writes = dense_writes(comps, tc)
    singles = _singles(comps, writes, per_layer=1)
    _, states = comps.record_removals(singles)
    L, D = adapter.n_layers, adapter.d_model
    for i, mask in enumerate(singles):
        patch = torch.zeros(comps.n_pos, L, D)
        for o in mask.nonzero().squeeze(1).tolist():
            patch[comps.position[o]] += writes[o]
        hooks = {f"mlp_out.{s}": (lambda t, s=s, p=patch: t - p[:, s]) for s in range(L)}
        sites = adapter.sites("resid_post")
        with torch.no_grad(), adapter.hooks(hooks), adapter.cache(sites) as c:
            adapter(comps.tokens)
        for s in range(L - 1):  # the last block computes the last position only
            assert torch.allclose(states.resid[i, s], c[f"resid_post.{s}"][0], atol=1e-5), (i, s)
        assert torch.allclose(states.resid[i, -1, -1], c[f"resid_post.{L - 1}"][0, -1], atol=1e-5)


@pytest.mark.parametrize("method", ["fap_synergy", "acdc"])
def test_methods_resuming_rows_select_what_clean_starts_select(setup, method, monkeypatch):
    """FAP-Synergy's pairs and ACDC's rows resume from recorded runs; without that (clean
    starts, as before) they keep the same units."""
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    cfg = PruneConfig(boundary_percent=100.0, partners=4, partners_per_candidate=3)
    budgets = [2, 4, 8]
    resumed = get_method(method).select(ScoreContext(comps, tc, cfg), budgets, 0)
    monkeypatch.setattr(prune_methods, "STATE_BYTES", 0)  # synergy: nothing recorded
    plain = comps.run_removals
    monkeypatch.setattr(comps, "record_removals",  # ACDC: the removed set is not kept
                        lambda masks, *a, **k: (plain(masks), None))
    again = get_method(method).select(ScoreContext(comps, tc, cfg), budgets, 0)
    for k in budgets:
        assert sorted(resumed[k].tolist()) == sorted(again[k].tolist()), k
