"""MIB export: names against MIB's own construction rule, and files read back."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cltrace.edges.graph import EdgeGraph
from cltrace.edges.mib import (
    MIB_BUDGETS,
    circuit_file_name,
    folder_name,
    graph_json,
    nodes_in_graph,
    read_graph_json,
    write_submission,
)
from cltrace.errors import CltraceError


def mib_edge_names(n_layers: int, n_heads: int) -> list[str]:
    """The edge names MIB's graph builder produces for a sequential model: a residual stream of
    writers, each layer's heads read it by q/k/v, then the MLP reads it with the heads added,
    and the logits read everything."""
    stream, names = ["input"], []
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        names += [f"{w}->{h}<{p}>" for w in stream for h in heads for p in "qkv"]
        stream += heads
        names += [f"{w}->m{layer}" for w in stream]
        stream.append(f"m{layer}")
    return names + [f"{w}->logits" for w in stream]


@pytest.mark.parametrize(("n_layers", "n_heads"), [(1, 1), (3, 2), (4, 4), (12, 12)])
def test_edge_names_are_mibs(n_layers, n_heads):
    g = EdgeGraph(n_layers, n_heads)
    expected = mib_edge_names(n_layers, n_heads)
    assert len(g.mib_edge_names) == g.n_edges == len(expected)
    assert set(g.mib_edge_names) == set(expected)
    if (n_layers, n_heads) == (12, 12):
        assert g.n_edges == 32491  # GPT-2 small's edge count in MIB
    # our names and MIB's name the same edges, position by position
    for ours, mib in zip(g.edge_names, g.mib_edge_names, strict=True):
        src, dst = ours.split("->")
        assert mib.split("->")[0] == ("input" if src == "embed" else src)
        if dst.count(".") == 2:
            head, port = dst.rsplit(".", 1)
            assert mib.split("->")[1] == f"{head}<{port}>"
        else:
            assert mib.split("->")[1] == dst


def test_node_rule_by_hand():
    g = EdgeGraph(2, 1)
    names = g.mib_edge_names
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    for e in ("input->a0.h0<v>", "a0.h0->m1", "m0->logits"):
        keep[names.index(e)] = True
    flags = nodes_in_graph(g, keep)
    # a0.h0 has an edge in and out; m0 only out, m1 only in; input needs no incoming edge
    assert flags == {"input": True, "a0.h0": True, "m0": False, "a1.h0": False, "m1": False,
                     "logits": True}  # fmt: skip


def test_submission_round_trips(tmp_path):
    g = EdgeGraph(3, 2)
    gen = torch.Generator().manual_seed(0)
    importance = torch.randn(g.n_edges, generator=gen)
    keep = torch.rand(g.n_edges, generator=gen) > 0.8
    dirs = write_submission(tmp_path, g, importance, keep, 16, "greater_than", "Org/Some_Model")
    assert dirs["importances"].name == "greater-than_some-model"
    back = read_graph_json(dirs["importances"] / "importances.json")
    assert (back.graph.n_layers, back.graph.n_heads, back.d_model) == (3, 2, 16)
    assert torch.equal(back.scores, importance.double())
    assert torch.equal(back.in_graph, keep)
    assert back.nodes == nodes_in_graph(g, keep)
    raw = json.loads((dirs["importances"] / "importances.json").read_text())
    assert set(raw["edges"]) == set(g.mib_edge_names)
    files = sorted(p.name for p in dirs["multiple_circuits"].iterdir())
    assert files == sorted(circuit_file_name(b) for b in MIB_BUDGETS)
    order = sorted(range(g.n_edges), key=lambda i: -abs(float(importance[i])))
    for b in MIB_BUDGETS:
        c = read_graph_json(dirs["multiple_circuits"] / circuit_file_name(b))
        assert c.scores is None
        k = math.floor(b * g.n_edges)
        assert int(c.in_graph.sum()) == k <= b * g.n_edges
        assert set(c.in_graph.nonzero()[:, 0].tolist()) == set(order[:k])


def test_folder_names():
    assert folder_name("ioi", "gpt2") == "ioi_gpt2"
    assert folder_name("greater_than", "/models/Qwen2.5-0.5B/") == "greater-than_qwen2.5-0.5b"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"nodes": {}, "edges": {}}, "lacks the cfg"),
        ({"cfg": {"n_layers": 1}, "nodes": {}, "edges": {}}, "n_heads"),
        ({"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {}, "edges": {"x->y": {}}}, "missing"),
    ],
)
def test_bad_graph_json_is_one_sentence(tmp_path, doc, needle):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CltraceError, match=needle) as err:
        read_graph_json(path)
    assert "\n" not in str(err.value)


def test_graph_json_refuses_infinite_scores():
    g = EdgeGraph(1, 1)
    scores = torch.zeros(g.n_edges)
    scores[0] = -math.inf
    with pytest.raises(ValueError):
        graph_json(g, torch.zeros(g.n_edges, dtype=torch.bool), 8, scores)
