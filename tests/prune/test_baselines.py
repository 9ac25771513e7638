"""Stage-I baselines against independent computations: finite differences on hand-built frozen
models (RelP), one-at-a-time patching (FActP), an exact sequential replay (ACDC) and a dense
matrix inverse (graph influence)."""

import pytest
import torch

from cltrace.graph import attribute, logit_difference_direction
from cltrace.models.families import get_path
from cltrace.models.freeze import frozen, record_frozen
from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
from cltrace.prune.acdc import acdc_run, visiting_order
from cltrace.prune.factp import factp_effects
from cltrace.prune.graph_influence import (
    graph_influence_scores,
    node_values_to_occurrences,
)
from cltrace.prune.relp import relp_scores
from cltrace.retention import kl_last
from cltrace.testing import random_transcoder, tiny_model

from .conftest import PAIR, dense_writes


def _unit_patch(comps, tc, occurrences, scale=1.0):
    """``[layer, 1, pos, d_model]`` sum of the writes of some occurrences."""
    patch = torch.zeros(comps.adapter.n_layers, 1, comps.n_pos, comps.adapter.d_model)
    writes = dense_writes(comps, tc)
    for o in occurrences:
        patch[:, 0, int(comps.position[o])] += scale * writes[o]
    return patch


def _metric(comps, hooks, state=None):
    adapter = comps.adapter
    with torch.no_grad(), adapter.hooks(hooks):
        if state is None:
            logits = adapter(comps.tokens)
        else:
            with frozen(adapter, state):
                logits = adapter(comps.tokens)
    return float(comps.metric(logits[0, -1].double()))


# ------------------------------------------------------------------------------------ CLT-RelP
@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_relp_equals_finite_difference_of_the_rule_model(family):
    """With ReLU activations the identity rule is the plain derivative, and the half rule on a
    gated product halves the MLP's whole Jacobian. So RelP must equal the derivative of the model
    with attention and norms frozen and each MLP output ``y`` replaced by ``c·y + (1-c)·y_clean``
    (c = 1 for GPT-2, 1/2 for gated MLPs); that model is piecewise linear, so a central
    difference is exact away from kinks (eps is not tiny because the forward runs in float32)."""
    adapter = tiny_model(family)
    for layer in range(adapter.n_layers):
        mlp = get_path(adapter.block(layer), adapter.family.mlp)
        setattr(mlp, "act" if family == "gpt2" else "act_fn", torch.nn.ReLU())
    tc = random_transcoder(adapter, d_features=24)
    comps = compute_components(adapter, tc, PAIR)
    scores = relp_scores(comps)
    c = 1.0 if family == "gpt2" else 0.5
    state = record_frozen(adapter, comps.tokens)
    sites = adapter.sites("mlp_out")
    with torch.no_grad(), adapter.cache(sites) as clean:
        adapter(comps.tokens)

    def metric_with(patch):
        hooks = {
            s: (lambda t, s=s, p=patch[i]: c * t + (1 - c) * clean[s] - p)
            for i, s in enumerate(sites)
        }
        return _metric(comps, hooks, state)

    eps = 0.05
    for o in torch.argsort(scores.abs(), descending=True)[:6].tolist():
        up = metric_with(_unit_patch(comps, tc, [o], eps))
        down = metric_with(_unit_patch(comps, tc, [o], -eps))
        fd = (down - up) / (2 * eps)
        assert abs(fd - float(scores[o])) <= 5e-3 * abs(float(scores[o])) + 1e-6
    # and it is not FAP's direct-path score (the gradient really goes through the MLPs)
    fap = ScoreContext(comps, tc, PruneConfig()).fap
    assert (fap - scores).abs().max() > 1e-3 * scores.abs().max()


def test_relp_method_ranks_units_by_abs_score():
    adapter = tiny_model("llama")
    tc = random_transcoder(adapter, d_features=24)
    comps = compute_components(adapter, tc, PAIR)
    ctx = ScoreContext(comps, tc, PruneConfig(unit="feature"))
    kept = get_method("relp").select(ctx, [4], 0)[4]
    pooled = ctx.pool(relp_scores(comps)).abs()
    assert set(kept.tolist()) == set(torch.topk(pooled, 4).indices.tolist())


# --------------------------------------------------------------------------------------- FActP
@pytest.mark.parametrize("unit", ["occurrence", "feature"])
def test_factp_equals_one_at_a_time_patching(setup, unit):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    cap = 8
    ctx = ScoreContext(comps, tc, PruneConfig(unit=unit, factp_cap=cap, batch_size=3))
    top, effects = factp_effects(ctx)
    assert top.tolist() == torch.argsort(ctx.fap.abs(), descending=True)[:cap].tolist()
    sites = adapter.sites("mlp_out")
    m_clean = _metric(comps, {})
    for u, eff in zip(top.tolist(), effects.tolist(), strict=True):
        patch = _unit_patch(comps, tc, (ctx.groups == u).nonzero().squeeze(1).tolist())
        hooks = {s: (lambda t, p=patch[i]: t - p) for i, s in enumerate(sites)}
        assert abs((m_clean - _metric(comps, hooks)) - eff) <= 1e-4 * max(1.0, abs(eff))
    kept = get_method("factp").select(ctx, [3, cap, cap + 4], 0)
    by_exact = top[torch.argsort(effects.abs(), descending=True)]
    assert kept[3].tolist() == by_exact[:3].tolist()
    assert set(kept[cap].tolist()) == set(top.tolist())
    after = torch.argsort(ctx.fap.abs(), descending=True)[cap : cap + 4]
    assert kept[cap + 4][cap:].tolist() == after.tolist()


