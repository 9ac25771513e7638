"""Attribution with ``hook_resid_mid`` transcoders: features read the residual stream before the
MLP's norm, so their input is linear in it with no frozen norm scale in between."""

from __future__ import annotations

import pytest
import torch

from cltrace.graph import AttributionConfig, attribute
from cltrace.replacement import build_replacement
from cltrace.testing import resid_mid_transcoder, tiny_model

from .test_attribute import _intervened_targets, check_replacement_reproduces_logits

PROMPT = "w3 w8 w1 w3 w8 w9"
SETUPS = [("gpt2", True), ("llama", False), ("gemma2", True), ("qwen3", False)]


@pytest.fixture(scope="module", params=SETUPS, ids=lambda p: f"{p[0]}-skip{p[1]}")
def setup(request):
    family, skip = request.param
    adapter = tiny_model(family, seed=1)
    tc = resid_mid_transcoder(adapter, d_features=24, skip=skip, seed=2)
    graph = attribute(adapter, tc, PROMPT, config=AttributionConfig(batch_size=16))
    return adapter, tc, graph


def test_edges_and_bias_sum_to_the_target_values(setup):
    _, _, g = setup
    assert g.index.n_features > 0
    total = g.adjacency.double().sum(1) + g.bias_values.double()
    scale = g.target_values.abs().max().double()
    assert ((total - g.target_values.double()).abs() / scale).max() <= 1e-4


def test_replacement_reproduces_the_logits(setup):
    adapter, tc, _ = setup
    check_replacement_reproduces_logits(adapter, tc)


def test_edges_equal_interventions_in_the_frozen_model(setup):
    # each removal reruns the frozen model (patterns and norm scales fixed, the resid_mid the
    # features read recomputed live): an independent computation of every edge into a target
    adapter, tc, g = setup
    state = build_replacement(adapter, tc, adapter.to_tokens(PROMPT))
    base = _intervened_targets(adapter, tc, g, state, {})
    torch.testing.assert_close(base, g.target_values, rtol=1e-4, atol=1e-5)
    idx = g.index
    columns = [("errors", (0, pos), idx.error_node(0, pos)) for pos in range(idx.n_pos)]
    columns += [("tokens", pos, idx.token_node(pos)) for pos in range(idx.n_pos)]
    columns += [("features", n, n) for n in range(min(idx.n_features, 16))]
    scale = g.target_values.abs().max()
    feature_rows = g.adjacency[: idx.n_features, : idx.n_features]
    assert feature_rows.abs().max() > 1e-3 * scale  # feature-to-feature edges exist
    for kind, what, col in columns:
        effect = base - _intervened_targets(adapter, tc, g, state, {kind: [what]})
        assert ((effect - g.adjacency[:, col]).abs() / scale).max() <= 1e-4, (kind, what)
