"""Influence, graph scores and path lengths against brute force: path enumeration on a hand-made
graph, and ``(I - Â)^-1 - I`` of the dense square adjacency on graphs of tiny models."""

from __future__ import annotations

import pytest
import torch

from cltrace.graph import AttributionConfig, attribute
from cltrace.graph.influence import (
    graph_scores,
    influence_steps,
    node_influence,
    normalized_adjacency,
    path_lengths,
)
from cltrace.testing import random_transcoder, tiny_model
from tests.graph.handmade import (
    E0,
    E1,
    EDGES,
    F0,
    F1,
    K0,
    K1,
    PROBS,
    T,
    handmade_graph,
    paths_into,
    shares,
)

PROMPT = "w3 w8 w1 w3 w8 w9"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_graph(request):
    adapter = tiny_model(request.param)
    tc = random_transcoder(adapter, d_features=24, skip=request.param == "llama")
    return attribute(adapter, tc, PROMPT, config=AttributionConfig(batch_size=32))


def brute_force(graph, pruned_features=()):
    """Influence, replacement and completeness from the dense square matrix (float64).

    Pruned features lose their inputs and join the error set, as docs/METHODS.md §2 says.
    """
    idx = graph.index
    n = idx.n_nodes
    dense = graph.dense_adjacency().detach().double().abs()
    dense = dense / dense.sum(1, keepdim=True).where(dense.sum(1, keepdim=True) > 0, 1.0)
    errors = list(range(idx.error_start, idx.token_start)) + list(pruned_features)
    dense[list(pruned_features)] = 0.0
    eye = torch.eye(n, dtype=torch.float64)
    B = torch.linalg.inv(eye - dense) - eye
    w = torch.zeros(n, dtype=torch.float64)
    w[idx.logits()] = graph.logit_probs.double()
    inf = w @ B
    token = inf[idx.tokens()].sum()
    replacement = token / (token + inf[errors].sum())
    non_error = 1 - dense[:, errors].sum(1)  # rows without inputs give 1
    weight = inf + w
    completeness = (non_error * weight).sum() / weight.sum()
    return inf, float(replacement), float(completeness), dense, w


def test_influence_equals_inverse_on_tiny_model(tiny_graph):
    inf = node_influence(tiny_graph)
    expected, *_ = brute_force(tiny_graph)
    assert inf.shape == (tiny_graph.index.n_nodes,)
    assert (inf[tiny_graph.index.logits()] == 0).all()
    torch.testing.assert_close(inf.double(), expected, rtol=1e-5, atol=1e-7)


def test_scores_equal_brute_force_on_tiny_model(tiny_graph):
    _, replacement, completeness, *_ = brute_force(tiny_graph)
    scores = graph_scores(tiny_graph)
    assert scores.replacement == pytest.approx(replacement, rel=1e-5)
    assert scores.completeness == pytest.approx(completeness, rel=1e-5)
    assert 0 < scores.replacement < 1 and 0 < scores.completeness < 1


