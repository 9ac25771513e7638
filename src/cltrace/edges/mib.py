"""Circuits in the layout of the MIB circuit-localisation track (Mueller et al. 2025).

MIB reads a circuit as *graph JSON*: ``{"cfg": {...}, "nodes": {name: {"in_graph"}}, "edges":
{name: {"score", "in_graph"}}}`` over the same graph as :class:`EdgeGraph` (writers ``input``,
``a{l}.h{h}``, ``m{l}``; readers a head's ``<q>``, ``<k>``, ``<v>``, an MLP, ``logits``). A
submission holds one folder per task and model, ``{task}_{model}``, with either one file of
importance scores for every edge (MIB then takes the top edges by ``|score|`` at each budget) or
one circuit per budget (0.1% ... 50% of the edges, each keeping at most that many).

:func:`write_submission` writes both under ``importances/`` and ``multiple_circuits/``;
:func:`read_graph_json` reads any such file back and checks it against the graph.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cltrace.edges.evaluate import top_edges
from cltrace.edges.graph import EdgeGraph
from cltrace.errors import CltraceError
from cltrace.files import atomic_write_json, read_json

MIB_BUDGETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""Budgets of a multiple-circuit submission, as fractions of the graph's edges."""


def budget_size(fraction: float, n_edges: int) -> int:
    """Edges a circuit of budget ``fraction`` keeps: ``floor(fraction * n)``, as MIB counts."""
    return int(math.floor(fraction * n_edges + 1e-9))


def nodes_in_graph(graph: EdgeGraph, keep: Tensor) -> dict[str, bool]:
    """MIB's node rule: a writer is in the circuit when it has a kept outgoing edge and a kept
    incoming one (``input`` needs none); ``logits`` always is."""
    keep = keep.bool().cpu()
    out = torch.zeros(graph.n_writers + 1, dtype=torch.bool)
    out[graph.edge_writer[keep]] = True
    inc = torch.zeros(graph.n_writers + 1, dtype=torch.bool)
    inc[graph.edge_reader_node[keep]] = True
    inc[0] = True
    flags = {n: bool(out[i] & inc[i]) for i, n in enumerate(graph.mib_node_names)}
    flags["logits"] = True
    return flags


def graph_json(graph: EdgeGraph, keep: Tensor, d_model: int, scores: Tensor | None = None) -> dict:
    """The MIB graph JSON of circuit ``keep`` (bool [n_edges]); with ``scores`` every edge
    carries its float score (an importance file), without them only ``in_graph``."""
    keep = keep.bool().cpu()
    if scores is not None:
        s = scores.detach().double().cpu()
        if not torch.isfinite(s).all():
            raise ValueError("MIB scores must be finite")
    edges = {}
    for i, name in enumerate(graph.mib_edge_names):
        entry: dict = {"in_graph": bool(keep[i])}
        if scores is not None:
            entry = {"score": float(s[i]), **entry}
        edges[name] = entry
    return {
        "cfg": {
            "n_layers": graph.n_layers,
            "n_heads": graph.n_heads,
            "parallel_attn_mlp": False,
            "d_model": int(d_model),
        },
        "nodes": {n: {"in_graph": f} for n, f in nodes_in_graph(graph, keep).items()},
        "edges": edges,
    }


@dataclass
class MibCircuit:
    """A graph JSON file read back."""

    graph: EdgeGraph
    d_model: int
    in_graph: Tensor
    """Bool [n_edges] in :class:`EdgeGraph`'s flat order."""
    scores: Tensor | None
    """Float64 [n_edges], or None when the file has no scores."""
    nodes: dict[str, bool]


