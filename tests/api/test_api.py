"""The top-level API (cltrace.api, re-exported by ``import cltrace``) on tiny saved assets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import cltrace
from cltrace.cli import app
from cltrace.errors import CltraceError
from cltrace.graph import attribute as graph_attribute
from cltrace.graph.export import load_graph_json, read_graph_list, transcoder_scan
from cltrace.graph.influence import graph_scores
from cltrace.graph.prune import GraphPruneConfig, prune_graph
from cltrace.pie import PieConfig, run_pie
from cltrace.pie.results import _clean_json
from cltrace.prune import PruneConfig, get_method
from cltrace.tasks import write_pairs
from cltrace.testing import save_tiny_assets
from tests.pie.test_run import PAIRS

PROMPT = "w1 w2 w3 w4 w2 w5"
METHODS = ("fap", "fap_synergy", "act_mag", "random")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    save_tiny_assets(root, "gpt2", d_features=24)
    write_pairs(root / "pairs.json", PAIRS)
    (root / "corpus.txt").write_text(
        "\n".join(" ".join(f"w{(7 * d + 3 * i) % 200}" for i in range(12)) for d in range(24))
    )
    return root


@pytest.fixture(scope="module")
def loaded(assets):
    model = cltrace.load_model(str(assets / "model"))
    return model, cltrace.load_transcoder(str(assets / "clt"), model=model)


def test_import_exposes_the_api_lazily():
    code = (
        "import sys, cltrace; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "names = ['load_model', 'load_transcoder', 'attribute', 'make_pairs', 'prune', "
        "'explain', 'AttributionGraph', 'PrunedGraph', 'PruneResult', 'FeatureNote']; "
        "assert all(n in dir(cltrace) and n in cltrace.__all__ for n in names); "
        "assert callable(cltrace.prune) and cltrace.load_model.__doc__; "
        # the lazy names are listed without importing cltrace.api; they must be its names
        "import cltrace.api; assert {*cltrace._API, 'prune'} == set(cltrace.api.__all__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_prune_is_callable_and_still_the_stage_i_package():
    import cltrace.prune.methods as methods

    assert callable(cltrace.prune)
    assert cltrace.prune.PruneConfig is PruneConfig
    assert methods.get_method is get_method


def test_attribute_scores_are_those_of_the_graph(loaded):
    model, tc = loaded
    g = cltrace.attribute(model, tc, PROMPT)
    full = graph_scores(g.graph)
    assert (g.replacement_score, g.completeness_score) == (full.replacement, full.completeness)
    assert g.n_nodes == g.graph.index.n_nodes and g.n_features == g.graph.index.n_features
    again = graph_scores(graph_attribute(model, tc, PROMPT))
    assert g.replacement_score == pytest.approx(again.replacement, abs=1e-6)
    small = g.prune(node_threshold=0.5, edge_threshold=0.9)
    result = prune_graph(g.graph, GraphPruneConfig(node_threshold=0.5, edge_threshold=0.9))
    assert small.n_nodes == result.n_nodes and small.n_edges == result.n_edges
    assert small.replacement_score == graph_scores(g.graph, result.node_mask).replacement
    assert small.n_nodes <= g.n_nodes
    assert "replacement" in str(g) and "AttributionGraph(" in repr(g)
    assert "pruned graph" in str(small) and "PrunedGraph(" in repr(small)


def test_attribute_takes_names_and_refuses_unknown_words(assets):
    g = cltrace.attribute(str(assets / "model"), str(assets / "clt"), PROMPT, targets=["w3"])
    assert g.n_logits == 1
    with pytest.raises(CltraceError, match="does not know"):
        cltrace.attribute(str(assets / "model"), str(assets / "clt"), "w1 zebra")


def test_save_writes_what_cltrace_attribute_writes(assets, loaded, tmp_path):
    model, tc = loaded
    g = cltrace.attribute(model, tc, PROMPT)
    small = g.prune()
    assert not list(tmp_path.iterdir())  # nothing written until asked
    path = small.save(tmp_path / "api" / "demo.json", scan=transcoder_scan(assets / "clt"))
    doc = load_graph_json(path)
    assert len(doc.nodes) == small.n_nodes and len(doc.links) == small.n_edges
    assert [e.slug for e in read_graph_list(path.parent / "graph-metadata.json").graphs] == ["demo"]
    out = tmp_path / "cli" / "demo.json"
    args = ["attribute", "--prompt", PROMPT, "--model", str(assets / "model"), "--transcoder",
            str(assets / "clt"), "--out", str(out)]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    cli_doc = json.loads(out.read_text())
    api_doc = json.loads(path.read_text())
    for d in (cli_doc, api_doc):
        d["metadata"]["info"].pop("create_time_ms")
    assert api_doc["nodes"] == cli_doc["nodes"]
    assert api_doc["metadata"] == cli_doc["metadata"]
    assert len(api_doc["links"]) == len(cli_doc["links"])
    whole = g.save(tmp_path / "whole", node_threshold=1.0, edge_threshold=1.0)
    assert whole.name == "graph.json" and len(load_graph_json(whole).nodes) == g.n_nodes


def test_prune_equals_run_pie(assets, tmp_path):
    opts = dict(random_sweep=(32,), n_boot=200)
    cfg = PieConfig(
        data=str(assets / "pairs.json"), model=str(assets / "model"),
        transcoder=str(assets / "clt"), methods=METHODS,
        prune=PruneConfig(budgets=(2, 4, 8), random_seeds=2), interpret_budget=4,
        interpret_method="fap", **opts,
    )  # fmt: skip
    expected = run_pie(cfg, tmp_path / "run", force=True)
    res = cltrace.prune(
        str(assets / "model"), str(assets / "clt"), PAIRS, methods=METHODS, budgets=(2, 4, 8),
        config=PruneConfig(random_seeds=2), force=True, **opts,
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # prune wrote nothing
    for method in METHODS:
        for k in ("2", "4", "8"):
            got, want = res.results["methods"][method][k], expected["methods"][method][k]
            assert got["kl"]["mean"] == want["kl"]["mean"], (method, k)
    assert _clean_json(res.results) == json.loads((tmp_path / "run" / "results.json").read_text())
    assert res.mean("fap", 8) == expected["methods"]["fap"]["8"]["kl"]["mean"]
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [r["results"] for r in res.records] == [r["results"] for r in records]
    # kept(): the (layer, feature) ids of kept_features.json for that method and budget
    kept = json.loads((tmp_path / "run" / "kept_features.json").read_text())["features"]
    assert res.kept("fap", 4) == [(f["layer"], f["feature"]) for f in kept]
    assert res.kept_features("fap", 4) == kept
    table = res.table()
    assert "mean KL over 4 prompts" in table and "K=8" in table
    assert all(m in table for m in METHODS) and str(res) == table
    assert "PruneResult(" in repr(res)


def test_method_names_accept_dashes(assets, loaded):
    model, tc = loaded
    assert get_method("fap-synergy") is get_method("fap_synergy")
    res = cltrace.prune(model, tc, PAIRS[:2], methods=["fap-synergy", "act-mag"], budgets=[2],
                        n_boot=20, force=True)  # fmt: skip
    assert res.methods == ["fap_synergy", "act_mag"]
    assert res.kept("fap-synergy", 2) == res.kept("fap_synergy", 2)
    assert res.mean("act-mag", 2) == res.results["methods"]["act_mag"]["2"]["kl"]["mean"]
    cfg = PieConfig(methods=("fap", "fap-synergy"), interpret_method="fap-synergy")
    assert (cfg.methods, cfg.interpret_method) == (("fap", "fap_synergy"), "fap_synergy")
    with pytest.raises(CltraceError, match="no results"):
        res.kept("fap", 2)
    with pytest.raises(CltraceError, match="unknown method"):
        cltrace.prune(model, tc, PAIRS[:1], methods=["fapp"], budgets=[2])


def test_prune_reads_a_pair_file_and_generated_pairs(assets, loaded):
    model, tc = loaded
    from_file = cltrace.prune(model, tc, assets / "pairs.json", methods=["fap"], budgets=[2],
                              n_boot=20, force=True)  # fmt: skip
    assert from_file.n_prompts == len(PAIRS)
    pairs = cltrace.make_pairs("ioi", n=3, seed=0)  # the bundled model's tokenizer
    assert len(pairs) == 3 and all(p.clean and p.corrupt for p in pairs)


def test_explain_gives_one_note_per_feature(assets, loaded, tmp_path):
    model, tc = loaded
    features = [(0, 1), (1, 3), (0, 1)]
    notes = cltrace.explain(model, tc, features, corpus=str(assets / "corpus.txt"), n_docs=24)
    assert [n.key for n in notes] == features
    for note in notes:
        assert note.description or note.failure
        assert str(note).startswith(f"L{note.layer} F{note.feature} [")
    assert cltrace.explain(model, tc, []) == []
    kept = tmp_path / "store"
    cltrace.explain(model, tc, features[:1], corpus=str(assets / "corpus.txt"), n_docs=24,
                    store_dir=kept)  # fmt: skip
    assert (kept / "store.json").exists()
    with pytest.raises(CltraceError, match="outside the transcoder"):
        cltrace.explain(model, tc, [(0, 10_000)])
    with pytest.raises(CltraceError, match="needs an LLM"):
        cltrace.explain(model, tc, [(0, 1)], explainer="llm")
    with pytest.raises(CltraceError, match="is not the bundled model.*corpus= FILE"):
        cltrace.explain(model, tc, [(0, 1)])  # the tiny model needs a corpus of its own
