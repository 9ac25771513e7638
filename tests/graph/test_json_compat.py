"""Graph JSON against circuit-tracer 0.5.0's own file for the same prompt, model and transcoder.

``data/circuit_tracer_reference.json`` and ``data/circuit_tracer_graph_metadata.json`` were
written by circuit-tracer's ``create_graph_files`` in its own environment
(``data/make_circuit_tracer_reference.py``) on the bundled model and CLT. cltrace's file for the
same prompt must carry the same fields with the same values: node ids aside for error nodes
(cltrace writes ``{layer}_-1_{pos}``; see :mod:`cltrace.graph.export`), and edges aside where
the two tools define token nodes differently (circuit-tracer attributes to the token embedding
only and zeroes the BOS-position error), which also moves the influence values a little.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cltrace
from cltrace.errors import CltraceError
from cltrace.graph import NodeKind
from cltrace.graph.export import (
    graph_document,
    load_graph_json,
    node_key,
    read_graph_list,
    transcoder_scan,
    write_graph_json,
    write_graph_list,
)
from cltrace.graph.prune import GraphPruneConfig, prune_graph
from cltrace.models import load_model
from cltrace.paths import BUNDLED_CLT_DIR
from cltrace.transcoders import load_transcoder
from tests.graph.handmade import handmade_graph

DATA = Path(__file__).parent / "data"
PROMPT = "When Mary and John went to the store, John gave a drink to"
REF_IDS = [1, 38, 47, 11, 60, 25, 9, 13, 216, 7, 60, 16, 12, 259, 9]  # what the reference used


def _write(tmp_path_factory, token_nodes):
    model = load_model(None)
    assert model.encode(PROMPT) == REF_IDS
    tc = load_transcoder(BUNDLED_CLT_DIR, model=model)
    out = tmp_path_factory.mktemp("compat") / "circuit_tracer_reference.json"
    g = cltrace.attribute(model, tc, PROMPT, token_nodes=token_nodes)
    path = g.prune(0.8, 0.98).save(out, scan=transcoder_scan(None))
    raw = json.loads(path.read_text())
    ref = json.loads((DATA / "circuit_tracer_reference.json").read_text())
    return raw, ref, path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """cltrace's default token nodes (whole block-0 input, BOS errors attributed)."""
    return _write(tmp_path_factory, "cltrace")


@pytest.fixture(scope="module")
def same(tmp_path_factory):
    """Token nodes and BOS errors defined as circuit-tracer defines them."""
    return _write(tmp_path_factory, "circuit-tracer")


def _links(doc: dict) -> dict:
    keys = {n["node_id"]: _key(n) for n in doc["nodes"]}
    return {(keys[lk["source"]], keys[lk["target"]]): lk["weight"] for lk in doc["links"]}


def _key(node: dict) -> tuple:
    k = node_key(cltrace.graph.export.Node.model_validate(node))
    return (k["kind"], k["layer"], k["feature"], k["pos"])


def test_metadata_and_qparams_match_circuit_tracer(pair):
    raw, ref, _ = pair
    assert set(raw) == set(ref)
    for field, value in ref["metadata"].items():
        assert raw["metadata"][field] == value, field
    assert raw["qParams"] == ref["qParams"]


def test_every_node_field_matches_circuit_tracer(pair):
    raw, ref, _ = pair
    ours = {_key(n): n for n in raw["nodes"]}
    theirs = {_key(n): n for n in ref["nodes"]}
    assert ours.keys() == theirs.keys() and len(ours) == len(raw["nodes"]) == 40
    for key, want in theirs.items():
        got = ours[key]
        assert set(got) == set(want)
        for field, value in want.items():
            if field == "node_id" and key[0] == NodeKind.ERROR:
                layer, pos = key[1], key[3]
                assert (value, got[field]) == (f"0_{layer}_{pos}", f"{layer}_-1_{pos}")
            elif field == "influence" and value is not None:
                # token-node definitions differ (module docstring), so influence moves a little
                assert got[field] == pytest.approx(value, abs=0.15), (key, field)
            elif isinstance(value, float):
                assert got[field] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, field)
            else:
                assert got[field] == value, (key, field)