# ---------------------------------------------------------------------------------------- ACDC
def test_acdc_with_infinite_tau_removes_in_visiting_order(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig())
    n = ctx.n_units
    budgets = [5, 20, n + 10]
    trace = acdc_run(ctx, budgets, tau=float("inf"), block=7)
    order = visiting_order(ctx)
    assert trace.accepted == order[: n - 5].tolist()
    for k in budgets:
        assert sorted(trace.kept[k].tolist()) == sorted(order[n - min(k, n) :].tolist())
    # visiting order: layers descending, |FAP| ascending inside a layer
    layer, mag = ctx.comps.layer[order], ctx.fap.abs()[order]
    assert (layer[:-1] >= layer[1:]).all()
    same = layer[:-1] == layer[1:]
    assert (mag[:-1][same] <= mag[1:][same]).all()


@pytest.mark.parametrize("unit", ["occurrence", "feature"])
def test_acdc_sequential_greedy_respects_tau(setup, unit):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    ctx = ScoreContext(comps, tc, PruneConfig(unit=unit))
    n = ctx.n_units
    # tau = median single-removal KL, so some removals pass and some fail
    singles = kl_last(comps.clean_logits, comps.run_removals(ctx.unit_masks(
        [torch.tensor([u]) for u in range(n)])))  # fmt: skip
    tau = float(singles.median())
    budgets = [1, 3, n // 2]
    trace = acdc_run(ctx, budgets, tau=tau, block=1)
    assert trace.accepted and trace.rejected
    # replay exactly: every accepted removal raised the KL by < tau, every rejected one by >= tau
    removed: list[int] = []
    base = 0.0
    for u in trace.order.tolist():
        if u not in trace.increase:
            break
        kls = kl_last(comps.clean_logits, comps.run_removals(ctx.unit_masks(
            [torch.tensor(removed + [u], dtype=torch.long)])))  # fmt: skip
        inc = float(kls[0]) - base
        assert abs(inc - trace.increase[u]) <= 1e-5 + 1e-4 * abs(inc)
        if u in trace.accepted:
            assert inc < tau
            removed.append(u)
            base = float(kls[0])
        else:
            assert inc >= tau
    assert removed == trace.accepted
    for k in budgets:
        kept = trace.kept[k]
        assert kept.numel() == min(k, n) and kept.unique().numel() == kept.numel()
    # nested: a smaller budget keeps a subset of a larger one
    assert set(trace.kept[1].tolist()) <= set(trace.kept[3].tolist())
    assert set(trace.kept[3].tolist()) <= set(trace.kept[n // 2].tolist())


def test_acdc_fills_in_visiting_order_when_tau_stops_early(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig())
    trace = acdc_run(ctx, [2], tau=-1.0)  # KL never falls by 1 nat: nothing is accepted
    assert trace.accepted == []
    assert sorted(trace.kept[2].tolist()) == sorted(visiting_order(ctx)[-2:].tolist())


# ----------------------------------------------------------------------------- graph influence
def test_graph_influence_matches_dense_inverse(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    ctx = ScoreContext(comps, tc, PruneConfig())
    direction = logit_difference_direction(adapter, comps.answer, comps.wrong)
    torch.testing.assert_close(direction, logit_difference_direction(adapter, " w2", " w7"))
    s = graph_influence_scores(ctx)
    graph = attribute(adapter, tc, comps.tokens, direction=direction)
    A = graph.dense_adjacency().double().abs()
    A_hat = A / A.sum(1, keepdim=True).clamp(min=1e-300)
    A_hat[A.sum(1) == 0] = 0.0
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.index.logits()] = graph.logit_probs.double()
    eye = torch.eye(graph.n_nodes, dtype=torch.float64)
    inf = w @ (torch.linalg.inv(eye - A_hat) - eye)
    best = int(torch.argmax(s))
    idx = graph.index
    node = ((idx.feat_layer == comps.layer[best]) & (idx.feat_pos == comps.position[best])
            & (idx.feat_id == comps.feature[best])).nonzero().item()  # fmt: skip
    assert abs(float(s[best]) - float(inf[node])) <= 1e-5 * float(inf[node])
    brute = node_values_to_occurrences(comps, idx, inf[: idx.n_features].float(), tc.d_features)
    torch.testing.assert_close(s, brute, rtol=1e-4, atol=1e-7)
    # every graph feature node is a clean occurrence; corrupt-only occurrences score 0
    ones = node_values_to_occurrences(comps, idx, torch.ones(idx.n_features), tc.d_features)
    assert int(ones.sum()) == idx.n_features
    assert ((comps.a_clean != 0) == (ones == 1)).all()
    assert (s[comps.a_clean == 0] == 0).all()
    kept = get_method("graph_influence").select(ctx, [3], 0)[3]
    assert set(kept.tolist()) == set(torch.topk(s, 3).indices.tolist())
