"""Served folders for the viewer tests: graph files and a PIE-run layout with its feature files."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

from cltrace.graph.export import graph_document, node_key, write_graph_json
from cltrace.report.serve import make_server, served_url
from tests.graph.handmade import handmade_graph


def write_handmade(folder: Path, slug: str = "hand") -> Path:
    return write_graph_json(graph_document(handmade_graph(), slug), folder)


def feature_keys(graph_file: Path) -> list[tuple[int, int]]:
    """(layer, feature) of every feature node of a graph file, in file order."""
    doc = json.loads(graph_file.read_text())
    from cltrace.graph.export import Node

    keys = [node_key(Node.model_validate(n)) for n in doc["nodes"]]
    return [(k["layer"], k["feature"]) for k in keys if k["kind"] == 0]


def make_run(run: Path, features: list[tuple[int, int]], kept: int = 2) -> dict[str, str]:
    """The files of a PIE run directory that the viewer reads, in the layouts stage I, II and III
    write them (kept_features.json, descriptions.json, scores.json, features/<l>_<f>.json);
    returns the description of each feature by ``"layer/feature"``."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"task": "ioi", "n": 2}))
    (run / "results.json").write_text(json.dumps({"methods": {}, "budgets": [10]}))
    (run / "report.html").write_text("<html><body><h1>PIE report</h1></body></html>")
    rows = [
        {"layer": layer, "feature": f, "id": 0, "kept_count": 2, "occurrences": 3,
         "mean_abs_score": 1.0, "top_positions": [1]}
        for layer, f in features[:kept]
    ]  # fmt: skip
    (run / "kept_features.json").write_text(
        json.dumps({"method": "fap", "budget": 10, "features": rows})
    )
    descs = {f"{layer}/{f}": f"test feature {layer}-{f} says hello" for layer, f in features}
    (run / "descriptions.json").write_text(json.dumps({
        k: {"layer": int(k.split("/")[0]), "feature": int(k.split("/")[1]), "description": d,
            "explainer": "weightlens", "failure": None, "frequency": 0.1, "examples_html": [],
            "details": {}}
        for k, d in descs.items()
    }))  # fmt: skip
    (run / "scores.json").write_text(json.dumps({
        k: {"clarity": 0.5, "responsiveness": 0.25, "purity": None, "reasons": {},
            "rater": "lexical", "description": d}
        for k, d in descs.items()
    }))  # fmt: skip
    (run / "features").mkdir(exist_ok=True)
    for layer, f in features:
        (run / "features" / f"{layer}_{f}.json").write_text(json.dumps({
            "index": f, "layer": layer, "id": 0, "frequency": 0.1, "max_activation": 2.0,
            "examples_quantiles": [{"quantile_name": "top", "examples": [
                {"tokens": ["The", " cat", " sat"], "tokens_acts_list": [0.0, 2.0, 0.5]}]}],
            "top_logits": [{"token": " up", "id": 5, "value": 1.5}],
            "bottom_logits": [{"token": " down", "id": 6, "value": -1.5}],
            "description": descs[f"{layer}/{f}"],
        }))  # fmt: skip
    return descs


@contextmanager
def running(path: Path):
    """A viewer server for ``path`` on a free port, in a thread; yields its base URL."""
    server = make_server(path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served_url(server)
    finally:
        server.shutdown()
        server.server_close()