def read_graph_json(path: str | Path) -> MibCircuit:
    """Read a MIB graph JSON file and check that its edges are exactly the graph's."""
    hint = "pass a graph JSON file written by `cltrace edges ... --mib` or MIB's Graph.to_json."
    doc = read_json(path, hint)
    if not isinstance(doc, dict) or not {"cfg", "nodes", "edges"} <= doc.keys():
        raise CltraceError(f"{path} lacks the cfg, nodes and edges keys of a graph JSON; {hint}")
    cfg = doc["cfg"]
    try:
        graph = EdgeGraph(int(cfg["n_layers"]), int(cfg["n_heads"]))
        d_model = int(cfg.get("d_model", 0))
    except (KeyError, TypeError, ValueError):
        raise CltraceError(f"{path} has no integer cfg.n_layers and cfg.n_heads; {hint}") from None
    if cfg.get("parallel_attn_mlp"):
        raise CltraceError(
            f"{path} describes a model with parallel attention and MLP, whose graph cltrace does "
            "not build; export it from a sequential model."
        )
    edges = doc["edges"]
    names = graph.mib_edge_names
    missing = [n for n in names if n not in edges]
    extra = set(edges) - set(names)
    if missing or extra:
        example = missing[0] if missing else sorted(extra)[0]
        raise CltraceError(
            f"{path} has {len(missing)} edges missing and {len(extra)} unknown for a "
            f"{graph.n_layers}-layer, {graph.n_heads}-head graph (e.g. {example!r}); {hint}"
        )
    in_graph = torch.tensor([bool(edges[n].get("in_graph", False)) for n in names])
    has_scores = [("score" in edges[n]) for n in names]
    scores = None
    if any(has_scores):
        if not all(has_scores):
            raise CltraceError(f"{path} gives scores for some edges only; {hint}")
        scores = torch.tensor([float(edges[n]["score"]) for n in names], dtype=torch.float64)
    nodes = {str(k): bool(v.get("in_graph", False)) for k, v in doc["nodes"].items()}
    return MibCircuit(graph, d_model, in_graph, scores, nodes)


def folder_name(task: str, model: str) -> str:
    """``{task}_{model}``: MIB splits the folder name at its underscore, so neither part may
    hold one (they become hyphens); a model path or hub id keeps its last part, lower-cased."""
    task_part = re.sub(r"[^a-z0-9.-]+", "-", task.lower().replace("_", "-")).strip("-")
    model_part = model.rstrip("/").split("/")[-1].lower()
    model_part = re.sub(r"[^a-z0-9.-]+", "-", model_part).strip("-")
    return f"{task_part or 'task'}_{model_part or 'model'}"


def circuit_file_name(fraction: float) -> str:
    """File name of the circuit of budget ``fraction`` in a multiple-circuit folder."""
    return f"{fraction * 100:g}pct.json"


def write_submission(
    root: str | Path,
    graph: EdgeGraph,
    importance: Tensor,
    keep: Tensor,
    d_model: int,
    task: str,
    model: str,
) -> dict[str, Path]:
    """Write a circuit in both MIB submission layouts under ``root``:

    * ``importances/{task}_{model}/importances.json``: every edge's ``importance`` (MIB ranks
      by its absolute value) with ``in_graph`` marking the run's own circuit ``keep``;
    * ``multiple_circuits/{task}_{model}/{p}pct.json`` for each budget ``p`` of
      :data:`MIB_BUDGETS`: the top ``floor(p * n_edges)`` edges by ``|importance|``.

    Returns the folder of each layout."""
    root = Path(root)
    name = folder_name(task, model)
    imp_dir = root / "importances" / name
    multi_dir = root / "multiple_circuits" / name
    imp_dir.mkdir(parents=True, exist_ok=True)
    multi_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        imp_dir / "importances.json", graph_json(graph, keep, d_model, importance), indent=None
    )
    for fraction in MIB_BUDGETS:
        circuit = top_edges(importance, budget_size(fraction, graph.n_edges), prune=False)
        atomic_write_json(
            multi_dir / circuit_file_name(fraction),
            graph_json(graph, circuit, d_model),
            indent=None,
        )
    return {"importances": imp_dir, "multiple_circuits": multi_dir}


__all__ = [
    "MIB_BUDGETS",
    "MibCircuit",
    "budget_size",
    "circuit_file_name",
    "folder_name",
    "graph_json",
    "nodes_in_graph",
    "read_graph_json",
    "write_submission",
]
