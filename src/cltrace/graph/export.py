"""Graph JSON for the attribution-graph viewers (docs/formats.md section 2), written, read.

One ``<slug>.json`` per graph plus a ``graph-metadata.json`` listing every graph in the folder.
The pydantic models below are the format: files are validated when written and when read.

Field conventions (those of circuit-tracer's files, so Neuronpedia-style viewers read them):
``feature`` is the feature index for features, -1 for errors, the position for tokens and the
vocabulary id for logits (-1 for a custom direction); ``layer`` is the layer as a string, "E" for
tokens and ``n_layers + 1`` for logits; ``influence`` is the node's cumulative influence share
(:attr:`PruneResult.cumulative`, the quantity the node threshold cuts), absent for logits.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypedDict

import cltrace
from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text
from cltrace.graph.nodes import Graph, NodeKind
from cltrace.graph.prune import GraphPruneConfig, PruneResult, prune_graph

SCHEMA_VERSION = 1
FEATURE_TYPES = {
    NodeKind.FEATURE: "cross layer transcoder",
    NodeKind.ERROR: "mlp reconstruction error",
    NodeKind.TOKEN: "embedding",
    NodeKind.LOGIT: "logit",
}
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    slug: str
    scan: str
    prompt_tokens: list[str]
    prompt: str
    node_threshold: float | None = None
    schema_version: int = SCHEMA_VERSION
    transcoder_list: list[str] | None = None
    info: dict[str, Any] | None = None
    generation_settings: dict[str, Any] | None = None
    pruning_settings: dict[str, Any] | None = None
    feature_details: dict[str, Any] | None = None


class QParams(BaseModel):
    pinnedIds: list[str] = []
    supernodes: list[list[str]] = []
    linkType: str = "both"
    clickedId: str = ""
    sg_pos: str = ""


class Node(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: str
    feature: int
    layer: str
    ctx_idx: int
    feature_type: str
    token_prob: float = 0.0
    is_target_logit: bool = False
    run_idx: int = 0
    reverse_ctx_idx: int = 0
    jsNodeId: str
    clerp: str = ""
    influence: float | None = None
    activation: float | None = None


class Link(TypedDict):
    """An edge ``source -> target`` (node ids) with its signed attribution weight.

    A typed dict rather than a model: graphs carry up to millions of links, and validating
    dicts is several times faster than building an object per link.
    """

    source: str
    target: str
    weight: float


class GraphFile(BaseModel):
    """One ``<slug>.json``."""

    metadata: Metadata
    qParams: QParams = Field(default_factory=QParams)
    nodes: list[Node]
    links: list[Link]


class GraphListEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    slug: str
    scan: str
    prompt_tokens: list[str]
    prompt: str
    title_prefix: str = ""


class GraphList(BaseModel):
    """``graph-metadata.json``: the graphs of one folder."""

    graphs: list[GraphListEntry] = Field(default_factory=list)


def display_token(text: str) -> str:
    """A token as viewers show it: line breaks and tabs made visible."""
    return text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "↵")


def _node(
    graph: Graph,
    node: int,
    prune: PruneResult,
    descriptions: Mapping[tuple[int, int], str] | None,
    decode: Callable[[int], str],
) -> Node:
    idx = graph.index
    kind = idx.kind(node)
    layer, pos = idx.layer_pos(node)
    node_id = idx.node_id(node, graph.tokens)
    common: dict[str, Any] = dict(
        node_id=node_id,
        ctx_idx=pos,
        feature_type=FEATURE_TYPES[kind],
        reverse_ctx_idx=idx.n_pos - 1 - pos,
        influence=float(prune.cumulative[node]),
    )
    if kind == NodeKind.FEATURE:
        f = int(idx.feat_id[node])
        label = (descriptions or {}).get((layer, f)) or f"L{layer} F{f}"
        return Node(
            **common, feature=f, layer=str(layer), jsNodeId=f"{layer}_{f}-{pos}", clerp=label,
            activation=float(graph.activations[node]),
        )  # fmt: skip
    if kind == NodeKind.ERROR:
        return Node(
            **common, feature=-1, layer=str(layer), jsNodeId=f"{layer}_-1-{pos}",
            clerp=f"Err L{layer}",
        )  # fmt: skip
    token = int(graph.tokens[pos])
    if kind == NodeKind.TOKEN:
        text = graph.str_tokens[pos] if pos < len(graph.str_tokens) else decode(token)
        return Node(
            **common, feature=pos, layer="E", jsNodeId=f"E_{token}-{pos}",
            clerp=display_token(text),
        )  # fmt: skip
    k = node - idx.logit_start
    vocab = int(idx.logit_token[k])
    prob = float(graph.logit_probs[k])
    label = "direction (custom)" if vocab < 0 else f'logit "{display_token(decode(vocab))}"'
    common["influence"] = None
    return Node(
        **common, feature=vocab, layer=str(idx.n_layers + 1), jsNodeId=f"L_{vocab}-{pos}",
        token_prob=prob, is_target_logit=k == 0, clerp=f"{label} (p={prob:.3f})",
    )  # fmt: skip


def graph_document(
    graph: Graph,
    slug: str,
    prune: PruneResult | None = None,
    scan: str | None = None,
    descriptions: Mapping[tuple[int, int], str] | None = None,
    decode: Callable[[int], str] | None = None,
    info: dict[str, Any] | None = None,
) -> GraphFile:
    """The graph JSON of ``graph``, restricted to the nodes and edges ``prune`` keeps.

    ``prune=None`` exports the whole graph (every node, every non-zero edge). ``descriptions``
    maps ``(layer, feature)`` to a label; ``decode`` turns a vocabulary id into text (for logit
    labels); ``info`` is merged into ``metadata.info``.
    """
    if not _SLUG.fullmatch(slug):
        raise CltraceError(
            f"graph slug {slug!r} is not a plain file name; use letters, digits, '.', '_' or '-'."
        )
    prune = prune or prune_graph(graph, GraphPruneConfig(node_threshold=1.0, edge_threshold=1.0))
    decode = decode or (lambda t: f"tok{t}")
    idx = graph.index
    kept = prune.node_mask.nonzero().flatten().tolist()
    nodes = [_node(graph, n, prune, descriptions, decode) for n in kept]
    ids = {n: node.node_id for n, node in zip(kept, nodes, strict=True)}
    targets = idx.target_nodes()
    rows, cols = prune.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency.detach()[rows, cols].tolist()
    target_ids = [ids.get(int(t)) for t in targets]
    links = [
        {"source": ids[s], "target": target_ids[r], "weight": w}
        for r, s, w in zip(rows.tolist(), cols.tolist(), weights, strict=True)
    ]
    cfg = prune.config
    texts = graph.str_tokens or [decode(int(t)) for t in graph.tokens]
    meta = Metadata(
        slug=slug,
        scan=scan or graph.model_name or "unknown",
        prompt_tokens=[display_token(t) for t in texts],
        prompt=graph.prompt,
        node_threshold=cfg.node_threshold,
        transcoder_list=[graph.transcoder_name] if graph.transcoder_name else None,
        info={
            "generator": {"name": "cltrace", "version": cltrace.__version__},
            "create_time_ms": int(time.time() * 1000),
            **(info or {}),
        },
        pruning_settings={
            "node_threshold": cfg.node_threshold,
            "edge_threshold": cfg.edge_threshold,
        },
    )
    return GraphFile.model_validate({"metadata": meta, "nodes": nodes, "links": links})


def write_graph_json(doc: GraphFile, out_dir: str | Path, title_prefix: str = "") -> Path:
    """Write ``<slug>.json`` and add (or replace) its entry in ``graph-metadata.json``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CltraceError(f"output folder {out} is a file; pass a directory for the graph JSON.")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{doc.metadata.slug}.json"
    atomic_write_text(path, doc.model_dump_json(indent=1))
    listing_path = out / "graph-metadata.json"
    listing = read_graph_list(listing_path) if listing_path.exists() else GraphList()
    m = doc.metadata
    entry = GraphListEntry(
        slug=m.slug, scan=m.scan, prompt_tokens=m.prompt_tokens, prompt=m.prompt,
        title_prefix=title_prefix,
    )  # fmt: skip
    listing.graphs = [g for g in listing.graphs if g.slug != m.slug] + [entry]
    atomic_write_text(listing_path, listing.model_dump_json(indent=1))
    return path


