"""Attribution edges against the affine identity and against real constrained interventions."""

from __future__ import annotations

import pytest
import torch

from cltrace.graph import AttributionConfig, NodeKind, attribute, logit_difference_direction
from cltrace.models.freeze import frozen
from cltrace.replacement import build_replacement
from cltrace.testing import TINY_FAMILIES, random_transcoder, tiny_model

PROMPT = "w3 w8 w1 w3 w8 w9"
SETUPS = [(f, "clt", False) for f in TINY_FAMILIES] + [
    ("llama", "clt", True), ("gpt2", "plt", True), ("gemma2", "plt", False),
]  # fmt: skip


@pytest.fixture(scope="module", params=SETUPS, ids=lambda p: "-".join(map(str, p)))
def setup(request):
    family, kind, skip = request.param
    adapter = tiny_model(family)
    tc = random_transcoder(adapter, d_features=24, cross_layer=kind == "clt", skip=skip)
    graph = attribute(adapter, tc, PROMPT, config=AttributionConfig(batch_size=16))
    return adapter, tc, graph


def test_replacement_reproduces_logits(setup):
    adapter, tc, _ = setup
    check_replacement_reproduces_logits(adapter, tc)


def check_replacement_reproduces_logits(adapter, tc) -> None:
    """The replacement's MLP outputs (features, skip, errors, decoder bias) are the real ones,
    and the frozen model fed them gives the replacement's logits."""
    tokens = adapter.to_tokens(PROMPT)
    state = build_replacement(adapter, tc, tokens)
    rebuilt = state.feature_out + state.skip_out + state.errors
    rebuilt = rebuilt + torch.stack([b for b in tc.b_dec])[:, None]
    torch.testing.assert_close(rebuilt, state.mlp_out)
    hooks = {f"mlp_out.{layer}": (lambda t, v=rebuilt[layer]: v[None].expand_as(t))
             for layer in range(adapter.n_layers)}  # fmt: skip
    with torch.no_grad(), frozen(adapter, state.frozen), adapter.hooks(hooks):
        local = adapter(tokens)[0]
    assert (local - state.logits).abs().max() <= 1e-5


def test_incoming_edges_sum_to_target_value(setup):
    _, _, g = setup
    assert g.index.n_features > 0 and g.index.n_logits > 0
    total = g.adjacency.double().sum(1) + g.bias_values.double()
    scale = g.target_values.abs().max().double()
    assert ((total - g.target_values.double()).abs() / scale).max() <= 1e-4


def _intervened_targets(adapter, tc, graph, state, remove: dict):
    """Target values in the frozen local model with some sources removed (no gradients).

    ``remove`` = {"features": node list, "errors": [(layer, pos)], "tokens": [pos]}.
    """
    idx = graph.index
    L = adapter.n_layers
    delta_out = torch.zeros_like(state.mlp_out)
    for node in remove.get("features", []):
        layer, pos, f = int(idx.feat_layer[node]), int(idx.feat_pos[node]), int(idx.feat_id[node])
        rows = tc.decoder_rows(layer, torch.tensor([f]))[0].float()
        for k in range(rows.shape[0]):
            delta_out[layer + k, pos] += graph.activations[node] * rows[k]
    for layer, pos in remove.get("errors", []):
        delta_out[layer, pos] += state.errors[layer, pos]
    delta_emb = torch.zeros_like(state.resid0)
    for pos in remove.get("tokens", []):
        delta_emb[pos] = state.resid0[pos]
    cache = {}
    hooks = {"resid_pre.0": lambda t: t - delta_emb[None]}
    for layer in range(L):

        def store(t, _l=layer):
            cache[_l] = t

        def write(t, _l=layer):
            live_skip = tc.skip(_l, cache[_l]) - state.skip_out[_l][None]
            return state.mlp_out[_l][None] - delta_out[_l][None] + live_skip

        hooks[f"{state.input_kind}.{layer}"], hooks[f"mlp_out.{layer}"] = store, write
    final = {}
    h = adapter.final_norm().register_forward_hook(lambda m, a, o: final.__setitem__("x", o))
    try:
        with torch.no_grad(), frozen(adapter, state.frozen), adapter.hooks(hooks):
            adapter(state.tokens)
    finally:
        h.remove()
    feats = []
    for n in range(idx.n_features):
        layer, pos, f = int(idx.feat_layer[n]), int(idx.feat_pos[n]), int(idx.feat_id[n])
        feats.append(tc.pre_activation(layer, cache[layer][0, pos])[f])
    feats = torch.stack(feats)
    W_U = adapter.W_U.detach()
    vecs = (W_U[:, idx.logit_token] - W_U.mean(1, keepdim=True)).T
    return torch.cat([feats, final["x"][0, -1] @ vecs.T])


