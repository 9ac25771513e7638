"""Learned occurrence masks against independent computations: the clean run, PIE's own removal
passes (themselves checked against the whole hooked model), central finite differences in
float64, and a brute-force search over every kept set of a tiny case."""

import itertools

import pytest
import torch

from cltrace.edges.pruning import sample_hard_concrete
from cltrace.pie import DEFAULT_METHODS
from cltrace.prune import PruneConfig, ScoreContext, compute_components, get_method
from cltrace.prune.components import kl_last
from cltrace.prune.learned import (
    GatedForward,
    LearnedMaskConfig,
    candidate_units,
    lagrangian,
    train_mask,
)
from cltrace.testing import random_transcoder, tiny_model

from .conftest import PAIR


def _ctx(adapter, tc, unit="occurrence"):
    comps = compute_components(adapter, tc, PAIR)
    return ScoreContext(comps, tc, PruneConfig(unit=unit))


def test_all_gates_open_is_the_clean_run(setup):
    ctx = _ctx(*setup)
    fwd = GatedForward(ctx, torch.arange(ctx.n_units))  # every unit gated: nothing removed
    with torch.no_grad():
        logits = fwd.logits(torch.ones(2, ctx.n_units))
        kl = fwd.kl(torch.ones(1, ctx.n_units))
    assert torch.allclose(logits, ctx.comps.clean_logits.expand(2, -1), atol=1e-5)
    assert float(kl.abs()) < 1e-6


@pytest.mark.parametrize("unit", ["occurrence", "feature"])
def test_binary_gates_equal_run_removals(setup, unit):
    ctx = _ctx(*setup, unit=unit)
    cand = candidate_units(ctx, 4, 3)  # 12 gated units; the rest always removed
    fwd = GatedForward(ctx, cand)
    g = torch.Generator().manual_seed(1)
    gates = (torch.rand(6, cand.numel(), generator=g) < 0.5).float()
    gates[0], gates[1] = 1.0, 0.0  # only the non-candidates removed; everything removed
    removed = torch.ones(gates.shape[0], ctx.n_units, dtype=torch.bool)
    removed[:, cand] = gates == 0
    want = ctx.comps.run_removals(removed[:, ctx.groups], batch_size=4)
    with torch.no_grad():
        got = fwd.logits(gates).float()
    assert (got - want).abs().max() <= 1e-5
    # the rows differ from each other, so the comparison is not one run against itself
    assert (want[0] - want[1]).abs().max() > 1e-3


def _double_ctx(family="gpt2"):
    """A context whose masked passes run wholly in float64 (GPT-2's norms stay in the input
    dtype; Llama-style RMS norms compute in float32 whatever the input)."""
    adapter = tiny_model(family)
    tc = random_transcoder(adapter, d_features=24, skip=family == "gpt2")
    ctx = _ctx(adapter, tc)
    adapter.hf_model.double()  # the masked passes run in float64 from here on
    return ctx


def test_kl_gradient_equals_finite_difference():
    ctx = _double_ctx()
    cand = candidate_units(ctx, 3, 4)
    fwd = GatedForward(ctx, cand)
    gates = torch.linspace(0.2, 0.8, cand.numel(), dtype=torch.float64)[None]
    gates.requires_grad_(True)
    (grad,) = torch.autograd.grad(fwd.kl(gates).sum(), [gates])
    eps = 1e-5
    with torch.no_grad():
        for i in range(cand.numel()):
            up, down = gates.detach().clone(), gates.detach().clone()
            up[0, i] += eps
            down[0, i] -= eps
            fd = float(fwd.kl(up) - fwd.kl(down)) / (2 * eps)
            assert abs(float(grad[0, i]) - fd) <= 1e-6 + 1e-5 * abs(fd), (i, float(grad[0, i]), fd)
    assert grad.abs().max() > 1e-3  # the gates matter