def test_pruned_scores_count_pruned_features_as_errors(tiny_graph):
    idx = tiny_graph.index
    gen = torch.Generator().manual_seed(1)
    dropped = torch.randperm(idx.n_features, generator=gen)[: idx.n_features // 2]
    mask = torch.ones(idx.n_nodes, dtype=torch.bool)
    mask[dropped] = False
    _, replacement, completeness, *_ = brute_force(tiny_graph, dropped.tolist())
    scores = graph_scores(tiny_graph, mask)
    assert scores.replacement == pytest.approx(replacement, rel=1e-5)
    assert scores.completeness == pytest.approx(completeness, rel=1e-5)
    full = graph_scores(tiny_graph)
    assert scores.replacement < full.replacement
    # a mask keeping everything changes nothing
    same = graph_scores(tiny_graph, torch.ones(idx.n_nodes, dtype=torch.bool))
    assert same == full


def test_path_length_masses_equal_matrix_powers(tiny_graph):
    idx = tiny_graph.index
    _, _, _, dense, w = brute_force(tiny_graph)
    masses, power = [], w.clone()
    for _ in range(idx.n_layers + 2):
        power = power @ dense
        masses.append(float(power[idx.tokens()].sum()))
    total = sum(masses)
    result = path_lengths(tiny_graph)
    expected = [m / total for m in masses][: len(result.by_length)]
    assert sum(masses[len(result.by_length) :]) == 0
    assert result.by_length == pytest.approx(expected, rel=1e-5, abs=1e-9)
    mean = sum((i + 1) * m for i, m in enumerate(masses)) / total
    assert result.mean == pytest.approx(mean, rel=1e-5)
    assert result.cumulative[-1] == pytest.approx(1.0)
    # the longest path has at most n_layers features on it, so at most n_layers + 1 edges
    assert 1.0 <= result.mean <= idx.n_layers + 1


def test_influence_by_path_enumeration():
    g = handmade_graph()
    share = shares()
    expected = [0.0] * 7
    for k, p in PROBS.items():
        for path, strength in paths_into(k, share):
            expected[path[0]] += p * strength
    inf = node_influence(g)
    assert inf.tolist() == pytest.approx(expected, abs=1e-12)
    # spelled out for one node: f0 reaches k0 directly and through f1 (into k0 and k1)
    a = share
    f0 = 0.6 * (a[K0][F0] + a[F1][F0] * a[K0][F1]) + 0.3 * a[F1][F0] * a[K1][F1]
    assert float(inf[F0]) == pytest.approx(f0)


def test_scores_by_hand_on_handmade_graph():
    g = handmade_graph()
    share = shares()
    inf = node_influence(g).tolist()
    replacement = inf[T] / (inf[T] + inf[E0] + inf[E1])
    weight = {n: inf[n] + PROBS.get(n, 0.0) for n in range(7)}
    error_in = {t: sum(v for s, v in row.items() if s in (E0, E1)) for t, row in share.items()}
    completeness = sum((1 - error_in.get(n, 0.0)) * weight[n] for n in range(7))
    completeness /= sum(weight.values())
    scores = graph_scores(g)
    assert scores.replacement == pytest.approx(replacement)
    assert scores.completeness == pytest.approx(completeness)


def test_pruned_feature_becomes_an_error_by_hand():
    g = handmade_graph()
    mask = torch.ones(7, dtype=torch.bool)
    mask[F0] = False
    # f0 loses its input: the same graph with f0's row removed, and f0 counted with the errors
    edges = {t: dict(row) for t, row in EDGES.items() if t != F0}
    share = shares(edges)
    inf = [0.0] * 7
    for k, p in PROBS.items():
        for path, strength in paths_into(k, share):
            inf[path[0]] += p * strength
    errors = (E0, E1, F0)
    replacement = inf[T] / (inf[T] + sum(inf[e] for e in errors))
    error_in = {t: sum(v for s, v in row.items() if s in errors) for t, row in share.items()}
    weight = [inf[n] + PROBS.get(n, 0.0) for n in range(7)]
    completeness = sum((1 - error_in.get(n, 0.0)) * weight[n] for n in range(7)) / sum(weight)
    scores = graph_scores(g, mask)
    assert scores.replacement == pytest.approx(replacement)
    assert scores.completeness == pytest.approx(completeness)


def test_path_lengths_by_enumeration():
    g = handmade_graph()
    share = shares()
    by_length: dict[int, float] = {}
    for k, p in PROBS.items():
        for path, strength in paths_into(k, share):
            if path[0] == T:
                by_length[len(path) - 1] = by_length.get(len(path) - 1, 0.0) + p * strength
    total = sum(by_length.values())
    result = path_lengths(g)
    assert len(result.by_length) == max(by_length)
    assert result.by_length == pytest.approx([by_length.get(i, 0) / total for i in (1, 2, 3)])
    mean = sum(length * m for length, m in by_length.items()) / total
    assert result.mean == pytest.approx(mean)
    # with f0 pruned, t→f0→… paths are gone but the shares keep the unpruned denominator
    mask = torch.ones(7, dtype=torch.bool)
    mask[F0] = False
    pruned = path_lengths(g, mask)
    assert sum(pruned.by_length) < 1.0


def test_rows_normalise_to_one_and_empty_rows_stay_zero():
    adj = torch.tensor([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    norm = normalized_adjacency(adj)
    assert norm.tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]]


def test_no_error_input_gives_perfect_scores():
    edges = {F0: {T: 1.0}, F1: {F0: 1.0}, K0: {F1: 2.0, T: 1.0}, K1: {F0: -1.0}}
    scores = graph_scores(handmade_graph(edges))
    assert scores.replacement == pytest.approx(1.0)
    assert scores.completeness == pytest.approx(1.0)


def test_cycle_is_detected():
    g = handmade_graph({F0: {F1: 1.0}, F1: {F0: 1.0}, K0: {F1: 1.0}, K1: {T: 1.0}})
    with pytest.raises(ValueError, match="cycle"):
        list(influence_steps(normalized_adjacency(g.adjacency), g.index, g.logit_probs))
