"""Constrained and iterative patching against graph edges and hand-computed forward passes."""

from __future__ import annotations

import pytest
import torch

from cltrace.graph import AttributionConfig, attribute
from cltrace.interventions import Intervention, constrained_patch, iterative_patch
from cltrace.interventions.spec import clean_state
from cltrace.testing import TINY_FAMILIES
from tests.interventions.helpers import PROMPT, active_occurrence, demeaned, make

SETUPS = [(f, "clt", False) for f in TINY_FAMILIES] + [
    ("llama", "clt", True), ("gpt2", "plt", True), ("gemma2", "plt", False),
    ("llama", "clt_resid_mid", True), ("gemma2", "clt_resid_mid", False),
]  # fmt: skip


@pytest.fixture(scope="module", params=SETUPS, ids=lambda p: "-".join(map(str, p)))
def setup(request):
    family, kind, skip = request.param
    return make(family, n_layers=3, kind=kind, skip=skip)


def test_empty_intervention_returns_clean_logits(setup):
    adapter, tc = setup
    real = adapter(adapter.to_tokens(PROMPT))[0].detach()
    L = adapter.n_layers
    for layers in [None, (0, L - 1), (0, 0), (1, L - 2), (L - 1, L - 1)]:
        r = constrained_patch(adapter, tc, PROMPT, [], layers=layers)
        torch.testing.assert_close(r.logits, real, rtol=0, atol=1e-5)
        torch.testing.assert_close(r.clean_logits, real, rtol=0, atol=0)


def test_whole_model_constrained_patch_equals_graph_edges(setup):
    """Frozen everything, no MLP recomputation: a feature's effect on a de-meaned pre-softcap
    logit is exactly linear, so it equals the graph edge (scaled by the activation change)."""
    adapter, tc = setup
    g = attribute(adapter, tc, PROMPT, config=AttributionConfig(batch_size=16))
    idx = g.index
    to_logits = g.adjacency[idx.n_features :, : idx.n_features].double()  # [k, n_features]
    strongest = to_logits.abs().max(0).values.argsort(descending=True)[:4].tolist()
    L = adapter.n_layers
    for n in strongest:
        layer, pos, f = int(idx.feat_layer[n]), int(idx.feat_pos[n]), int(idx.feat_id[n])
        act = float(g.activations[n])
        edge = to_logits[:, n]
        for iv, factor in [
            (Intervention.ablate(layer, pos, f), -1.0),
            (Intervention(layer, pos, f, value=act + 1.5), 1.5 / act),
        ]:
            r = constrained_patch(adapter, tc, PROMPT, [iv], layers=(0, L - 1))
            effect = demeaned(adapter, r.logits) - demeaned(adapter, r.clean_logits)
            effect = effect[idx.logit_token]
            err = (effect - factor * edge).abs().max() / (factor * edge).abs().max()
            assert err <= 1e-4, (n, iv, float(err))


def test_single_layer_range_is_an_mlp_output_patch(setup):
    """Range [l, l]: only W_dec^{l->l} carries the change, then the real model runs."""
    adapter, tc = setup
    layer = 1
    pos, f, act = active_occurrence(adapter, tc, layer)
    r = constrained_patch(
        adapter, tc, PROMPT, [Intervention.inhibit(layer, pos, f)], layers=(layer, layer)
    )
    delta = torch.zeros(1, len(PROMPT.split()) + 1, adapter.d_model)
    delta[0, pos] = -2 * act * tc.W_dec[layer][f, 0].detach()
    with torch.no_grad(), adapter.patch(f"mlp_out.{layer}", add=delta):
        expected = adapter(adapter.to_tokens(PROMPT))[0]
    torch.testing.assert_close(r.logits, expected, rtol=0, atol=1e-5)


def test_constrained_range_leaves_earlier_layers_and_stays_linear():
    adapter, tc = make("llama", n_layers=4)
    pos, f, act = active_occurrence(adapter, tc, 1)
    L = adapter.n_layers
    clean = constrained_patch(adapter, tc, PROMPT, []).resid
    one = constrained_patch(adapter, tc, PROMPT, [Intervention(1, pos, f, value=act + 1)])
    two = constrained_patch(adapter, tc, PROMPT, [Intervention(1, pos, f, value=act + 2)])
    torch.testing.assert_close(one.resid[0], clean[0], rtol=0, atol=0)
    assert (one.resid[1] - clean[1]).abs().max() > 1e-3
    # the whole rest of the model is frozen and nothing recomputes: twice the change, twice
    # the effect on every later residual stream and (pre-softcap) logit
    torch.testing.assert_close(two.resid - clean, 2 * (one.resid - clean), rtol=0, atol=1e-5)
    # a range that stops early hands over to the real model, which is not linear
    part1 = constrained_patch(
        adapter, tc, PROMPT, [Intervention(1, pos, f, value=act + 5)], layers=(1, 1)
    )
    part2 = constrained_patch(
        adapter, tc, PROMPT, [Intervention(1, pos, f, value=act + 10)], layers=(1, 1)
    )
    nonlinear = (part2.resid[L - 1] - clean[L - 1]) - 2 * (part1.resid[L - 1] - clean[L - 1])
    assert nonlinear.abs().max() > 1e-3