def test_training_objective_gradient_equals_finite_difference():
    """The whole per-step loss (sampled gates, KL, Lagrangian) as a function of log-alpha."""
    ctx = _double_ctx()
    cand = candidate_units(ctx, 3, 4)
    fwd = GatedForward(ctx, cand)
    c = cand.numel()
    lambdas = torch.tensor([0.7, 2.0], dtype=torch.float64)
    state = torch.Generator().manual_seed(5).get_state()

    def loss(log_alpha):
        gen = torch.Generator()
        gen.set_state(state)  # the same noise every evaluation: a smooth function of log-alpha
        z = sample_hard_concrete(log_alpha.expand(2, c), gen)
        return fwd.kl(z).mean() + lagrangian(log_alpha, 4.0, lambdas)

    la = torch.linspace(-0.5, 0.5, c, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(la), [la])
    eps = 1e-6
    with torch.no_grad():
        for i in range(c):
            up, down = la.detach().clone(), la.detach().clone()
            up[i] += eps
            down[i] -= eps
            fd = float(loss(up) - loss(down)) / (2 * eps)
            assert abs(float(grad[i]) - fd) <= 1e-6 + 1e-5 * abs(fd), (i, float(grad[i]), fd)
    assert grad.abs().max() > 1e-3


def test_training_reaches_the_budget_and_is_deterministic(setup):
    ctx = _ctx(*setup)
    cfg = LearnedMaskConfig(steps=300, candidate_factor=4)
    k = 3
    a = train_mask(ctx, k, cfg)
    b = train_mask(ctx, k, cfg)
    assert torch.equal(a.log_alpha, b.log_alpha) and torch.equal(a.kept, b.kept)
    assert a.kept.numel() == k and a.kept.unique().numel() == k
    assert set(a.kept.tolist()) <= set(a.candidates.tolist())
    assert a.candidates.numel() == 4 * k
    assert abs(a.expected_open - k) < 0.5  # the Lagrangian drove the expected count to K
    # the kept units are the top K by trained log-alpha
    top = a.candidates[torch.argsort(a.log_alpha, descending=True)[:k]]
    assert set(top.tolist()) == set(a.kept.tolist())


@pytest.mark.parametrize(
    ("family", "d_features", "k"),
    [("llama", 4, 2), ("llama", 6, 3), ("llama", 8, 2), ("gpt2", 8, 3)],
)
def test_training_finds_a_near_optimal_set_by_brute_force(family, d_features, k):
    """Every K-subset of the candidates is evaluated with real removal passes; the learned set
    must be among the best 5% (at worst second) and no worse than FAP's top K.

    Position-pooled features of a narrow transcoder with larger writes (scale 3), so that which
    units are kept matters: with the default tiny transcoder ~170 always-removed occurrences
    dominate the KL and every subset lies within a few percent of the others."""
    adapter = tiny_model(family)
    tc = random_transcoder(adapter, d_features=d_features, skip=family == "gpt2", scale=3.0)
    ctx = _ctx(adapter, tc, unit="feature")
    factor = 4
    cand = candidate_units(ctx, k, factor)
    subsets = [torch.tensor(s) for s in itertools.combinations(cand.tolist(), k)]
    removed = torch.ones(len(subsets), ctx.n_units, dtype=torch.bool)
    for i, s in enumerate(subsets):
        removed[i, s] = False
    kls = kl_last(ctx.comps.clean_logits, ctx.comps.run_removals(removed[:, ctx.groups]))
    assert kls.max() > 1.2 * kls.min()  # the choice matters
    ranked = [frozenset(subsets[int(i)].tolist()) for i in torch.argsort(kls)]
    got = train_mask(ctx, k, LearnedMaskConfig(candidate_factor=factor))
    rank = ranked.index(frozenset(got.kept.tolist()))
    fap_rank = ranked.index(frozenset(cand[:k].tolist()))
    assert rank <= max(1, len(ranked) // 20), (rank, len(ranked), kls.sort().values[:5])
    assert rank <= fap_rank


def test_registered_but_not_a_default_method(setup):
    ctx = _ctx(*setup)
    assert "learned_mask" not in DEFAULT_METHODS
    kept = get_method("learned-mask").select(ctx, [2, 5], 0)
    assert torch.equal(kept[5], train_mask(ctx, 5).kept)
    assert kept[2].numel() == 2


def test_budget_at_or_above_the_units_keeps_everything(setup):
    ctx = _ctx(*setup)
    got = train_mask(ctx, ctx.n_units + 3)
    assert sorted(got.kept.tolist()) == list(range(ctx.n_units))
    assert got.log_alpha.numel() == 0  # nothing to train


def test_bad_settings_name_the_field():
    with pytest.raises(Exception, match="steps"):
        LearnedMaskConfig(steps=0)
    with pytest.raises(Exception, match="warmup"):
        LearnedMaskConfig(warmup=0.0)
