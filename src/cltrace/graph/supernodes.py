"""Supernodes: named groups of graph nodes read and written as one semantic unit.

A supernode is a name and a list of node ids (docs/formats.md section 2); graph JSON keeps them
in ``qParams.supernodes`` as ``[name, id, id, ...]`` lists, which graph viewers show as one box.

* **manual**: :func:`read_supernodes` / :func:`with_supernodes` / :func:`save_supernodes`;
* **automatic**: :func:`auto_supernodes` groups feature nodes by average-linkage clustering of
  a similarity that averages what is available: cosine of the features' total decoder writes,
  co-activation cosine over a corpus (``E[a_s a_t] / sqrt(E[a_s^2] E[a_t^2])``), and word overlap
  of their descriptions; it stops at a similarity threshold or at a target number of groups;
* **coarsening**: :func:`coarsen` replaces each supernode's members by one node whose influence
  and activation are the members' sums and whose edges are the sums of the members' edges
  (edges inside a supernode are dropped).

Intervening on a supernode patches all its members in one pass
(:func:`cltrace.global_view.supernode_patch.supernode_interventions`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from cltrace.errors import CltraceError
from cltrace.files import atomic_write_text
from cltrace.graph.export import FEATURE_TYPES, GraphFile, Node, load_graph_json, node_key
from cltrace.graph.nodes import NodeKind

SUPERNODE_TYPE = "supernode"
"""``feature_type`` of a coarsened graph's supernode nodes."""
_FEATURE = FEATURE_TYPES[NodeKind.FEATURE]


@dataclass
class Supernode:
    """A named group of node ids."""

    name: str
    members: list[str]

    def to_qparams(self) -> list[str]:
        return [self.name, *self.members]


def feature_key(node_id: str) -> tuple[int, int, int]:
    """``(layer, feature, position)`` of a feature node id ``{layer}_{feature}_{pos}``."""
    m = re.fullmatch(r"(\d+)_(\d+)_(\d+)", node_id)
    if not m:
        raise CltraceError(
            f"node {node_id!r} is not a feature node id (layer_feature_position); only feature "
            "nodes can be grouped or patched."
        )
    layer, feature, pos = (int(x) for x in m.groups())
    return layer, feature, pos


def check_supernodes(doc: GraphFile, supernodes: Sequence[Supernode]) -> None:
    """Every member exists in the graph, no node is in two supernodes, names are distinct."""
    ids = {n.node_id for n in doc.nodes}
    owner: dict[str, str] = {}
    names: set[str] = set()
    for sn in supernodes:
        if not sn.name or sn.name in names:
            raise CltraceError(
                f"supernode name {sn.name!r} is empty or used twice; give each supernode its "
                "own name."
            )
        names.add(sn.name)
        if not sn.members:
            raise CltraceError(f"supernode {sn.name!r} has no members; list at least one node.")
        for m in sn.members:
            if m not in ids:
                raise CltraceError(
                    f"supernode {sn.name!r} names node {m!r}, which is not in the graph; use "
                    "node ids from the graph's nodes."
                )
            if m in owner:
                raise CltraceError(
                    f"node {m!r} is in supernodes {owner[m]!r} and {sn.name!r}; put each node "
                    "in one supernode."
                )
            owner[m] = sn.name


def read_supernodes(doc: GraphFile) -> list[Supernode]:
    """The supernodes stored in a graph's ``qParams.supernodes``."""
    out = []
    for entry in doc.qParams.supernodes:
        if not entry:
            continue
        out.append(Supernode(str(entry[0]), [str(x) for x in entry[1:]]))
    check_supernodes(doc, out)
    return out


def with_supernodes(doc: GraphFile, supernodes: Sequence[Supernode]) -> GraphFile:
    """A copy of ``doc`` whose ``qParams.supernodes`` are ``supernodes`` (checked)."""
    check_supernodes(doc, supernodes)
    new = doc.model_copy(deep=True)
    new.qParams.supernodes = [sn.to_qparams() for sn in supernodes]
    return new


