"""Pruning: thresholds of 1 keep everything, hand-made graphs lose the nodes worked out by hand,
and the masks of a tiny model's graph keep the influence and structure the method promises."""

from __future__ import annotations

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.graph import AttributionConfig, attribute
from cltrace.graph.influence import node_influence
from cltrace.graph.prune import GraphPruneConfig, cover_threshold, cumulative_influence, prune_graph
from cltrace.testing import random_transcoder, tiny_model
from tests.graph.handmade import E0, E1, F0, F1, K0, K1, T, handmade_graph

ALL = [F0, F1, E0, E1, T, K0, K1]


@pytest.fixture(scope="module")
def tiny_graph():
    adapter = tiny_model("qwen2")
    tc = random_transcoder(adapter, d_features=32)
    return attribute(adapter, tc, "w3 w8 w1 w3 w8 w9 w2", config=AttributionConfig(batch_size=32))


def kept(result) -> set[int]:
    return set(result.node_mask.nonzero().flatten().tolist())


def test_thresholds_of_one_keep_everything(tiny_graph):
    result = prune_graph(tiny_graph, GraphPruneConfig(node_threshold=1.0, edge_threshold=1.0))
    assert result.node_mask.all()
    assert torch.equal(result.edge_mask, tiny_graph.adjacency != 0)
    hand = prune_graph(handmade_graph(), GraphPruneConfig(1.0, 1.0))
    assert kept(hand) == set(ALL)


def test_node_threshold_drops_the_least_influential_nodes():
    # influences (by path enumeration in test_influence): t .5325, f1 .39, f0 .315, e1 .195,
    # e0 .1725 of 1.605; cumulative shares .332, .575, .771, .893, 1.0
    g = handmade_graph()
    assert kept(prune_graph(g, GraphPruneConfig(0.5, 1.0))) == {T, F1, K0, K1}
    assert kept(prune_graph(g, GraphPruneConfig(0.75, 1.0))) == {T, F1, F0, K0, K1}
    assert kept(prune_graph(g, GraphPruneConfig(0.8, 1.0))) == {T, F1, F0, E1, K0, K1}
    # logits (influence 0) and tokens stay even at threshold 0
    assert kept(prune_graph(g, GraphPruneConfig(0.0, 1.0))) == {T, K0, K1}


def test_feature_whose_edges_all_fall_below_the_edge_threshold_is_dropped():
    # edge scores: f1<-t .32, k0<-t .267, k0<-f1 .267, f0<-t .18, k1<-t .133, k1<-f1 .133,
    # f1<-f0 .08, k0<-f0 .067, k1<-f0 .033; at 0.85 the cut falls at .133, so every outgoing
    # edge of f0 goes and f0 with it (although its input edge f0<-t survives); e0, e1 have none
    edges = {
        F0: {T: 1.0},
        F1: {T: 1.0, F0: 0.25},
        K0: {T: 1.0, F1: 1.0, F0: 0.25},
        K1: {T: 1.0, F1: 1.0, F0: 0.25},
    }
    result = prune_graph(
        handmade_graph(edges), GraphPruneConfig(node_threshold=1.0, edge_threshold=0.85)
    )
    assert kept(result) == {F1, T, K0, K1}
    assert result.n_edges == 5  # f1<-t, k0<-t, k0<-f1, k1<-t, k1<-f1


def test_clean_up_iterates_until_stable():
    # edge scores: k0<-t .5, k1<-t .25, f1<-f0 .15, f0<-t .15, k0<-f1 .1, k1<-f1 .05; at 0.8
    # f1 keeps its input but loses both outputs; once f1 is gone f0 has no output either
    edges = {F0: {T: 1.0}, F1: {F0: 1.0}, K0: {T: 1.0, F1: 0.2}, K1: {T: 1.0, F1: 0.2}}
    result = prune_graph(
        handmade_graph(edges), GraphPruneConfig(node_threshold=1.0, edge_threshold=0.8)
    )
    assert kept(result) == {T, K0, K1}
    assert result.n_edges == 2
    assert result.influence_mask.all()  # both features passed the node threshold


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.95])
def test_kept_nodes_cover_the_node_threshold(tiny_graph, threshold):
    result = prune_graph(tiny_graph, GraphPruneConfig(node_threshold=threshold))
    inf = node_influence(tiny_graph)
    torch.testing.assert_close(result.influence, inf)
    chosen = result.influence_mask
    assert inf[chosen].sum() / inf.sum() >= threshold - 1e-6
    # the kept set is a top set: nothing dropped is more influential than anything kept
    idx = tiny_graph.index
    ranked = chosen.clone()
    ranked[idx.token_start :] = False
    if ranked.any() and (~chosen).any():
        assert inf[~chosen].max() <= inf[ranked].min()
    assert result.node_mask.sum() <= chosen.sum()


def test_pruned_graph_structure(tiny_graph):
    idx = tiny_graph.index
    result = prune_graph(tiny_graph)
    nodes, edges = result.node_mask, result.edge_mask
    assert 0 < result.n_nodes < idx.n_nodes and 0 < result.n_edges
    assert nodes[idx.token_start :].all()
    assert (tiny_graph.adjacency[edges] != 0).all()
    targets = idx.target_nodes()
    assert nodes[targets[edges.any(1)]].all() and nodes[: idx.n_sources][edges.any(0)].all()
    has_out = edges.any(0)
    for n in nodes.nonzero().flatten().tolist():
        if n < idx.token_start:
            assert has_out[n], n  # features and errors feed something
        if n < idx.n_features:
            assert edges[n].any(), n  # features are fed by something


def test_cover_threshold_and_cumulative():
    scores = torch.tensor([1.0, 5.0, 0.0, 3.0, 1.0])
    assert cover_threshold(scores, 0.8) == 3.0  # 5 + 3 = 0.8 of 10
    assert cover_threshold(scores, 0.81) == 1.0
    assert cover_threshold(scores, 1.0) == float("-inf")
    cum = cumulative_influence(scores)
    assert cum.tolist() == pytest.approx([0.9, 0.5, 1.0, 0.8, 1.0])


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_threshold_outside_unit_interval_is_a_user_error(bad):
    with pytest.raises(CltraceError, match="between 0 and 1"):
        GraphPruneConfig(node_threshold=bad)
