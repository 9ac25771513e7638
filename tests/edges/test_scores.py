"""EAP and EAP-IG against finite differences and exact patching; faithfulness end points."""

from __future__ import annotations

import torch

from cltrace.edges.evaluate import evaluate_circuit, run_circuit, top_edges
from cltrace.edges.scores import eap, eap_ig_activations, eap_ig_inputs


def _metric_with(ctx, z, metric="logit_diff"):
    return run_circuit(ctx, z, metric).metric


def test_eap_is_the_first_order_effect_of_patching_one_edge(gpt2_ctx):
    ctx = gpt2_ctx
    scores = eap(ctx)
    full = _metric_with(ctx, torch.ones(ctx.graph.n_edges, dtype=torch.float64))
    eps = 1e-6
    for e in scores.abs().topk(8).indices.tolist() + [0, ctx.graph.n_edges - 1]:
        z = torch.ones(ctx.graph.n_edges, dtype=torch.float64)
        z[e] = 1 - eps  # patch the edge by a small fraction
        fd = (_metric_with(ctx, z) - full) / eps
        assert abs(fd - float(scores[e])) <= 1e-4 * max(1.0, abs(fd))


def test_eap_ig_inputs_with_one_step_is_eap(gpt2_ctx):
    assert torch.allclose(eap_ig_inputs(gpt2_ctx, steps=1), eap(gpt2_ctx), atol=1e-9)


def test_eap_ig_inputs_differs_from_eap_with_more_steps(gpt2_ctx):
    assert (eap_ig_inputs(gpt2_ctx, steps=4) - eap(gpt2_ctx)).abs().max() > 1e-4


def test_eap_ig_approaches_exact_patching_of_an_edge_set(gpt2_ctx):
    ctx = gpt2_ctx
    n = ctx.graph.n_edges
    within = torch.zeros(n, dtype=torch.bool)
    within[eap(ctx).abs().topk(5).indices] = True
    exact = _metric_with(ctx, (~within).double()) - _metric_with(ctx, torch.ones(n).double())
    coarse = float(eap_ig_activations(ctx, steps=1, within=within).sum())
    fine = float(eap_ig_activations(ctx, steps=64, within=within).sum())
    assert abs(fine - exact) <= 1e-3 * max(1.0, abs(exact))
    assert abs(fine - exact) < abs(coarse - exact)
    first_order = float(eap(ctx)[within].sum())
    assert abs(fine - exact) < abs(first_order - exact)


def test_eap_ig_with_kl_metric_runs_and_is_not_zero(gpt2_ctx):
    s = eap_ig_inputs(gpt2_ctx, metric="kl", steps=3)
    assert s.abs().max() > 1e-6


def test_faithfulness_end_points_are_exact(gpt2_ctx):
    n = gpt2_ctx.graph.n_edges
    full = evaluate_circuit(gpt2_ctx, torch.ones(n, dtype=torch.bool))
    empty = evaluate_circuit(gpt2_ctx, torch.zeros(n, dtype=torch.bool))
    assert full.faithfulness == 1.0
    assert empty.faithfulness == 0.0
    assert full.kl == 0.0 or abs(full.kl) < 1e-12
    assert empty.kl > 0


def test_top_edges_keeps_the_largest_scores(gpt2_ctx):
    scores = eap(gpt2_ctx)
    keep = top_edges(scores, 5)
    assert int(keep.sum()) == 5
    assert scores.abs()[keep].min() >= scores.abs()[~keep].max()


def test_curve_areas_of_known_curves():
    from cltrace.edges.evaluate import curve_areas

    assert curve_areas([0.0, 0.5, 1.0], [1.0, 1.0, 1.0]) == (1.0, 0.0)
    # a straight line from 0 to 1: area 1/2 under it and 1/2 between it and 1
    assert curve_areas([0.0, 1.0], [0.0, 1.0]) == (0.5, 0.5)
    # overshooting counts against minimality as much as falling short
    assert curve_areas([0.0, 1.0], [2.0, 2.0]) == (2.0, 1.0)


def test_faithfulness_curve_matches_single_circuits(gpt2_ctx):
    from cltrace.edges.evaluate import faithfulness_curve

    scores = eap(gpt2_ctx)
    n = gpt2_ctx.graph.n_edges
    curve = faithfulness_curve(gpt2_ctx, scores, budgets=(0.1, 0.5, 1.0))
    assert curve.n_edges == [round(0.1 * n), round(0.5 * n), n]
    assert curve.faithfulness[-1] == 1.0
    single = evaluate_circuit(gpt2_ctx, top_edges(scores, round(0.5 * n), prune=False))
    assert curve.faithfulness[1] == single.faithfulness