def save_supernodes(
    graph_path: str | Path, supernodes: Sequence[Supernode], out: str | Path | None = None
) -> Path:
    """Write the graph of ``graph_path`` with these supernodes to ``out`` (default: in place)."""
    doc = with_supernodes(load_graph_json(graph_path), supernodes)
    path = Path(out) if out is not None else Path(graph_path)
    atomic_write_text(path, doc.model_dump_json(indent=1))
    return path


# ----------------------------------------------------------------------------- automatic
def decoder_similarity(transcoder, features: Sequence[tuple[int, int]]) -> Float[np.ndarray, "n n"]:
    """Cosine between the features' total writes (decoders summed over target layers)."""
    vecs = torch.zeros(len(features), transcoder.d_model)
    with torch.no_grad():
        for i, (layer, f) in enumerate(features):
            vecs[i] = transcoder.decoder_rows(layer, torch.tensor([f]))[0].float().sum(0).cpu()
    vecs = vecs / vecs.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (vecs @ vecs.T).double().numpy()


def coactivation_similarity(
    prod: Float[np.ndarray, "n n"],
) -> Float[np.ndarray, "n n"]:
    """``E[a_s a_t] / sqrt(E[a_s^2] E[a_t^2])`` from a symmetric matrix of summed products."""
    d = np.sqrt(np.clip(np.diag(prod), 1e-300, None))
    return prod / d[:, None] / d[None, :]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 1}


def description_similarity(descriptions: Sequence[str]) -> Float[np.ndarray, "n n"]:
    """Word-set Jaccard similarity of descriptions (0 where either is empty)."""
    sets = [_words(d) for d in descriptions]
    n = len(sets)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            u = sets[i] | sets[j]
            out[i, j] = len(sets[i] & sets[j]) / len(u) if u else 0.0
    return out


def average_linkage(
    sim: Float[np.ndarray, "n n"], threshold: float | None = None, n_groups: int | None = None
) -> list[list[int]]:
    """Agglomerative clustering with average linkage on a similarity matrix.

    Merges the most similar pair of clusters while their average similarity is at least
    ``threshold``, or until ``n_groups`` clusters remain (whichever is given; both: stop at the
    first). Returns the clusters (index lists, each sorted, ordered by first member).
    """
    if threshold is None and n_groups is None:
        raise CltraceError("automatic supernodes need a threshold or a target count; give one.")
    n = sim.shape[0]
    clusters: list[list[int]] = [[i] for i in range(n)]
    # total similarity between clusters (sum over member pairs); average = total / (|a| |b|)
    total = sim.astype(np.float64).copy()
    alive = list(range(n))
    while len(alive) > 1 and (n_groups is None or len(alive) > n_groups):
        best, pair = -np.inf, None
        for ai, a in enumerate(alive):
            for b in alive[ai + 1 :]:
                avg = total[a, b] / (len(clusters[a]) * len(clusters[b]))
                if avg > best:
                    best, pair = avg, (a, b)
        if threshold is not None and best < threshold:
            break
        a, b = pair  # type: ignore[misc]
        clusters[a] = sorted(clusters[a] + clusters[b])
        total[a, :] += total[b, :]
        total[:, a] += total[:, b]
        alive.remove(b)
    return sorted((clusters[a] for a in alive), key=lambda c: c[0])