def graph_paths(path: str | Path) -> tuple[Path, str]:
    """Where a graph goes: ``dir/NAME.json`` → (dir, "NAME"); any other path is a folder that
    gets ``graph.json``."""
    p = Path(path)
    if p.suffix == ".json":
        return p.parent, p.stem
    return p, "graph"


def save_graph(
    graph: Graph,
    result: PruneResult,
    path: str | Path,
    scan: str | None = None,
    decode: Callable[[int], str] | None = None,
) -> Path:
    """Write the pruned graph to ``path`` (see :func:`graph_paths`) and list it in the folder's
    ``graph-metadata.json``; returns the graph file."""
    out_dir, slug = graph_paths(path)
    return write_graph_json(graph_document(graph, slug, result, scan=scan, decode=decode), out_dir)


def _read(path: str | Path, model: type[BaseModel], what: str):
    p = Path(path)
    try:
        return model.model_validate(json.loads(p.read_text()))
    except FileNotFoundError as exc:
        raise CltraceError(
            f"{what} {p} does not exist; pass the path of a file cltrace wrote."
        ) from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise CltraceError(
            f"{what} {p} is not valid ({first}); pass a graph file in the graph JSON layout "
            "(docs/formats.md)."
        ) from exc


def load_graph_json(path: str | Path) -> GraphFile:
    """Read and validate one ``<slug>.json``."""
    return _read(path, GraphFile, "graph JSON")


def read_graph_list(path: str | Path) -> GraphList:
    """Read and validate a ``graph-metadata.json``."""
    return _read(path, GraphList, "graph list")
