"""Attribution graphs for the API: :func:`attribute` and its result objects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cltrace.errors import CltraceError

if TYPE_CHECKING:
    from cltrace.graph import Graph
    from cltrace.graph.influence import GraphScores
    from cltrace.graph.prune import PruneResult as GraphPruneResult
    from cltrace.models.adapter import ModelAdapter


def _write(
    graph: Graph,
    result: GraphPruneResult,
    model: ModelAdapter,
    path,
    scan: str | None = None,
    descriptions: Mapping[tuple[int, int], str] | None = None,
) -> Path:
    from cltrace.graph.export import save_graph

    decode = model.tokenizer.decode
    return save_graph(graph, result, path, scan=scan, decode=decode, descriptions=descriptions)


@dataclass
class PrunedGraph:
    """An attribution graph after node and edge pruning (what ``cltrace attribute`` writes)."""

    graph: Graph = field(repr=False)
    """The full attribution graph it was pruned from."""
    result: GraphPruneResult = field(repr=False)
    """Node and edge masks with the influence values that decided them."""
    model: ModelAdapter = field(repr=False)
    """The model the graph was computed on (names its tokens in the JSON)."""
    scores: GraphScores = field(repr=False)
    """Replacement and completeness of the pruned graph."""

    @property
    def node_threshold(self) -> float:
        """Share of node influence the kept nodes hold."""
        return self.result.config.node_threshold

    @property
    def edge_threshold(self) -> float:
        """Share of edge score the kept edges hold."""
        return self.result.config.edge_threshold

    @property
    def n_nodes(self) -> int:
        """Nodes kept (features, errors, tokens and logits)."""
        return self.result.n_nodes

    @property
    def n_edges(self) -> int:
        """Edges kept."""
        return self.result.n_edges

    @property
    def n_features(self) -> int:
        """Feature nodes kept."""
        return int(self.result.node_mask[self.graph.index.features()].sum())

    @property
    def replacement_score(self) -> float:
        """Replacement score of the pruned graph, in [0, 1]."""
        return self.scores.replacement

    @property
    def completeness_score(self) -> float:
        """Completeness score of the pruned graph, in [0, 1]."""
        return self.scores.completeness

    def save(
        self,
        path: str | os.PathLike,
        scan: str | None = None,
        descriptions: Mapping[tuple[int, int], str] | None = None,
    ) -> Path:
        """Write the graph JSON viewers read to ``path`` (``NAME.json``, or a folder for
        ``graph.json``) and list it in ``graph-metadata.json`` beside it; returns the file.
        ``scan`` names the transcoder for viewers (see :func:`cltrace.graph.export.transcoder_scan`;
        default: the transcoder's model name); ``descriptions`` maps ``(layer, feature)`` to the
        label written in ``clerp`` (see :func:`cltrace.graph.export.read_descriptions`)."""
        return _write(self.graph, self.result, self.model, path, scan, descriptions)

    def __str__(self) -> str:
        return (
            f"pruned graph: {self.n_nodes} nodes ({self.n_features} features), "
            f"{self.n_edges} edges; replacement {self.replacement_score:.3f}, completeness "
            f"{self.completeness_score:.3f} (node threshold {self.node_threshold}, edge "
            f"threshold {self.edge_threshold})"
        )

    def __repr__(self) -> str:
        return (
            f"PrunedGraph(n_nodes={self.n_nodes}, n_features={self.n_features}, "
            f"n_edges={self.n_edges}, replacement_score={self.replacement_score:.4f}, "
            f"completeness_score={self.completeness_score:.4f})"
        )


@dataclass
class AttributionGraph:
    """The attribution graph of one prompt, with its scores (result of :func:`attribute`)."""

    graph: Graph = field(repr=False)
    """The underlying :class:`cltrace.graph.Graph` (adjacency, node index, logits)."""
    model: ModelAdapter = field(repr=False)
    """The model the graph was computed on."""
    scores: GraphScores = field(repr=False)
    """Replacement and completeness of the unpruned graph."""

    @property
    def prompt(self) -> str:
        """The prompt the graph explains."""
        return self.graph.prompt

    @property
    def replacement_score(self) -> float:
        """Share of token→logit influence that avoids error nodes, in [0, 1]."""
        return self.scores.replacement

    @property
    def completeness_score(self) -> float:
        """Influence-weighted share of node inputs that come from non-error nodes, in [0, 1]."""
        return self.scores.completeness

    @property
    def n_nodes(self) -> int:
        """All nodes: features, errors, tokens and logits."""
        return self.graph.index.n_nodes

    @property
    def n_features(self) -> int:
        """Feature nodes (active transcoder features at their positions)."""
        return self.graph.index.n_features

    @property
    def n_edges(self) -> int:
        """Non-zero edges."""
        return int((self.graph.adjacency != 0).sum())

    @property
    def n_logits(self) -> int:
        """Logit nodes (the target tokens)."""
        return self.graph.index.n_logits

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PrunedGraph:
        """Keep the nodes holding ``node_threshold`` of the influence, then the edges holding
        ``edge_threshold`` of the edge score (1.0 keeps everything); the defaults are those of
        ``cltrace attribute``."""
        from cltrace.graph.influence import graph_scores
        from cltrace.graph.prune import GraphPruneConfig, prune_graph

        cfg = GraphPruneConfig(node_threshold=node_threshold, edge_threshold=edge_threshold)
        result = prune_graph(self.graph, cfg)
        scores = graph_scores(self.graph, result.node_mask)
        return PrunedGraph(self.graph, result, self.model, scores)

    def save(
        self, path: str | os.PathLike, node_threshold: float = 0.8, edge_threshold: float = 0.98
    ) -> Path:
        """Write the graph JSON to ``path``, pruned as by :meth:`prune` (the same file
        ``cltrace attribute --out path`` writes; pass 1.0 and 1.0 for the whole graph)."""
        return self.prune(node_threshold, edge_threshold).save(path)

    def __str__(self) -> str:
        return (
            f"attribution graph of {self.prompt!r}: {self.n_nodes} nodes ({self.n_features} "
            f"features, {self.n_logits} logits), {self.n_edges} edges; replacement "
            f"{self.replacement_score:.3f}, completeness {self.completeness_score:.3f}"
        )

    def __repr__(self) -> str:
        return (
            f"AttributionGraph(prompt={self.prompt!r}, n_nodes={self.n_nodes}, "
            f"n_features={self.n_features}, replacement_score={self.replacement_score:.4f}, "
            f"completeness_score={self.completeness_score:.4f})"
        )


def check_inputs(
    adapter: ModelAdapter,
    prompt: str,
    targets: list[str],
    allow_unk: bool = False,
    prompt_name: str = "the prompt",
    target_name: str = "target",
    error: type[CltraceError] = CltraceError,
) -> None:
    """Refuse a prompt or target the model cannot use, naming it as ``prompt_name`` /
    ``target_name`` in an ``error``; with ``allow_unk`` unknown prompt words only warn."""
    import warnings

    from cltrace.models.adapter import describe_words

    unknown = adapter.check_prompt(prompt, prompt_name, allow_unk=allow_unk, error=error)
    if unknown:
        warnings.warn(
            f"{prompt_name} has {describe_words(unknown)} that the tokenizer does not know; "
            f"unknown words are read as {adapter.tokenizer.unk_token}.",
            stacklevel=3,
        )
    for target in targets:
        try:
            adapter.single_token_id(target, what=target_name)
        except CltraceError as exc:
            raise error(str(exc)) from None


def attribute_checked(
    adapter: ModelAdapter,
    transcoder,
    prompt: str,
    targets: list[str],
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    token_nodes: str = "cltrace",
) -> AttributionGraph:
    """:func:`attribute` on loaded objects whose inputs :func:`check_inputs` already passed."""
    from cltrace.graph import AttributionConfig
    from cltrace.graph import attribute as _attribute
    from cltrace.graph.influence import graph_scores

    cfg = AttributionConfig(
        max_feature_nodes=max_feature_nodes, batch_size=batch_size, token_nodes=token_nodes
    )
    graph = _attribute(adapter, transcoder, prompt, targets=targets or None, config=cfg)
    return AttributionGraph(graph, adapter, graph_scores(graph))


def attribute(
    model,
    transcoder,
    prompt: str,
    targets: list[str] | None = None,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    allow_unk: bool = False,
    token_nodes: str = "cltrace",
) -> AttributionGraph:
    """The attribution graph of ``prompt`` (BOS is prepended), scored; nothing is written.

    ``model`` and ``transcoder`` are loaded objects or names (``None``: the bundled ones).
    ``targets`` are single-token logit targets (default: the most likely next tokens);
    ``max_feature_nodes`` keeps at most that many feature nodes, by influence. Unknown prompt
    words are an error unless ``allow_unk`` (then read as the unk token, with a warning).
    ``token_nodes="circuit-tracer"`` defines token nodes and the BOS errors as circuit-tracer
    does (see :class:`cltrace.graph.AttributionConfig`).
    """
    from cltrace.api.loading import as_model, as_transcoder

    adapter = as_model(model)
    tc = as_transcoder(transcoder, adapter)
    check_inputs(adapter, prompt, list(targets or []), allow_unk)
    return attribute_checked(adapter, tc, prompt, list(targets or []), max_feature_nodes,
                             batch_size, token_nodes)  # fmt: skip


__all__: list[Any] = ["AttributionGraph", "PrunedGraph", "attribute"]
