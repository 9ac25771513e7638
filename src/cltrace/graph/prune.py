"""Two-step pruning of an attribution graph (docs/METHODS.md §2).

1. Nodes: keep the most influential nodes until they hold ``node_threshold`` of the total node
   influence; token and logit nodes are always kept.
2. Edges: on the node-pruned graph, recompute ``Â`` and the influence, score each edge by
   ``Â_pruned[t, s] · (inf_t + w_logit,t)`` (its share of the output flowing through ``t``) and
   keep the best edges until they hold ``edge_threshold`` of the total edge score.

Then, until nothing changes, drop feature and error nodes left without outgoing edges and feature
nodes left without incoming edges. A threshold of 1.0 disables its step; with both at 1.0 the
graph comes back whole (every node, every non-zero edge).

Masks follow the graph's own layout: ``node_mask`` over nodes, ``edge_mask`` over the rectangular
adjacency ``[targets, sources]``, so no square matrix is formed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from cltrace.errors import CltraceError
from cltrace.graph.influence import logit_weights, normalized_adjacency, propagated_influence
from cltrace.graph.nodes import Graph, NodeIndex


@dataclass
class GraphPruneConfig:
    """Thresholds of :func:`prune_graph` (defaults from Ameisen, Lindsey et al. 2025)."""

    node_threshold: float = 0.8
    """Keep the most influential nodes holding this fraction of total node influence."""
    edge_threshold: float = 0.98
    """Keep the best-scored edges holding this fraction of the total edge score."""

    def __post_init__(self) -> None:
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CltraceError(
                    f"{name.replace('_', '-')} is {value}; pass a fraction between 0 and 1."
                )


@dataclass
class PruneResult:
    """Which nodes and edges survive pruning, with the influence values that decided it."""

    node_mask: Bool[Tensor, " n_nodes"]
    """Nodes of the pruned graph."""
    edge_mask: Bool[Tensor, "n_targets n_sources"]
    """Edges of the pruned graph (only non-zero edges between kept nodes)."""
    influence_mask: Bool[Tensor, " n_nodes"]
    """Nodes kept by the node threshold alone, before edge pruning and clean-up."""
    influence: Float[Tensor, " n_nodes"]
    """Influence of each node on the logits in the unpruned graph."""
    cumulative: Float[Tensor, " n_nodes"]
    """Share of total influence held by this node and every more influential one (its rank as
    a fraction: a node is kept at node threshold ``x`` when this is at most about ``x``)."""
    config: GraphPruneConfig = field(default_factory=GraphPruneConfig)

    @property
    def n_nodes(self) -> int:
        return int(self.node_mask.sum())

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())


def cover_threshold(scores: Float[Tensor, " n"], fraction: float) -> float:
    """Smallest score among the top scores that together hold ``fraction`` of the total.

    Keeping ``scores >= cover_threshold(scores, f)`` keeps at least ``f`` of the total. With
    ``fraction >= 1`` every score is kept (returns ``-inf``).
    """
    if fraction >= 1.0:
        return float("-inf")
    flat = scores.detach().flatten()
    ordered = torch.sort(flat[flat > 0], descending=True).values.double()
    if ordered.numel() == 0:
        return float("inf")
    cum = ordered.cumsum(0) / ordered.sum()
    i = int(torch.searchsorted(cum, torch.tensor([fraction], dtype=cum.dtype)))
    return float(ordered[min(i, ordered.numel() - 1)])


def cumulative_influence(influence: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Per node, the share of total influence held by it and all nodes ranked above it."""
    order = torch.argsort(influence, descending=True, stable=True)
    total = influence.sum()
    cum = influence[order].cumsum(0) / (total if total > 0 else 1.0)
    out = torch.zeros_like(influence)
    out[order] = cum
    return out


def _clean_up(
    index: NodeIndex, node_mask: Tensor, edge_mask: Tensor
) -> tuple[Bool[Tensor, " n_nodes"], Bool[Tensor, "n_targets n_sources"]]:
    """Drop nodes left without the edges they need until stable (each round can orphan more)."""
    targets = index.target_nodes()
    n_feat, tok = index.n_features, index.token_start
    node_mask = node_mask.clone()
    while True:
        edge_mask = edge_mask & node_mask[targets][:, None] & node_mask[: index.n_sources][None]
        new = node_mask.clone()
        new[:tok] &= edge_mask[:, :tok].any(0)  # features and errors need an outgoing edge
        new[:n_feat] &= edge_mask[:n_feat].any(1)  # features need an incoming edge
        if torch.equal(new, node_mask):
            return node_mask, edge_mask
        node_mask = new


def prune_graph(graph: Graph, config: GraphPruneConfig | None = None) -> PruneResult:
    """Node masks and edge masks of the pruned graph (see the module docstring)."""
    cfg = config or GraphPruneConfig()
    idx = graph.index
    targets = idx.target_nodes()
    influence = propagated_influence(normalized_adjacency(graph.adjacency), idx, graph.logit_probs)

    node_mask = influence >= cover_threshold(influence, cfg.node_threshold)
    node_mask[idx.token_start :] = True  # tokens and logits always stay
    influence_mask = node_mask.clone()

    keep_pair = node_mask[targets][:, None] & node_mask[: idx.n_sources][None]
    adjacency = graph.adjacency.detach()
    nonzero = adjacency != 0
    if cfg.edge_threshold >= 1.0:
        edge_mask = nonzero & keep_pair
    else:
        norm_p = normalized_adjacency(torch.where(keep_pair, adjacency, 0.0))
        inf_p = propagated_influence(norm_p, idx, graph.logit_probs)
        weight = (inf_p + logit_weights(graph).to(inf_p.dtype))[targets]
        scores = norm_p.mul_(weight[:, None])  # in place: this is the largest tensor here
        edge_mask = (scores >= cover_threshold(scores, cfg.edge_threshold)) & nonzero & keep_pair

    if cfg.node_threshold < 1.0 or cfg.edge_threshold < 1.0:
        node_mask, edge_mask = _clean_up(idx, node_mask, edge_mask)
    return PruneResult(
        node_mask=node_mask,
        edge_mask=edge_mask,
        influence_mask=influence_mask,
        influence=influence,
        cumulative=cumulative_influence(influence),
        config=cfg,
    )
