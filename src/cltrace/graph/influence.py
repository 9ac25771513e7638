"""Node influence on the logits and the graph scores of docs/METHODS.md §2.

All quantities are built from ``Â`` = the row-normalised ``|A|`` (rows = targets): each target's
inputs are turned into shares that sum to 1. Indirect influence is ``B = Â + Â² + …`` and the
influence of every node on the output is ``inf = w_logit · B`` with ``w_logit`` = the logit
nodes' probabilities (Ameisen, Lindsey et al. 2025, "Circuit Tracing").

Only features and logits have inputs and logits have no outputs, so ``v · Â`` only needs the
rectangular adjacency: a row vector over targets times ``Â[targets, sources]`` gives a vector over
sources, whose feature part is the next row vector. Features only read from lower layers, so the
feature block is nilpotent and the iteration reaches exactly zero after at most ``n_layers``
steps; no square matrix over errors and tokens is ever formed.

Pruned graphs: a feature outside the node mask keeps its outgoing edges but loses its inputs and
counts as an error node, i.e. the part of the model it stood for becomes unexplained.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from cltrace.graph.nodes import Graph, NodeIndex


@dataclass
class GraphScores:
    """Replacement and completeness of a graph (docs/METHODS.md §2), both in [0, 1]."""

    replacement: float
    """Share of end-to-end token→logit influence that avoids error nodes."""
    completeness: float
    """Influence-weighted share of each node's normalised input that comes from non-error nodes."""


@dataclass
class PathLengths:
    """Token influence split by the number of edges on the paths that carry it."""

    by_length: list[float]
    """``by_length[l - 1]``: token influence along paths of exactly ``l`` edges, divided by the
    total token influence of the unpruned graph."""
    mean: float
    """Average path length ``Σ l·m_l / Σ m_l`` (0 when no token reaches a logit)."""

    @property
    def cumulative(self) -> list[float]:
        """``P_l``: influence carried by paths of at most ``l`` edges (normalised as above)."""
        out, total = [], 0.0
        for m in self.by_length:
            total += m
            out.append(total)
        return out


def normalized_adjacency(
    adjacency: Float[Tensor, "n_targets n_sources"],
) -> Float[Tensor, "n_targets n_sources"]:
    """``|A|`` with each row scaled to sum to 1 (rows without inputs stay zero)."""
    a = adjacency.detach().abs().to(torch.promote_types(adjacency.dtype, torch.float32))
    # empty rows are all zero, so dividing them by the clamp leaves them zero
    return a.div_(a.sum(1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny))


def logit_weights(graph: Graph) -> Float[Tensor, " n_nodes"]:
    """``w_logit`` over all nodes: the logit probabilities, zero elsewhere."""
    probs = graph.logit_probs.detach()
    w = torch.zeros(graph.index.n_nodes, dtype=torch.promote_types(probs.dtype, torch.float32))
    w[graph.index.logits()] = probs.to(w.dtype)
    return w


def influence_steps(
    norm: Float[Tensor, "n_targets n_sources"],
    index: NodeIndex,
    logit_probs: Float[Tensor, " n_logits"],
) -> Iterator[Float[Tensor, " n_sources"]]:
    """``w_logit · Â^l`` restricted to source nodes, for ``l = 1, 2, …`` until it is zero.

    Raises ``ValueError`` if the feature block is not acyclic (the sequence would never end).
    """
    n_feat = index.n_features
    current = logit_probs.detach().to(norm.dtype) @ norm[n_feat:]
    for _ in range(n_feat + 1):
        if not current.any():
            return
        yield current
        current = current[:n_feat] @ norm[:n_feat]
    if current.any():
        raise ValueError("the feature-to-feature adjacency has a cycle; influence diverges")


