"""Write ``circuit_tracer_reference.json``: circuit-tracer 0.5.0's own graph file for one prompt on
the bundled model and CLT (the test data of ``tests/graph/test_json_compat.py``).

Run with the Python of a separate virtual environment that has circuit-tracer 0.5.0 (cltrace is
not installed there; see benchmarks/README.md for that environment):

    CT=/path/to/ct-venv/bin/python
    $CT tests/graph/data/make_circuit_tracer_reference.py TOKEN_IDS OUT_DIR

TOKEN_IDS is the prompt's ids with the BOS, comma-separated (the test prints them). The model and
transcoder are built exactly as the attribution benchmark builds them, from the same files
cltrace reads; pruning is circuit-tracer's default (node 0.8, edge 0.98).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from _attribution_circuit_tracer import build_model  # noqa: E402

SLUG = "circuit_tracer_reference"
SCAN = "cltrace-bundled-clt"


def main() -> None:
    ids, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from circuit_tracer import attribute
    from circuit_tracer.utils.create_graph_files import create_graph_files

    tokens = torch.tensor([int(t) for t in ids.split(",")], dtype=torch.long)
    assets = ROOT / "src" / "cltrace" / "assets"
    model, _ = build_model(assets / "model", assets / "clt", False, tokens)
    graph = attribute(tokens, model, max_n_logits=10, desired_logit_prob=0.95, batch_size=64)
    # the saved tokenizer names a class transformers 4.x lacks; use the copy build_model made
    graph.cfg.tokenizer_name = model.tokenizer.name_or_path
    create_graph_files(graph, slug=SLUG, output_path=out, scan=SCAN)


if __name__ == "__main__":
    main()
