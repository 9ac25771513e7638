"""Graph JSON: round trip through the file, the format's field conventions, the folder listing."""

from __future__ import annotations

import json

import pytest
import torch

from cltrace.errors import CltraceError
from cltrace.graph import AttributionConfig, NodeKind, attribute
from cltrace.graph.export import (
    FEATURE_TYPES,
    graph_document,
    load_graph_json,
    read_graph_list,
    write_graph_json,
)
from cltrace.graph.prune import GraphPruneConfig, prune_graph
from cltrace.testing import random_transcoder, tiny_model
from tests.graph.handmade import handmade_graph


@pytest.fixture(scope="module")
def setup():
    adapter = tiny_model("gemma2")
    tc = random_transcoder(adapter, d_features=24)
    graph = attribute(adapter, tc, "w3 w8 w1 w3 w8", config=AttributionConfig(batch_size=32))
    return adapter, graph


def _decode(adapter):
    return adapter.tokenizer.decode


def expected_sets(graph, result):
    idx = graph.index
    ids = [idx.node_id(n, graph.tokens) for n in range(idx.n_nodes)]
    nodes = {ids[n] for n in result.node_mask.nonzero().flatten().tolist()}
    targets = idx.target_nodes()
    links = {
        (ids[s], ids[int(targets[r])]): float(graph.adjacency.detach()[r, s])
        for r, s in result.edge_mask.nonzero().tolist()
    }
    return nodes, links


@pytest.mark.parametrize("thresholds", [(0.8, 0.98), (1.0, 1.0)])
def test_round_trip_matches_pruned_graph(setup, tmp_path, thresholds):
    adapter, graph = setup
    result = prune_graph(graph, GraphPruneConfig(*thresholds))
    doc = graph_document(graph, "tiny", result, decode=_decode(adapter))
    path = write_graph_json(doc, tmp_path)
    assert path == tmp_path / "tiny.json"
    back = load_graph_json(path)
    nodes, links = expected_sets(graph, result)
    assert {n.node_id for n in back.nodes} == nodes
    assert len(back.nodes) == result.n_nodes
    got = {(lk["source"], lk["target"]): lk["weight"] for lk in back.links}
    assert got.keys() == links.keys() and len(back.links) == result.n_edges
    for key, weight in links.items():
        assert got[key] == pytest.approx(weight, rel=1e-6, abs=1e-9)
    if thresholds == (1.0, 1.0):
        assert len(back.nodes) == graph.index.n_nodes
        assert len(back.links) == int((graph.adjacency != 0).sum())
    assert back.model_dump() == doc.model_dump()


def test_node_fields_follow_the_format(setup, tmp_path):
    adapter, graph = setup
    idx = graph.index
    result = prune_graph(graph, GraphPruneConfig(1.0, 1.0))
    doc = graph_document(graph, "tiny", result, decode=_decode(adapter))
    raw = json.loads(write_graph_json(doc, tmp_path).read_text())
    assert set(raw) == {"metadata", "qParams", "nodes", "links"}
    meta = raw["metadata"]
    assert meta["schema_version"] == 1 and meta["slug"] == "tiny"
    assert meta["prompt_tokens"] == graph.str_tokens and meta["prompt"].startswith("<bos>")
    assert meta["prompt"] == adapter.tokenizer.decode(graph.tokens.tolist())
    assert meta["node_threshold"] == 1.0
    assert set(raw["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    assert len({n["node_id"] for n in raw["nodes"]}) == len(raw["nodes"])
    by_id = {n["node_id"]: n for n in raw["nodes"]}
    assert {n["feature_type"] for n in raw["nodes"]} <= set(FEATURE_TYPES.values())
    for n in range(idx.n_nodes):
        node = by_id[idx.node_id(n, graph.tokens)]
        kind = idx.kind(n)
        layer, pos = idx.layer_pos(n)
        assert node["feature_type"] == FEATURE_TYPES[kind] and isinstance(node["layer"], str)
        assert node["ctx_idx"] == pos and node["reverse_ctx_idx"] == 0
        if kind == NodeKind.FEATURE:
            f = int(idx.feat_id[n])
            s = layer + f  # Cantor pairing, computed here independently of the exporter
            assert (node["feature"], node["layer"]) == (s * (s + 1) // 2 + f, str(layer))
            assert node["jsNodeId"] == f"{layer}_{f}-0" and node["clerp"] == ""
            assert node["activation"] == pytest.approx(float(graph.activations[n]))
            assert 0 < node["influence"] <= 1 + 1e-6
        elif kind == NodeKind.ERROR:
            assert (node["feature"], node["clerp"], node["jsNodeId"]) == (
                -1,
                "",
                f"{layer}_{pos}-0",
            )
        elif kind == NodeKind.TOKEN:
            assert (node["feature"], node["layer"], node["clerp"]) == (pos, "E", "")
        else:
            k = n - idx.logit_start
            token = int(idx.logit_token[k])
            assert node["layer"] == str(idx.n_layers + 1) and node["feature"] == token
            assert node["token_prob"] == pytest.approx(float(graph.logit_probs[k]))
            assert node["is_target_logit"] == (k == 0)
            assert node["clerp"].startswith(f'Output "{adapter.tokenizer.decode([token])}" (p=')


def test_descriptions_label_features():
    graph = handmade_graph()
    doc = graph_document(graph, "hand", descriptions={(1, 3): "says Mary"})
    labels = {n.node_id: n.clerp for n in doc.nodes}
    assert labels["1_3_0"] == "says Mary" and labels["0_7_0"] == ""
    assert labels["E_5_0"] == "" and labels["3_11_0"] == 'Output "tok11" (p=0.600)'


def test_listing_adds_and_replaces_entries(tmp_path):
    graph = handmade_graph()
    write_graph_json(graph_document(graph, "a"), tmp_path)
    write_graph_json(graph_document(graph, "b"), tmp_path, title_prefix="B: ")
    write_graph_json(graph_document(graph, "a", scan="other"), tmp_path)
    listing = read_graph_list(tmp_path / "graph-metadata.json")
    assert [g.slug for g in listing.graphs] == ["b", "a"]
    assert listing.graphs[1].scan == "other" and listing.graphs[0].title_prefix == "B: "
    assert listing.graphs[0].prompt_tokens == ["w1"]


def test_bad_slug_and_bad_files_are_user_errors(tmp_path):
    graph = handmade_graph()
    with pytest.raises(CltraceError, match="slug"):
        graph_document(graph, "../escape")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metadata": {"slug": "x"}, "nodes": [], "links": []}))
    with pytest.raises(CltraceError, match="not valid"):
        load_graph_json(bad)
    with pytest.raises(CltraceError, match="does not exist"):
        load_graph_json(tmp_path / "missing.json")


def test_weights_are_written_at_full_precision(tmp_path):
    graph = handmade_graph()
    graph.adjacency[1, 0] = torch.tensor(1 / 3, dtype=torch.float64)
    back = load_graph_json(write_graph_json(graph_document(graph, "p"), tmp_path))
    weights = {(lk["source"], lk["target"]): lk["weight"] for lk in back.links}
    assert weights[("0_7_0", "1_3_0")] == 1 / 3


def test_failed_write_keeps_the_earlier_graph_and_listing(tmp_path, monkeypatch):
    import cltrace.files

    graph = handmade_graph()
    write_graph_json(graph_document(graph, "a"), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cltrace.files.os, "replace", fail)
    with pytest.raises(OSError):
        write_graph_json(graph_document(graph, "a", scan="other"), tmp_path)
    # both files are whole and unchanged, and no temporary file is left beside them
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
