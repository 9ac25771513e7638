"""Graph JSON for the attribution-graph viewers (docs/formats.md section 2), written, read.

One ``<slug>.json`` per graph plus a ``graph-metadata.json`` listing every graph in the folder.
The pydantic models below are the format: files are validated when written and when read.

Every field is written as circuit-tracer 0.5.0's ``create_graph_files`` writes it, so its
frontend and Neuronpedia read cltrace's files unchanged: ``feature`` is ``cantor(layer, index)``
for features (those viewers decode it to find the layer and feature), -1 for errors, the
position for tokens and the vocabulary id for logits (-1 for a custom direction); ``layer`` is
the layer as a string, "E" for tokens and ``n_layers + 1`` for logits; ``reverse_ctx_idx`` is 0;
``jsNodeId`` is ``{layer}_{index}-0`` for features, ``{layer}_{pos}-0`` for errors,
``E_{token}-{pos}`` for tokens and ``L_{token}-{pos}`` for logits; ``clerp`` (the label) is the
feature's description when one is given, ``Output "tok" (p=...)`` for logits and empty
otherwise; ``metadata.prompt`` is the decoded prompt with its BOS; ``influence`` is the node's
cumulative influence share (:attr:`PruneResult.cumulative`, what the node threshold cuts),
absent for logits.

One deliberate difference: error nodes are ``{layer}_-1_{pos}``, where circuit-tracer writes
``0_{layer}_{pos}``. That older form is also the id of the layer-0 feature ``layer`` at
position ``pos``, so two nodes can share an id (small graphs have several such pairs) and a
viewer merges them. ``-1`` is the ``feature`` value of an error node in both tools, so the id
stays in the ``{layer}_{feature}_{pos}`` pattern and never collides.
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
from cltrace.graph.nodes import Graph, NodeKind, cantor, inverse_cantor
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
    transcoder_list: list[str] = Field(default_factory=list)
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
    title_prefix: str | None = None


class GraphList(BaseModel):
    """``graph-metadata.json``: the graphs of one folder."""

    graphs: list[GraphListEntry] = Field(default_factory=list)


def transcoder_scan(source: str | Path | None) -> str:
    """The ``scan`` of graphs made with the transcoder loaded from ``source``, as circuit-tracer
    names it: a hub repo id as given; a local folder's ``config.yaml`` ``scan`` entry, else the
    folder's name; the bundled CLT (``None``) is ``cltrace-bundled-clt``."""
    if source is None:
        return "cltrace-bundled-clt"
    path = Path(source)
    if not path.is_dir():
        return str(source)
    import yaml

    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        cfg = None
    scan = cfg.get("scan") if isinstance(cfg, dict) else None
    return str(scan) if scan else path.resolve().name


def _node(
    graph: Graph,
    node: int,
    prune: PruneResult,
    descriptions: Mapping[tuple[int, int], str] | None,
    decode: Callable[[list[int]], str],
) -> Node:
    idx = graph.index
    kind = idx.kind(node)
    layer, pos = idx.layer_pos(node)
    common: dict[str, Any] = dict(
        node_id=idx.node_id(node, graph.tokens),
        ctx_idx=pos,
        feature_type=FEATURE_TYPES[kind],
        influence=float(prune.cumulative[node]),
    )
    if kind == NodeKind.FEATURE:
        f = int(idx.feat_id[node])
        return Node(
            **common, feature=cantor(layer, f), layer=str(layer), jsNodeId=f"{layer}_{f}-0",
            clerp=(descriptions or {}).get((layer, f)) or "",
            activation=float(graph.activations[node]),
        )  # fmt: skip
    if kind == NodeKind.ERROR:
        return Node(**common, feature=-1, layer=str(layer), jsNodeId=f"{layer}_{pos}-0")
    token = int(graph.tokens[pos])
    if kind == NodeKind.TOKEN:
        return Node(**common, feature=pos, layer="E", jsNodeId=f"E_{token}-{pos}")
    k = node - idx.logit_start
    vocab = int(idx.logit_token[k])
    prob = float(graph.logit_probs[k])
    text = "direction (custom)" if vocab < 0 else decode([vocab])
    common["influence"] = None
    return Node(
        **common, feature=vocab, layer=str(idx.n_layers + 1), jsNodeId=f"L_{vocab}-{pos}",
        token_prob=prob, is_target_logit=k == 0, clerp=f'Output "{text}" (p={prob:.3f})',
    )  # fmt: skip


class NodeKey(TypedDict):
    """What a JSON node stands for, decoded from its fields (:func:`node_key`)."""

    kind: NodeKind
    layer: int
    """Model layer; -1 for tokens, ``n_layers`` for logits (as :meth:`NodeIndex.layer_pos`)."""
    feature: int
    """Feature index within its layer (features), the vocabulary id (tokens, logits), else -1."""
    pos: int


_KINDS = {v: k for k, v in FEATURE_TYPES.items()}


def node_key(node: Node) -> NodeKey:
    """Decode a node of a graph file back to (kind, layer, feature, position): the inverse of
    the export, whichever tool wrote the file (``feature`` is Cantor-paired for features)."""
    kind = _KINDS.get(node.feature_type)
    if kind is None:
        raise CltraceError(
            f"node {node.node_id!r} has feature_type {node.feature_type!r}; expected one of "
            f"{sorted(_KINDS)}."
        )
    if kind == NodeKind.FEATURE:
        layer, f = inverse_cantor(node.feature)
        return NodeKey(kind=kind, layer=layer, feature=f, pos=node.ctx_idx)
    if kind == NodeKind.ERROR:
        return NodeKey(kind=kind, layer=int(node.layer), feature=-1, pos=node.ctx_idx)
    if kind == NodeKind.TOKEN:
        token = int(node.node_id.split("_")[1])
        return NodeKey(kind=kind, layer=-1, feature=token, pos=node.ctx_idx)
    return NodeKey(kind=kind, layer=int(node.layer) - 1, feature=node.feature, pos=node.ctx_idx)


