"""FAP scores against finite differences and exact linear effects; removal patch invariants."""

import torch

from cltrace.models.freeze import frozen, record_frozen
from cltrace.prune import (
    PruneConfig,
    ScoreContext,
    compute_components,
    fap_scores,
    get_method,
    metric_gradients,
)
from cltrace.retention import evaluate_kept

from .conftest import PAIR, dense_writes


def _metric_with_patch(comps, tc, patch_by_layer, freeze_mlps=False, kind="mlp_in"):
    """Metric of the clean run with ``y_s <- y_s - patch[s]``.

    With ``freeze_mlps`` this is the model the direct FAP differentiates: attention patterns and
    norm scales frozen, every MLP held at its clean output except for a transcoder skip path,
    which stays live (``y_s = y_clean - skip(x_clean) + skip(x) - patch``) and reads the site
    ``kind`` (``resid_mid`` for transcoders reading the residual stream before the norm).
    """
    adapter = comps.adapter
    L = adapter.n_layers
    with (
        torch.no_grad(),
        adapter.cache(adapter.sites("mlp_out") + adapter.sites(kind)) as clean,
    ):
        adapter(comps.tokens)
    state = record_frozen(adapter, comps.tokens)  # before any patch is active
    ins = {}
    hooks = {}
    for s in range(L):
        if freeze_mlps:
            hooks[f"{kind}.{s}"] = lambda t, s=s: ins.__setitem__(s, t)
            hooks[f"mlp_out.{s}"] = lambda t, s=s: (
                clean[f"mlp_out.{s}"]
                - tc.skip(s, clean[f"{kind}.{s}"]).to(t.dtype)
                + tc.skip(s, ins[s]).to(t.dtype)
                - patch_by_layer[s]
            )
        else:
            hooks[f"mlp_out.{s}"] = lambda t, s=s: t - patch_by_layer[s]
    with torch.no_grad(), adapter.hooks(hooks):
        if freeze_mlps:
            with frozen(adapter, state):
                logits = adapter(comps.tokens)
        else:
            logits = adapter(comps.tokens)
    return float(comps.metric(logits[0, -1].double()))


def _patch_of(comps, tc, o, scale):
    patch = torch.zeros(comps.adapter.n_layers, 1, comps.n_pos, comps.adapter.d_model)
    patch[:, 0, int(comps.position[o])] = scale * dense_writes(comps, tc)[o]
    return patch