@pytest.mark.parametrize("freeze", [False, True])
def test_iterative_without_intervention_reproduces_clean_run(setup, freeze):
    adapter, tc = setup
    r = iterative_patch(adapter, tc, PROMPT, [], layers=(0, 2), freeze_attention=freeze)
    torch.testing.assert_close(r.logits, r.clean_logits, rtol=0, atol=2e-5)
    state = clean_state(adapter, tc, adapter.to_tokens(PROMPT))
    assert len(r.activations) == len(state.active)
    torch.testing.assert_close(r.activations.value, state.active.value, rtol=0, atol=1e-5)


def test_iterative_last_layer_feature_equals_constrained(setup):
    adapter, tc = setup
    L = adapter.n_layers
    pos, f, _ = active_occurrence(adapter, tc, L - 1)
    iv = [Intervention.inhibit(L - 1, pos, f)]
    it = iterative_patch(adapter, tc, PROMPT, iv, freeze_attention=True)
    con = constrained_patch(adapter, tc, PROMPT, iv)
    torch.testing.assert_close(it.logits, con.logits, rtol=0, atol=2e-5)
    torch.testing.assert_close(it.resid[: L - 1], con.resid[: L - 1], rtol=0, atol=1e-5)
    assert (it.logits - it.clean_logits).abs().max() > 1e-3
    live = iterative_patch(adapter, tc, PROMPT, iv)
    con_live_norm = constrained_patch(adapter, tc, PROMPT, iv, freeze_final_norm=False)
    torch.testing.assert_close(live.logits, con_live_norm.logits, rtol=0, atol=2e-5)


def test_iterative_matches_hand_computation():
    """Two layers, a layer-0 intervention, live attention: layer 1's features re-encode the
    perturbed MLP input and its output is their reconstruction plus the clean error."""
    adapter, tc = make("llama", n_layers=2, skip=True)
    tokens = adapter.to_tokens(PROMPT)
    state = clean_state(adapter, tc, tokens)
    pos, f, act = active_occurrence(adapter, tc, 0)
    r = iterative_patch(adapter, tc, PROMPT, [Intervention.inhibit(0, pos, f)])
    with torch.no_grad():
        a0 = tc.encode(0, state.mlp_in[0])
        a0[pos, f] = -act
        out0 = tc.decode([a0], 0) + tc.skip(0, state.mlp_in[0]) + state.errors[0]
        with adapter.patch("mlp_out.0", replace=out0[None]), adapter.cache(["mlp_in.1"]) as c:
            adapter(tokens)
        x1 = c["mlp_in.1"][0]
        a1 = tc.encode(1, x1)
        out1 = tc.decode([a0, a1], 1) + tc.skip(1, x1) + state.errors[1]
        with adapter.patch("mlp_out.0", replace=out0[None]):
            with adapter.patch("mlp_out.1", replace=out1[None]):
                expected = adapter(tokens)[0]
    torch.testing.assert_close(r.logits, expected, rtol=0, atol=1e-5)
    live = r.activations.to_coo().to_dense()
    torch.testing.assert_close(live[1], a1, rtol=0, atol=1e-6)
    assert (a1 - tc.encode(1, state.mlp_in[1])).abs().max() > 1e-4  # layer-1 features responded


def test_iterative_differs_from_constrained_for_early_features():
    adapter, tc = make("qwen2", n_layers=3)
    pos, f, _ = active_occurrence(adapter, tc, 0)
    iv = [Intervention.inhibit(0, pos, f)]
    it = iterative_patch(adapter, tc, PROMPT, iv, freeze_attention=True)
    con = constrained_patch(adapter, tc, PROMPT, iv)
    torch.testing.assert_close(it.resid[0], con.resid[0], rtol=0, atol=1e-5)
    assert (it.logits - con.logits).abs().max() > 1e-4