def graph_document(
    graph: Graph,
    slug: str,
    prune: PruneResult | None = None,
    scan: str | None = None,
    descriptions: Mapping[tuple[int, int], str] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    info: dict[str, Any] | None = None,
) -> GraphFile:
    """The graph JSON of ``graph``, restricted to the nodes and edges ``prune`` keeps.

    ``prune=None`` exports the whole graph (every node, every non-zero edge). ``descriptions``
    maps ``(layer, feature)`` to a label; ``decode`` turns vocabulary ids into text (for logit
    labels); ``info`` is merged into ``metadata.info``.
    """
    if not _SLUG.fullmatch(slug):
        raise CltraceError(
            f"graph slug {slug!r} is not a plain file name; use letters, digits, '.', '_' or '-'."
        )
    prune = prune or prune_graph(graph, GraphPruneConfig(node_threshold=1.0, edge_threshold=1.0))
    ids_text = decode or (lambda ids: "".join(f"tok{t}" for t in ids))
    idx = graph.index
    kept = prune.node_mask.nonzero().flatten().tolist()
    nodes = [_node(graph, n, prune, descriptions, ids_text) for n in kept]
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
    tokens = graph.tokens.tolist()
    texts = graph.str_tokens or [ids_text([t]) for t in tokens]
    meta = Metadata(
        slug=slug,
        scan=scan or graph.transcoder_name or graph.model_name or "unknown",
        prompt_tokens=texts,
        prompt=decode(tokens) if decode else "".join(texts),
        node_threshold=cfg.node_threshold,
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
    atomic_write_text(path, graph_json_text(doc))
    listing_path = out / "graph-metadata.json"
    listing = read_graph_list(listing_path) if listing_path.exists() else GraphList()
    entry = _list_entry(doc.metadata, title_prefix)
    listing.graphs = [g for g in listing.graphs if g.slug != entry.slug] + [entry]
    atomic_write_text(listing_path, listing.model_dump_json(indent=1, exclude_none=True))
    return path


_OPTIONAL_METADATA = ("info", "generation_settings", "pruning_settings", "feature_details")


def graph_json_text(doc: GraphFile) -> str:
    """The file's text: every field circuit-tracer writes, and the optional metadata fields of
    the format only when set (the format allows them absent, not null)."""
    unset = {k for k in _OPTIONAL_METADATA if getattr(doc.metadata, k) is None}
    return doc.model_dump_json(indent=1, exclude={"metadata": unset})


def _list_entry(meta: Metadata, title_prefix: str = "") -> GraphListEntry:
    """A graph's ``graph-metadata.json`` entry: its metadata as circuit-tracer lists it."""
    keep = ("slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold",
            "schema_version")  # fmt: skip
    fields = {k: getattr(meta, k) for k in keep}
    return GraphListEntry(**fields, title_prefix=title_prefix or None)


def write_graph_list(folder: str | Path, title_prefix: str = "") -> Path:
    """Write ``graph-metadata.json`` listing every graph file directly in ``folder`` (sorted by
    slug); a file that is not a graph is left out. Returns the listing's path."""
    out = Path(folder)
    if not out.is_dir():
        raise CltraceError(f"{out} is not a folder; pass the folder that holds the graph files.")
    entries = []
    for path in sorted(out.glob("*.json")):
        if path.name == "graph-metadata.json":
            continue
        try:
            doc = load_graph_json(path)
        except CltraceError:
            continue
        entries.append(_list_entry(doc.metadata, title_prefix))
    listing = out / "graph-metadata.json"
    atomic_write_text(
        listing, GraphList(graphs=entries).model_dump_json(indent=1, exclude_none=True)
    )
    return listing


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
    decode: Callable[[list[int]], str] | None = None,
    descriptions: Mapping[tuple[int, int], str] | None = None,
) -> Path:
    """Write the pruned graph to ``path`` (see :func:`graph_paths`) and list it in the folder's
    ``graph-metadata.json``; returns the graph file."""
    out_dir, slug = graph_paths(path)
    doc = graph_document(graph, slug, result, scan=scan, decode=decode, descriptions=descriptions)
    return write_graph_json(doc, out_dir)


def read_descriptions(path: str | Path) -> dict[tuple[int, int], str]:
    """Feature labels for ``clerp`` from a PIE run: its directory or its ``descriptions.json``
    (``{"<layer>/<feature>": {"description": ...}}``; plain strings are accepted as values)."""
    p = Path(path)
    file = p / "descriptions.json" if p.is_dir() else p
    hint = "pass a PIE run directory after stage II, or its descriptions.json."
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise CltraceError(f"{file} does not exist; {hint}") from None
    except (OSError, ValueError) as exc:
        raise CltraceError(f"{file} cannot be read as JSON ({exc}); {hint}") from None
    if not isinstance(data, dict):
        raise CltraceError(f"{file} is not a mapping of features to descriptions; {hint}")
    out = {}
    for key, value in data.items():
        layer, _, feature = str(key).partition("/")
        text = value.get("description") if isinstance(value, dict) else value
        if not (layer.isdigit() and feature.isdigit() and isinstance(text, str)):
            raise CltraceError(
                f"{file} has an entry {key!r} that is not '<layer>/<feature>' with a "
                f"description; {hint}"
            )
        if text:
            out[(int(layer), int(feature))] = text
    return out


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
