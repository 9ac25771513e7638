"""Edge Pruning and HAP on a tiny model."""

from __future__ import annotations

import pytest
import torch

from cltrace.edges.evaluate import evaluate_circuit, top_edges
from cltrace.edges.pruning import (
    PruneConfig,
    deterministic_mask,
    edge_prune,
    hap,
    prob_open,
    sample_hard_concrete,
)
from cltrace.edges.scores import eap
from cltrace.errors import UsageError


def test_prob_open_matches_sampled_frequency():
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    samples = torch.stack([sample_hard_concrete(log_alpha, gen) for _ in range(20000)])
    assert torch.allclose((samples > 0).double().mean(0), prob_open(log_alpha), atol=0.015)
    assert samples.min() >= 0 and samples.max() <= 1
    assert deterministic_mask(torch.tensor([10.0])) == 1.0
    assert deterministic_mask(torch.tensor([-10.0])) == 0.0


def test_edge_pruning_is_seeded(gpt2_ctx):
    cfg = PruneConfig(sparsity=0.6, steps=20, seed=4)
    a, b = edge_prune(gpt2_ctx, cfg), edge_prune(gpt2_ctx, cfg)
    assert torch.equal(a.log_alpha, b.log_alpha)
    assert torch.equal(a.keep, b.keep)


def test_edge_pruning_reaches_its_target_and_beats_random_circuits(gpt2_ctx):
    ctx = gpt2_ctx
    n = ctx.graph.n_edges
    res = edge_prune(ctx, PruneConfig(sparsity=0.7, steps=200, seed=0))
    assert abs(res.learned_sparsity - 0.7) < 0.08
    # discretised to the learned sparsity (before dangling edges went)
    n_keep = round((1 - res.learned_sparsity) * n)
    top = torch.zeros(n, dtype=torch.bool)
    top[res.log_alpha.topk(n_keep).indices] = True
    assert torch.equal(res.keep, ctx.graph.prune_dangling(top))
    kl = evaluate_circuit(ctx, res.keep).kl
    gen = torch.Generator().manual_seed(0)
    random_kls = []
    for _ in range(6):
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[: int(res.keep.sum())]] = True
        random_kls.append(evaluate_circuit(ctx, keep).kl)
    assert kl < min(random_kls)


def test_hap_prunes_only_inside_the_attribution_subgraph(gpt2_ctx):
    ctx = gpt2_ctx
    n = ctx.graph.n_edges
    res, scores = hap(ctx, PruneConfig(sparsity=0.8, steps=60), fraction=0.3)
    sub = top_edges(eap(ctx), round(0.3 * n))
    assert torch.equal(scores, eap(ctx))
    assert not (res.keep & ~sub).any()
    assert torch.isinf(res.log_alpha[~sub]).all()
    # sparsity is counted over the whole graph: it can never fall below 1 - fraction
    assert res.learned_sparsity >= 1 - 0.3 - 1e-9


def test_hap_refuses_a_target_its_subgraph_cannot_reach(gpt2_ctx):
    with pytest.raises(UsageError, match="raise --sparsity or --fraction"):
        hap(gpt2_ctx, PruneConfig(sparsity=0.5, steps=1), fraction=0.1)
