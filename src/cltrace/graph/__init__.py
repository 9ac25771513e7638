"""Attribution graphs: node index, exact edges, influence and pruning, scores, export."""

from cltrace.graph.attribute import AttributionConfig, attribute, logit_difference_direction
from cltrace.graph.export import graph_document, load_graph_json, write_graph_json
from cltrace.graph.influence import graph_scores, node_influence, path_lengths
from cltrace.graph.nodes import Graph, NodeIndex, NodeKind
from cltrace.graph.prune import GraphPruneConfig, prune_graph

__all__ = [
    "AttributionConfig",
    "Graph",
    "NodeIndex",
    "NodeKind",
    "GraphPruneConfig",
    "attribute",
    "graph_document",
    "graph_scores",
    "load_graph_json",
    "logit_difference_direction",
    "node_influence",
    "path_lengths",
    "prune_graph",
    "write_graph_json",
]
