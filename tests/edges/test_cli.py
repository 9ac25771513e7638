"""``cltrace edges`` through the installed command."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest
import torch

from cltrace.edges.graph import EdgeGraph
from cltrace.edges.mib import MIB_BUDGETS, circuit_file_name, read_graph_json
from cltrace.edges.pruning import prob_open


def _cltrace(*args, cwd=None):
    return subprocess.run(["cltrace", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _cells(html: str) -> dict[str, str]:
    """The report's cells that carry an id: ``id -> text`` before any tag inside the cell."""
    return dict(re.findall(r"id='([^']+)'[^>]*>([^<]*)<", html))


def _check_report(out, result: dict) -> None:
    """report.html exists, shows the record's own numbers, and names every kept head."""
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    cells = _cells(html)
    for key in ("n_pairs", "n_edges", "n_edges_total", "faithfulness", "kl", "accuracy",
                "seconds", "sparsity"):  # fmt: skip
        assert float(cells[f"v-{key}"]) == result[key], key
    curve = result["curve"]
    assert float(cells["v-cpr"]) == curve["cpr"] and float(cells["v-cmd"]) == curve["cmd"]
    rows = zip(curve["n_edges"], curve["faithfulness"], curve["kl"], strict=True)
    for i, (n, f, kl) in enumerate(rows):
        got = (int(cells[f"c-n-{i}"]), float(cells[f"c-f-{i}"]), float(cells[f"c-kl-{i}"]))
        assert got == (n, f, kl)
    for layer in range(result["n_layers"]):
        for name in [f"a{layer}.h{h}" for h in range(result["n_heads"])] + [f"m{layer}"]:
            count = result["node_edges"].get(name)
            assert cells[f"g-{name}"] == (str(count) if count else ""), name
    heads = [n for n in result["nodes"] if n.startswith("a")]
    roles = result["head_roles"]
    assert roles is not None and list(roles["heads"]) == heads  # IOI prompts: roles measured
    for name in heads:
        assert f"<td class='l'>{name}</td>" in html
        for field, v in roles["heads"][name].items():
            if field != "roles":
                assert cells[f"r-{name}-{field}"] == ("–" if v is None else str(v))


def _check_mib(mib, out, result: dict) -> None:
    """The submission reads back: the run's circuit and scores in the importance file, the
    per-budget circuits within their budgets."""
    doc = json.loads((out / "circuit.json").read_text())
    g = EdgeGraph(result["n_layers"], result["n_heads"])
    folder = f"ioi_{result['model']}"
    imp = read_graph_json(mib / "importances" / folder / "importances.json")
    assert imp.graph == g
    kept = {g.edge_names.index(e) for e in doc["edges"]}
    assert set(imp.in_graph.nonzero()[:, 0].tolist()) == kept
    own = [doc["scores"][name] for name in g.edge_names]
    if result["method"] in ("eap", "eap-ig"):
        expected = own
    else:  # EP/HAP: the probability that a mask is open; 0 where HAP trained no mask
        expected = [0.0 if a is None else float(prob_open(torch.tensor(a))) for a in own]
    assert max(abs(a - b) for a, b in zip(imp.scores.tolist(), expected, strict=True)) < 1e-5
    assert read_graph_json(out / "graph.json").scores.tolist() == imp.scores.tolist()
    for b in MIB_BUDGETS:
        c = read_graph_json(mib / "multiple_circuits" / folder / circuit_file_name(b))
        assert c.in_graph.sum() == math.floor(b * g.n_edges)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "hap"])
def test_edges_prints_one_json_object_and_writes_the_circuit(tmp_path, method):
    out, mib = tmp_path / "run", tmp_path / "mib"
    extra = ["--steps", "20", "--n", "8"] if method == "hap" else ["--n", "8"]
    proc = _cltrace(
        "edges", method, "--task", "ioi", "--out", str(out), "--mib", str(mib), "--json", *extra
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("method", "n_edges", "n_edges_total", "faithfulness", "kl", "seconds"):
        assert key in result
    assert result["method"] == method
    # EAP keeps 5% (sparsity 0.95) less dangling edges; 20 HAP steps stay inside its 10%
    bound = 0.1 if method == "hap" else 0.05
    assert 0 < result["n_edges"] <= round(bound * result["n_edges_total"])
    doc = json.loads((out / "circuit.json").read_text())
    assert len(doc["edges"]) == result["n_edges"]
    assert len(doc["scores"]) == result["n_edges_total"]
    _check_report(out, result)
    _check_mib(mib, out, result)


def test_edges_ep_runs_from_a_pair_file(tmp_path):
    pairs = tmp_path / "pairs.json"
    made = _cltrace("tasks", "make", "--task", "ioi", "--n", "6", "--out", str(pairs))
    assert made.returncode == 0, made.stderr
    proc = _cltrace(
        "edges", "ep", "--data", str(pairs), "--steps", "15", "--sparsity", "0.8",
        "--out", str(tmp_path / "ep"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_pairs"] == 6


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "ioi", "--sparsity", "1.5"], "--sparsity"),
        (["--task", "nope"], "unknown task"),
        ([], "--task"),
        (["--task", "ioi", "--metric", "kl"], "eap-ig"),
    ],
)
def test_edges_bad_input_is_one_sentence(tmp_path, args, needle):
    proc = _cltrace("edges", "eap", *args, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_edges_curve_prints_budgets_and_areas(tmp_path):
    proc = _cltrace(
        "edges", "curve", "--task", "ioi", "--n", "6", "--out", str(tmp_path / "c"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["budgets"]) == len(result["faithfulness"]) == 10
    assert result["faithfulness"][-1] == 1.0
    if max(result["faithfulness"]) <= 1.0:  # then |1 - f| = 1 - f and the areas add to 1
        assert abs(result["cpr"] + result["cmd"] - 1.0) < 2e-4
    assert (tmp_path / "c" / "curve.json").exists()
    cells = _cells((tmp_path / "c" / "report.html").read_text())
    assert float(cells["v-cpr"]) == result["cpr"]
    assert [float(cells[f"c-f-{i}"]) for i in range(10)] == result["faithfulness"]
    assert not any(k.startswith("g-") for k in cells)  # a curve has no single circuit


def test_edges_mib_must_be_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _cltrace(
        "edges", "eap", "--task", "ioi", "--out", str(tmp_path / "o"), "--mib", str(tmp_path / "f")
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--mib" in proc.stderr


def test_edges_curve_refuses_a_pruning_method(tmp_path):
    proc = _cltrace("edges", "curve", "--method", "ep", "--task", "ioi", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--method eap" in proc.stderr


def test_edges_without_out_writes_under_runs(tmp_path):
    proc = _cltrace("edges", "hap", "--task", "ioi", "--n", "4", "--steps", "5", "--json",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    doc = json.loads((tmp_path / "runs" / "edges-hap-ioi-s0" / "circuit.json").read_text())
    assert len(doc["edges"]) == result["n_edges"] and "faithfulness" in result