def test_full_gradient_fap_equals_finite_difference(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    scores = fap_scores(comps, metric_gradients(comps, tc, "full"))
    eps = 1e-2
    for o in torch.argsort(scores.abs(), descending=True)[:5].tolist():
        up = _metric_with_patch(comps, tc, _patch_of(comps, tc, o, eps))
        down = _metric_with_patch(comps, tc, _patch_of(comps, tc, o, -eps))
        fd = (down - up) / (2 * eps)
        assert abs(fd - float(scores[o])) <= 2e-2 * max(1e-3, abs(float(scores[o]))) + 1e-4


def test_direct_fap_is_the_exact_effect_in_the_frozen_linear_model(setup, monkeypatch):
    adapter, tc = setup
    # soft-capped logits are not linear in the patch; without the cap (gemma2) the frozen model
    # is, so direct FAP must equal the removal effect exactly, a live skip path included
    monkeypatch.setattr(adapter.hf_model.config, "final_logit_softcapping", None, raising=False)
    monkeypatch.setattr(adapter, "final_logit_softcap", None)
    comps = compute_components(adapter, tc, PAIR)
    scores = fap_scores(comps, metric_gradients(comps, tc, "direct"))
    m0 = _metric_with_patch(comps, tc, torch.zeros(adapter.n_layers, 1, 1, 1), freeze_mlps=True)
    checked = torch.argsort(scores.abs(), descending=True)[:6].tolist()
    assert float(scores[checked[0]].abs()) > 1e-4  # the check is not trivially 0 == 0
    for o in checked:
        m1 = _metric_with_patch(comps, tc, _patch_of(comps, tc, o, 1.0), freeze_mlps=True)
        # relative: gemma2's effects are ~0.007, where a 1e-4 floor would hide a bent cap
        assert abs((m0 - m1) - float(scores[o])) <= 1e-3 * abs(float(scores[o])) + 1e-6


def test_direct_fap_is_the_derivative_of_the_frozen_model(setup, monkeypatch):
    # direct FAP is the gradient of the frozen-attention, frozen-MLP (live skip) model, so a
    # central difference must match it, through gemma2's logit soft-cap too; the tiny model's
    # logits are far below its cap of 30, so a cap of 0.5 makes the tanh bend for real
    adapter, tc = setup
    if adapter.final_logit_softcap:
        monkeypatch.setattr(adapter.hf_model.config, "final_logit_softcapping", 0.5)
        monkeypatch.setattr(adapter, "final_logit_softcap", 0.5)
    comps = compute_components(adapter, tc, PAIR)
    scores = fap_scores(comps, metric_gradients(comps, tc, "direct"))
    eps = 1e-2
    checked = torch.argsort(scores.abs(), descending=True)[:5].tolist()
    assert float(scores[checked[0]].abs()) > 1e-4
    for o in checked:
        up = _metric_with_patch(comps, tc, _patch_of(comps, tc, o, eps), freeze_mlps=True)
        down = _metric_with_patch(comps, tc, _patch_of(comps, tc, o, -eps), freeze_mlps=True)
        fd = (down - up) / (2 * eps)
        assert abs(fd - float(scores[o])) <= 1e-2 * max(1e-3, abs(float(scores[o]))) + 1e-5


def test_removing_nothing_gives_kl_zero_and_everything_gives_faithfulness_zero(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig(budgets=(5,)))
    n = ctx.n_units
    kept = {("all", n, 0): torch.arange(n), ("none", 0, 0): torch.zeros(0, dtype=torch.long)}
    rows, ref = evaluate_kept(ctx, kept)
    full, empty = rows
    assert full.kl == 0.0 and not full.pred_changed
    assert abs(full.faithfulness - 1.0) < 1e-5 and abs(full.completeness) < 1e-5
    assert abs(empty.faithfulness) < 1e-5 and abs(empty.completeness - 1.0) < 1e-5
    assert abs(full.logit_diff - ref["m_clean"]) < 1e-4


def test_zero_policy_removing_all_subtracts_every_decoded_contribution(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR, policy="zero_features")
    from cltrace.replacement import build_replacement

    state = build_replacement(adapter, tc, comps.tokens)
    patch = comps.patch_for(torch.ones(1, comps.n, dtype=torch.bool))[0]  # [pos, L, D]
    torch.testing.assert_close(patch.permute(1, 0, 2), state.feature_out, atol=1e-5, rtol=1e-5)


def test_synergy_with_lambda_zero_or_no_band_is_exactly_fap(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    budgets = [5, 10, 20]
    fap = get_method("fap")
    for cfg in (PruneConfig(lambda_syn=0.0), PruneConfig(boundary_percent=0.0)):
        ctx = ScoreContext(comps, tc, cfg)
        syn = get_method("fap_synergy").select(ctx, budgets, 0)
        ref = fap.select(ctx, budgets, 0)
        for k in budgets:
            assert set(syn[k].tolist()) == set(ref[k].tolist())


def test_synergy_keeps_core_and_budget(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig(lambda_syn=3.0))
    kept = get_method("fap_synergy").select(ctx, [20], 0)[20]
    assert kept.numel() == min(20, ctx.n_units) and kept.unique().numel() == kept.numel()
    h = round(25 / 100 * 20 * 0.5)
    core = torch.argsort(ctx.fap.abs(), descending=True, stable=True)[: 20 - h]
    assert set(core.tolist()) <= set(kept.tolist())


def test_signal_reserves_both_signs_and_random_is_seeded(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig(signal_gamma=0.2))
    s = ctx.fap
    kept = get_method("fap_signal").select(ctx, [10], 0)[10]
    assert kept.numel() == 10
    assert int(torch.argmax(s)) in kept.tolist() and int(torch.argmin(s)) in kept.tolist()
    r = get_method("random")
    a, b, c = (r.select(ctx, [10], seed)[10] for seed in (0, 0, 1))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_feature_unit_pools_positions(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    occ = ScoreContext(comps, tc, PruneConfig())
    feat = ScoreContext(comps, tc, PruneConfig(unit="feature"))
    assert feat.n_units < occ.n_units
    torch.testing.assert_close(feat.fap.sum(), occ.fap.sum(), rtol=1e-5, atol=1e-5)
    masks = feat.unit_masks([torch.tensor([0])])
    keys = comps.layer * tc.d_features + comps.feature
    assert len(set(keys[masks[0]].tolist())) == 1


def test_patch_for_matches_a_loop_for_sparse_and_dense_masks(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    writes = dense_writes(comps, tc)
    g = torch.Generator().manual_seed(3)
    sparse = torch.zeros(5, comps.n, dtype=torch.bool)
    sparse[torch.arange(5), torch.randint(0, comps.n, (5,), generator=g)] = True
    dense = torch.rand(3, comps.n, generator=g) > 0.5
    for masks in (sparse, dense):
        got = comps.patch_for(masks)
        want = torch.zeros_like(got)
        for b in range(masks.shape[0]):
            for o in masks[b].nonzero().squeeze(1).tolist():
                want[b, int(comps.position[o])] += writes[o]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
