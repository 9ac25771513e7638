"""``cltrace global``, ``cltrace supernodes`` and ``cltrace evaluate --evals`` in a subprocess."""

from __future__ import annotations

import json
import random

import pytest

from cltrace.graph import attribute, graph_document
from cltrace.graph.export import load_graph_json, write_graph_json
from cltrace.testing import save_tiny_assets
from tests.cli.conftest import expect_error


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("global_cli")
    adapter, tc = save_tiny_assets(root, "gpt2", d_features=16, n_layers=3)
    rng = random.Random(0)
    docs = [" ".join(f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 9))) for _ in range(40)]
    (root / "corpus.txt").write_text("\n".join(docs) + "\n")
    g = attribute(adapter, tc.requires_grad_(False), "w3 w8 w1 w3 w8 w9")
    write_graph_json(graph_document(g, "tiny"), root / "graphs")
    return root


def _tiny(root):
    return ["--model", root / "model", "--transcoder", root / "clt"]


def test_global_features_writes_json_and_html(cli, assets, tmp_path):
    out = tmp_path / "g"
    done = cli("global", "--features", "1/3,2/5", *_tiny(assets), "--corpus",
               assets / "corpus.txt", "--n-docs", "30", "--out", out, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["features"] == ["1/3", "2/5"] and rep["n_tokens"] > 50
    assert {r["feature"] for r in rep["virtual_weights"]} == {"1/3", "2/5"}
    assert len(rep["virtual_weights"][0]["top_sources"]) == 10  # layer 1 has 16 sources
    assert set(rep["top_pairs"]) == {"v", "era", "twera"}
    assert json.loads((out / "global.json").read_text())["n_tokens"] == rep["n_tokens"]
    assert "<table>" in (out / "global.html").read_text()
    # the finished co-activation state is reused: a rerun reads it and reports the same pairs
    assert len(list(out.glob("coact-*.npz"))) == 1
    again = cli("global", "--features", "1/3,2/5", *_tiny(assets), "--corpus",
                assets / "corpus.txt", "--n-docs", "30", "--out", out, "--json")  # fmt: skip
    assert json.loads(again.stdout)["top_pairs"] == rep["top_pairs"]


@pytest.mark.slow
def test_global_task_on_the_bundled_clt(cli, tmp_path):
    done = cli("global", "--task", "ioi", "--n-prompts", "1", "--n-docs", "30", "--out",
               tmp_path / "g", "--json", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    pf = rep["prefilter"]
    assert set(pf["precision_at_k"]["twera"]) == {"10", "50", "200"}
    assert rep["top_pairs"]["twera"] and rep["saving"]["rows_restricted"] <= rep["saving"][
        "rows_full"]  # fmt: skip


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "exactly one of --task and --features"),
        (["--task", "ioi", "--features", "1/2"], "exactly one of --task and --features"),
        (["--features", "1-2"], "is not LAYER/FEATURE"),
        (["--features", "9/0"], "does not have"),
        (["--task", "nope"], "unknown task"),
        (["--features", "1/2", "--faithfulness"], "--faithfulness needs --task"),
    ],
)
def test_global_bad_input_is_one_sentence(cli, assets, tmp_path, args, fragment):
    done = cli("global", *args, *_tiny(assets), "--out", tmp_path / "g")
    expect_error(done, 2, fragment)


def test_supernodes_manual_and_auto(cli, assets, tmp_path):
    graph = assets / "graphs" / "tiny.json"
    doc = load_graph_json(graph)
    feats = [n.node_id for n in doc.nodes if n.feature_type == "cross layer transcoder"]
    out = tmp_path / "with.json"
    pair = f"pair={feats[0]},{feats[1]}"
    done = cli("supernodes", "--graph", graph, "--add", pair, "--auto", "--threshold", "0.999",
               "--transcoder", assets / "clt", "--out", out, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    back = load_graph_json(out)
    assert back.qParams.supernodes[0] == ["pair", feats[0], feats[1]]
    assert len(back.qParams.supernodes) == len(rep["supernodes"]) >= 2
    n_members = sum(len(s["members"]) for s in rep["supernodes"])
    assert rep["n_coarse_nodes"] == rep["n_nodes"] - n_members + len(rep["supernodes"])
    coarse = load_graph_json(rep["coarse_graph"])
    assert sum(n.feature_type == "supernode" for n in coarse.nodes) == len(rep["supernodes"])
    assert "Supernodes" in (tmp_path / "with.supernodes.html").read_text()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--graph", "missing.json", "--auto"], "is not a file"),
        (["--add", "nameonly"], "is not NAME=ID"),
        (["--add", "x=0_999_1"], "not in the graph"),
        ([], "no supernodes and none were asked for"),
    ],
)
def test_supernodes_bad_input_is_one_sentence(cli, assets, tmp_path, args, fragment):
    graph = ["--graph", assets / "graphs" / "tiny.json"] if "--graph" not in args else []
    done = cli("supernodes", *graph, *args, "--out", tmp_path / "o.json")
    expect_error(done, 2, fragment)


def test_evaluate_rejects_an_unknown_eval(cli, tmp_path):
    expect_error(cli("evaluate", "--run", tmp_path, "--evals", "sort,nope"), 2, "--evals")


def test_evaluate_sort_and_contrastive_on_a_run(cli, assets, tmp_path):
    from cltrace.pie import PieConfig, run_pie
    from cltrace.prune import PruneConfig
    from cltrace.tasks import write_pairs
    from tests.score.test_pipeline import PAIRS

    write_pairs(tmp_path / "pairs.json", PAIRS)
    cfg = PieConfig(
        data=str(tmp_path / "pairs.json"), model=str(assets / "model"),
        transcoder=str(assets / "clt"), methods=("fap",), random_sweep=(),
        prune=PruneConfig(budgets=(8,)), n_boot=20, interpret_method="fap", interpret_budget=8,
    )  # fmt: skip
    run = tmp_path / "run"
    run_pie(cfg, run, force=True)
    done = cli("evaluate", "--run", run, "--evals", "sort,contrastive", "--corpus",
               assets / "corpus.txt")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rep = json.loads((run / "feature_evals.json").read_text())
    assert set(rep["evals"]) == {"sort", "contrastive"}
    for e in rep["evals"].values():
        assert e["n_items"] == 0 or 0.0 <= e["score"] <= 1.0
    assert rep["evals"]["sort"]["n_items"] > 0
    assert "chance 0.5" in (run / "feature_evals.html").read_text()