def test_edges_match_constrained_interventions(setup):
    adapter, tc, g = setup
    state = build_replacement(adapter, tc, adapter.to_tokens(PROMPT))
    base = _intervened_targets(adapter, tc, g, state, {})
    torch.testing.assert_close(base, g.target_values, rtol=1e-4, atol=1e-5)
    idx = g.index
    gen = torch.Generator().manual_seed(0)
    columns = [
        ("errors", (layer, pos), idx.error_node(layer, pos))
        for layer in range(idx.n_layers)
        for pos in range(idx.n_pos)
    ]
    columns += [("tokens", pos, idx.token_node(pos)) for pos in range(idx.n_pos)]
    sample = torch.randperm(idx.n_features, generator=gen)[:12].tolist()
    columns += [("features", n, n) for n in sample]
    scale = g.target_values.abs().max()
    for kind, what, col in columns:
        after = _intervened_targets(adapter, tc, g, state, {kind: [what]})
        effect = base - after
        assert ((effect - g.adjacency[:, col]).abs() / scale).max() <= 1e-4, (kind, what)


def test_node_index_is_consistent(setup):
    adapter, _, g = setup
    idx = g.index
    assert idx.kind(0) == NodeKind.FEATURE
    assert idx.kind(idx.error_node(1, 2)) == NodeKind.ERROR
    assert idx.layer_pos(idx.error_node(1, 2)) == (1, 2)
    assert idx.kind(idx.n_nodes - 1) == NodeKind.LOGIT
    ids = [idx.node_id(n, g.tokens) for n in range(idx.n_nodes)]
    assert len(set(ids)) == len(ids)  # no id collisions between kinds
    assert ids[idx.error_node(1, 2)] == "1_-1_2"
    assert g.adjacency.shape == (idx.n_targets, idx.n_sources)
    # BOS-position features are never nodes
    assert (idx.feat_pos > 0).all()
    # features only receive edges from strictly lower layers
    dense = g.dense_adjacency()
    for n in range(idx.n_features):
        srcs = dense[n, : idx.n_features].nonzero().squeeze(1)
        assert (idx.feat_layer[srcs] < idx.feat_layer[n]).all()


def test_custom_direction_and_explicit_targets():
    adapter = tiny_model("llama")
    tc = random_transcoder(adapter, d_features=16)
    d = logit_difference_direction(adapter, " w3", " w8")
    g = attribute(adapter, tc, PROMPT, direction=d)
    assert g.index.n_logits == 1 and int(g.index.logit_token[0]) == -1
    logits = adapter(adapter.to_tokens(PROMPT))[0, -1]
    diff = logits[adapter.single_token_id(" w3")] - logits[adapter.single_token_id(" w8")]
    torch.testing.assert_close(g.target_values[-1], diff.detach(), rtol=1e-4, atol=1e-5)
    g2 = attribute(adapter, tc, PROMPT, targets=[" w3", " w9"])
    assert g2.index.logit_token.tolist() == [7, 13]


def test_max_feature_nodes_keeps_the_most_influential_and_exact_rows():
    adapter = tiny_model("gpt2")
    tc = random_transcoder(adapter, d_features=32)
    full = attribute(adapter, tc, PROMPT)
    small = attribute(
        adapter, tc, PROMPT, config=AttributionConfig(max_feature_nodes=10, batch_size=4)
    )
    assert small.index.n_features == 10 < full.index.n_features
    # each kept feature row equals the full graph's row on the kept columns
    key = {
        (int(a), int(b), int(c)): n
        for n, (a, b, c) in enumerate(
            zip(full.index.feat_layer, full.index.feat_pos, full.index.feat_id, strict=True)
        )
    }
    rows = [
        key[(int(a), int(b), int(c))]
        for a, b, c in zip(
            small.index.feat_layer, small.index.feat_pos, small.index.feat_id, strict=True
        )
    ]
    cols = rows + list(range(full.index.error_start, full.index.n_sources))
    torch.testing.assert_close(small.adjacency[:10], full.adjacency[rows][:, cols])


def test_selection_influence_equals_the_graph_influence_of_the_visited_rows():
    from cltrace.graph.influence import normalized_adjacency, propagated_influence
    from cltrace.graph.selection import partial_influence

    adapter = tiny_model("gpt2", n_layers=4)  # paths through 3 features: second-order terms
    tc = random_transcoder(adapter, d_features=32)
    g = attribute(adapter, tc, PROMPT)
    n = g.index.n_features
    A = g.adjacency
    gen = torch.Generator().manual_seed(0)
    for visited in (torch.arange(n), torch.randperm(n, generator=gen)[: n // 3]):
        norms = A[visited].abs().sum(1).clamp(min=1e-10)
        fast = partial_influence(A[n:], g.logit_probs, A[visited], norms, visited, n)
        # independent: the graph's Neumann series with the unvisited feature rows removed
        kept = A.clone()
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[visited] = False
        kept[:n][dropped] = 0.0
        slow = propagated_influence(normalized_adjacency(kept), g.index, g.logit_probs)[:n]
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-7)
