"""``cltrace edges`` through the installed command."""

from __future__ import annotations

import json
import subprocess

import pytest


def _cltrace(*args, cwd=None):
    return subprocess.run(["cltrace", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "hap"])
def test_edges_prints_one_json_object_and_writes_the_circuit(tmp_path, method):
    out = tmp_path / "run"
    extra = ["--steps", "20", "--n", "8"] if method == "hap" else ["--n", "8"]
    proc = _cltrace("edges", method, "--task", "ioi", "--out", str(out), "--json", *extra)
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


def test_edges_curve_refuses_a_pruning_method(tmp_path):
    proc = _cltrace("edges", "curve", "--method", "ep", "--task", "ioi", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--method eap" in proc.stderr