def propagated_influence(
    norm: Float[Tensor, "n_targets n_sources"], index: NodeIndex, logit_probs: Tensor
) -> Float[Tensor, " n_nodes"]:
    """``w_logit · (Â + Â² + …)`` for a given ``Â`` (e.g. one with some rows removed)."""
    total = torch.zeros(index.n_nodes, dtype=norm.dtype)
    for step in influence_steps(norm, index, logit_probs):
        total[: index.n_sources] += step
    return total


def node_influence(graph: Graph) -> Float[Tensor, " n_nodes"]:
    """``inf = w_logit · (Â + Â² + …)`` for every node (zero for logit nodes)."""
    return propagated_influence(
        normalized_adjacency(graph.adjacency), graph.index, graph.logit_probs
    )


def _masked(
    graph: Graph, node_mask: Bool[Tensor, " n_nodes"] | None
) -> tuple[Float[Tensor, "n_targets n_sources"], Bool[Tensor, " n_sources"]]:
    """``Â`` with pruned features made input-less, and the columns that count as errors."""
    idx = graph.index
    norm = normalized_adjacency(graph.adjacency)
    error_cols = torch.zeros(idx.n_sources, dtype=torch.bool)
    error_cols[idx.errors()] = True
    if node_mask is not None:
        if node_mask.shape != (idx.n_nodes,):
            raise ValueError(f"node_mask has shape {tuple(node_mask.shape)}, not ({idx.n_nodes},)")
        dropped = ~node_mask[: idx.n_features].to(torch.bool)
        norm[: idx.n_features][dropped] = 0.0
        error_cols[: idx.n_features] |= dropped
    return norm, error_cols


def graph_scores(graph: Graph, node_mask: Bool[Tensor, " n_nodes"] | None = None) -> GraphScores:
    """Replacement and completeness scores; with ``node_mask`` those of the pruned graph.

    Completeness sums over every node: nodes without inputs (errors, tokens, and pruned features)
    count as fully non-error, each weighted by ``inf_n + w_logit,n``.
    """
    idx = graph.index
    norm, error_cols = _masked(graph, node_mask)
    inf = propagated_influence(norm, idx, graph.logit_probs)
    token = inf[idx.tokens()].sum()
    error = inf[: idx.n_sources][error_cols].sum()
    leaves = token + error
    replacement = float(token / leaves) if leaves > 0 else 0.0

    non_error = torch.ones(idx.n_nodes, dtype=norm.dtype)
    non_error[idx.target_nodes()] = 1.0 - norm[:, error_cols].sum(1)
    weight = inf + logit_weights(graph).to(norm.dtype)
    completeness = float((non_error * weight).sum() / weight.sum()) if weight.sum() > 0 else 0.0
    return GraphScores(replacement=replacement, completeness=completeness)


def path_lengths(graph: Graph, node_mask: Bool[Tensor, " n_nodes"] | None = None) -> PathLengths:
    """Token influence per path length and its mean (docs/METHODS.md §2, reconstructed formula).

    ``m_l = Σ_tokens (w_logit · Â^l)`` is ``P_l − P_{l−1}``; a token→logit edge has length 1.
    Shares are divided by the unpruned graph's total token influence, so with ``node_mask`` they
    sum to less than 1 (paths through pruned features end there).
    """
    idx = graph.index
    norm, _ = _masked(graph, node_mask)
    tokens = idx.tokens()
    by_length = [
        float(step[tokens].sum()) for step in influence_steps(norm, idx, graph.logit_probs)
    ]
    if node_mask is None:
        reference = sum(by_length)
    else:
        reference = float(node_influence(graph)[tokens].sum())
    masses = torch.tensor(by_length, dtype=torch.float64)
    while masses.numel() and masses[-1] == 0:
        masses = masses[:-1]
    total = float(masses.sum())
    mean = float((torch.arange(1, masses.numel() + 1) * masses).sum() / total) if total else 0.0
    shares = [m / reference if reference > 0 else 0.0 for m in masses.tolist()]
    return PathLengths(by_length=shares, mean=mean)
