"""PIE stage I with ``hook_resid_mid`` transcoders: FAP against real patched runs of the model.

The patches are built here from the decoder rows and the two prompts' activations (not from the
components' stored writes), so the check is independent of how stage I stores them."""

import pytest
import torch

from cltrace.prune import (
    PruneConfig,
    ScoreContext,
    compute_components,
    fap_scores,
    get_method,
    metric_gradients,
)
from cltrace.retention import evaluate_kept
from cltrace.testing import resid_mid_transcoder, tiny_model

from .conftest import PAIR
from .test_fap import _metric_with_patch


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma2"])
def setup(request):
    adapter = tiny_model(request.param, seed=1)
    tc = resid_mid_transcoder(adapter, d_features=24, skip=True, seed=2)
    return adapter, tc


def _patch(comps, tc, o, scale):
    """``scale * (a_clean - a_corrupt) * W_dec^{l->s}[f]`` at occurrence ``o``'s position."""
    L, D = comps.adapter.n_layers, comps.adapter.d_model
    layer, pos, f = int(comps.layer[o]), int(comps.position[o]), int(comps.feature[o])
    rows = tc.decoder_rows(layer, torch.tensor([f]))[0].float()  # [n_out, D]
    patch = torch.zeros(L, 1, comps.n_pos, D)
    delta = float((comps.a_clean[o] - comps.a_corrupt[o]).detach())
    patch[layer : layer + rows.shape[0], 0, pos] = scale * delta * rows
    return patch


def _metric(comps, tc, patch, freeze_mlps=False):
    """The real clean run with the patch taken off, the skip path reading ``resid_mid``."""
    return _metric_with_patch(comps, tc, patch, freeze_mlps, kind="resid_mid")


def test_full_fap_equals_a_finite_difference_of_the_real_patched_run(setup):
    adapter, tc = setup
    comps = compute_components(adapter, tc, PAIR)
    scores = fap_scores(comps, metric_gradients(comps, tc, "full")).detach()
    checked = torch.argsort(scores.abs(), descending=True)[:5].tolist()
    assert float(scores[checked[0]].abs()) > 1e-4
    eps = 1e-2
    for o in checked:
        up = _metric(comps, tc, _patch(comps, tc, o, eps))
        down = _metric(comps, tc, _patch(comps, tc, o, -eps))
        fd = (down - up) / (2 * eps)
        assert abs(fd - float(scores[o])) <= 2e-2 * max(1e-3, abs(float(scores[o]))) + 1e-4


def test_direct_fap_is_the_exact_removal_effect_with_a_live_skip_path(setup, monkeypatch):
    adapter, tc = setup
    # without gemma2's logit soft-cap the frozen model is linear in the patch
    monkeypatch.setattr(adapter.hf_model.config, "final_logit_softcapping", None, raising=False)
    monkeypatch.setattr(adapter, "final_logit_softcap", None)
    comps = compute_components(adapter, tc, PAIR)
    scores = fap_scores(comps, metric_gradients(comps, tc, "direct")).detach()
    m0 = _metric(comps, tc, torch.zeros(adapter.n_layers, 1, 1, 1), freeze_mlps=True)
    checked = torch.argsort(scores.abs(), descending=True)[:6].tolist()
    assert float(scores[checked[0]].abs()) > 1e-4
    for o in checked:
        m1 = _metric(comps, tc, _patch(comps, tc, o, 1.0), freeze_mlps=True)
        assert abs((m0 - m1) - float(scores[o])) <= 1e-3 * abs(float(scores[o])) + 1e-6


def test_stage_one_selects_and_removing_everything_leaves_no_faithfulness(setup):
    adapter, tc = setup
    ctx = ScoreContext(compute_components(adapter, tc, PAIR), tc, PruneConfig(budgets=(5,)))
    n = ctx.n_units
    kept = get_method("fap").select(ctx, [5], 0)
    assert kept[5].numel() == min(5, n)
    kept = {("all", n, 0): torch.arange(n), ("none", 0, 0): torch.zeros(0, dtype=torch.long)}
    (full, empty), ref = evaluate_kept(ctx, kept)
    assert full.kl == 0.0 and abs(full.faithfulness - 1.0) < 1e-5
    assert abs(empty.faithfulness) < 1e-5 and abs(full.logit_diff - ref["m_clean"]) < 1e-4