def test_edges_between_features_and_errors_match_circuit_tracer(pair):
    raw, ref, _ = pair
    ours, theirs = _links(raw), _links(ref)
    same_definition = [
        k for k in theirs
        if k[0][0] == NodeKind.FEATURE or (k[0][0] == NodeKind.ERROR and k[0][3] > 0)
    ]  # fmt: skip
    common = [k for k in same_definition if k in ours]
    assert len(common) >= 40 and len(common) >= len(same_definition) - 2
    for k in common:
        assert ours[k] == pytest.approx(theirs[k], rel=1e-4, abs=1e-7)


def test_circuit_tracer_token_nodes_give_its_graph_entry_for_entry(same):
    """With ``token_nodes="circuit-tracer"`` every node (influence included) and every edge of
    circuit-tracer's file is in cltrace's, with the same values, and nothing else is."""
    raw, ref, _ = same
    ours, theirs = _links(raw), _links(ref)
    assert ours.keys() == theirs.keys() and len(ours) == len(ref["links"])
    for k, w in theirs.items():
        assert ours[k] == pytest.approx(w, rel=1e-4, abs=1e-6), k
    nodes = {_key(n): n for n in raw["nodes"]}
    assert nodes.keys() == {_key(n) for n in ref["nodes"]}
    for want in ref["nodes"]:
        got = nodes[_key(want)]
        for field, value in want.items():
            if field == "node_id":
                continue
            if isinstance(value, float):
                assert got[field] == pytest.approx(value, rel=1e-4, abs=1e-5), field
            else:
                assert got[field] == value, field


def test_circuit_tracer_token_nodes_still_add_up():
    """Each target's edges plus its bias-only value give its real value in both definitions,
    and on a model without learned position embeddings the token edges do not change."""
    from cltrace.graph import AttributionConfig, attribute
    from cltrace.testing import random_transcoder, tiny_model

    model = load_model(None)
    tc = load_transcoder(BUNDLED_CLT_DIR, model=model)
    for mode in ("cltrace", "circuit-tracer"):
        g = attribute(model, tc, PROMPT, config=AttributionConfig(token_nodes=mode))
        total = g.adjacency.sum(1) + g.bias_values
        assert torch.allclose(total, g.target_values, atol=1e-4, rtol=1e-4), mode
    rotary = tiny_model("gemma2")
    rtc = random_transcoder(rotary, d_features=24)
    a, b = (attribute(rotary, rtc, "w3 w8 w1 w3", config=AttributionConfig(token_nodes=m))
            for m in ("cltrace", "circuit-tracer"))  # fmt: skip
    idx = a.index
    assert torch.allclose(a.adjacency[:, idx.tokens()], b.adjacency[:, idx.tokens()], atol=1e-6)
    bos_errors = [idx.error_node(layer, 0) for layer in range(idx.n_layers)]
    assert (b.adjacency[:, bos_errors] == 0).all() and (a.adjacency[:, bos_errors] != 0).any()
    with pytest.raises(CltraceError, match="token_nodes"):
        AttributionConfig(token_nodes="other")


def test_graph_metadata_lists_what_circuit_tracer_lists(pair):
    _, _, path = pair
    ours = json.loads((path.parent / "graph-metadata.json").read_text())
    theirs = json.loads((DATA / "circuit_tracer_graph_metadata.json").read_text())
    assert ours == theirs