def auto_supernodes(
    doc: GraphFile,
    transcoder=None,
    coactivation: Mapping[tuple[int, int], Mapping[tuple[int, int], float]] | None = None,
    descriptions: Mapping[tuple[int, int], str] | None = None,
    threshold: float | None = 0.5,
    n_groups: int | None = None,
) -> list[Supernode]:
    """Group the graph's feature nodes (see the module docstring); groups of one are dropped.

    ``transcoder`` gives decoder cosines; ``coactivation[s][t]`` summed products (with the
    diagonal) give co-activation cosines; ``descriptions`` (or, failing those, the nodes'
    labels when they are not the default ``L.. F..``) give word overlap. At least one source
    is needed.
    """
    nodes = [n for n in doc.nodes if n.feature_type == _FEATURE]
    feats = [(node_key(n)["layer"], node_key(n)["feature"]) for n in nodes]
    if len(nodes) < 2:
        return []
    mats = []
    if transcoder is not None:
        mats.append(decoder_similarity(transcoder, feats))
    if coactivation is not None:
        prod = np.array([[coactivation.get(a, {}).get(b, 0.0) for b in feats] for a in feats])
        mats.append(coactivation_similarity(prod))
    texts = [
        (descriptions or {}).get(f) or ("" if re.fullmatch(r"L\d+ F\d+", n.clerp) else n.clerp)
        for f, n in zip(feats, nodes, strict=True)
    ]
    if any(texts):
        mats.append(description_similarity(texts))
    if not mats:
        raise CltraceError(
            "automatic supernodes need a transcoder, co-activation statistics or feature "
            "descriptions; pass at least one."
        )
    sim = np.mean(mats, axis=0)
    groups = [g for g in average_linkage(sim, threshold, n_groups) if len(g) > 1]
    out = []
    for i, g in enumerate(groups):
        label = texts[g[0]] or f"L{feats[g[0]][0]} F{feats[g[0]][1]}"
        out.append(Supernode(f"{label} (group {i + 1})", [nodes[j].node_id for j in g]))
    return out


# ----------------------------------------------------------------------------- coarsening
def coarsen(doc: GraphFile, supernodes: Sequence[Supernode]) -> GraphFile:
    """The graph with each supernode's members merged into one node.

    The new node has id ``SN_<k>`` (k counts supernodes from 1), the supernode's name as its
    label, the summed influence and activation of its members, layer and position of its
    earliest member. An edge between two merged nodes is the sum of the member edges; edges
    inside one supernode are dropped. ``qParams.supernodes`` of the result is empty.
    """
    check_supernodes(doc, supernodes)
    rename: dict[str, str] = {}
    by_id = {n.node_id: n for n in doc.nodes}
    new_nodes: list[Node] = []
    merged: dict[str, Node] = {}
    for k, sn in enumerate(supernodes, start=1):
        sid = f"SN_{k}"
        members = [by_id[m] for m in sn.members]
        for m in sn.members:
            rename[m] = sid
        first = min(members, key=lambda n: (_layer_num(n.layer), n.ctx_idx))
        infl = [m.influence for m in members if m.influence is not None]
        acts = [m.activation for m in members if m.activation is not None]
        merged[sid] = Node(
            node_id=sid, feature=-1, layer=first.layer, ctx_idx=first.ctx_idx,
            feature_type=SUPERNODE_TYPE, jsNodeId=f"{sid}-{first.ctx_idx}", clerp=sn.name,
            influence=float(sum(infl)) if infl else None,
            activation=float(sum(acts)) if acts else None,
            reverse_ctx_idx=first.reverse_ctx_idx,
            members=list(sn.members),  # type: ignore[call-arg]  # an extra field Node allows
        )  # fmt: skip
    emitted: set[str] = set()
    for n in doc.nodes:
        into = rename.get(n.node_id)
        if into is None:
            new_nodes.append(n.model_copy())
        elif into not in emitted:
            new_nodes.append(merged[into])
            emitted.add(into)
    weights: dict[tuple[str, str], float] = {}
    for link in doc.links:
        s = rename.get(str(link["source"]), str(link["source"]))
        t = rename.get(str(link["target"]), str(link["target"]))
        if s == t and s in merged:
            continue
        weights[(s, t)] = weights.get((s, t), 0.0) + float(link["weight"])
    links = [{"source": s, "target": t, "weight": w} for (s, t), w in weights.items()]
    out = GraphFile.model_validate({"metadata": doc.metadata.model_copy(deep=True),
                                    "nodes": new_nodes, "links": links})  # fmt: skip
    info = dict(out.metadata.info or {})
    info["coarsened"] = {"n_supernodes": len(supernodes), "n_nodes_before": len(doc.nodes)}
    out.metadata.info = info
    return out


def _layer_num(layer: str) -> float:
    return -1.0 if layer == "E" else float(layer)