def test_reading_the_file_back_gives_the_same_graph(tmp_path):
    """Every node of the file decodes to the graph node it was written from, and every link to
    the adjacency entry it came from."""
    graph = handmade_graph()
    result = prune_graph(graph, GraphPruneConfig(1.0, 1.0))
    back = load_graph_json(write_graph_json(graph_document(graph, "h", result), tmp_path))
    idx = graph.index
    by_id = {idx.node_id(n, graph.tokens): n for n in range(idx.n_nodes)}
    assert len(back.nodes) == idx.n_nodes
    for node in back.nodes:
        n = by_id[node.node_id]
        layer, pos = idx.layer_pos(n)
        kind = idx.kind(n)
        if kind == NodeKind.FEATURE:
            feature = int(idx.feat_id[n])
        elif kind == NodeKind.ERROR:
            feature = -1
        elif kind == NodeKind.TOKEN:
            feature = int(graph.tokens[pos])
        else:
            feature = int(idx.logit_token[n - idx.logit_start])
        assert node_key(node) == {"kind": kind, "layer": layer, "feature": feature, "pos": pos}
    dense = graph.dense_adjacency()
    for lk in back.links:
        assert lk["weight"] == float(dense[by_id[lk["target"]], by_id[lk["source"]]])
    assert len(back.links) == int((graph.adjacency != 0).sum())


def test_descriptions_fill_clerp_and_listing_of_a_folder(tmp_path):
    graph = handmade_graph()
    doc = graph_document(graph, "a", descriptions={(1, 3): "says Mary"})
    assert {n.node_id: n.clerp for n in doc.nodes}["1_3_0"] == "says Mary"
    write_graph_json(doc, tmp_path)
    write_graph_json(graph_document(graph, "b"), tmp_path)
    (tmp_path / "graph-metadata.json").unlink()
    (tmp_path / "notes.json").write_text("{}")  # not a graph: left out
    listing = read_graph_list(write_graph_list(tmp_path))
    assert [g.slug for g in listing.graphs] == ["a", "b"]
    with pytest.raises(CltraceError, match="not a folder"):
        write_graph_list(tmp_path / "a.json")


def test_scan_names_the_transcoder_as_circuit_tracer_does(tmp_path):
    assert transcoder_scan("mntss/clt-gemma-2-2b-426k") == "mntss/clt-gemma-2-2b-426k"
    folder = tmp_path / "my-clt"
    folder.mkdir()
    assert transcoder_scan(folder) == "my-clt"
    (folder / "config.yaml").write_text("model_kind: cross_layer_transcoder\nscan: org/clt@v1\n")
    assert transcoder_scan(folder) == "org/clt@v1"


def test_attribute_fills_clerp_from_a_runs_descriptions(tmp_path):
    """``cltrace attribute --descriptions RUN`` labels every described feature node;
    ``--token-nodes circuit-tracer`` gives circuit-tracer's edges."""
    import shutil
    import subprocess

    ref = json.loads((DATA / "circuit_tracer_reference.json").read_text())
    feats = [n["node_id"].split("_")[:2] for n in ref["nodes"] if n["feature"] >= 0 and
             n["feature_type"] == "cross layer transcoder"]  # fmt: skip
    descs = {f"{layer}/{f}": {"description": f"feature {layer}.{f}"} for layer, f in feats[::2]}
    run = tmp_path / "run"
    run.mkdir()
    (run / "descriptions.json").write_text(json.dumps(descs))
    out = tmp_path / "g.json"
    cltrace_cmd = shutil.which("cltrace") or "cltrace"
    args = [cltrace_cmd, "attribute", "--prompt", PROMPT, "--out", str(out)]
    r = subprocess.run(
        [*args, "--descriptions", str(run), "--token-nodes", "circuit-tracer"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert _links(json.loads(out.read_text())).keys() == _links(ref).keys()
    labels = {
        "/".join(n["node_id"].split("_")[:2]): n["clerp"]
        for n in json.loads(out.read_text())["nodes"]
        if n["feature_type"] == "cross layer transcoder"
    }
    assert labels == {k: descs[k]["description"] if k in descs else "" for k in labels}
    assert sum(bool(v) for v in labels.values()) == len(descs)
    (run / "descriptions.json").write_text('{"oops": 1}')
    r = subprocess.run([*args, "--descriptions", str(run)], capture_output=True, text=True)
    assert r.returncode == 1 and "'<layer>/<feature>'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*args, "--token-nodes", "tl"], capture_output=True, text=True)
    assert r.returncode == 2 and "--token-nodes 'tl' is unknown" in r.stderr
