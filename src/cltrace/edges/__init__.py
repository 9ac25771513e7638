"""Edge-level circuits of attention heads and MLPs: the computational graph, the masked
forward, attribution scores (EAP, EAP-IG), Edge Pruning and the hybrid HAP, and evaluation."""

from cltrace.edges.context import INTERVENTIONS, EdgeContext, prepare
from cltrace.edges.data import PairBatch, make_batches
from cltrace.edges.evaluate import (
    BUDGETS,
    evaluate_circuit,
    faithfulness,
    faithfulness_curve,
    top_edges,
)
from cltrace.edges.forward import MaskedRun, graph_of, masked_forward
from cltrace.edges.graph import EdgeGraph
from cltrace.edges.mib import MIB_BUDGETS, graph_json, read_graph_json, write_submission
from cltrace.edges.pruning import PruneConfig, edge_prune, hap
from cltrace.edges.roles import HeadRoles, head_roles
from cltrace.edges.run import METHODS, EdgeOptions, EdgeRun, find_circuit, find_curve
from cltrace.edges.scores import SCORERS, eap, eap_ig_activations, eap_ig_inputs, score_edges

__all__ = [
    "BUDGETS",
    "INTERVENTIONS",
    "METHODS",
    "MIB_BUDGETS",
    "SCORERS",
    "EdgeContext",
    "EdgeGraph",
    "EdgeOptions",
    "EdgeRun",
    "HeadRoles",
    "MaskedRun",
    "PairBatch",
    "PruneConfig",
    "eap",
    "eap_ig_activations",
    "eap_ig_inputs",
    "edge_prune",
    "evaluate_circuit",
    "faithfulness",
    "faithfulness_curve",
    "find_circuit",
    "find_curve",
    "graph_json",
    "graph_of",
    "hap",
    "head_roles",
    "make_batches",
    "masked_forward",
    "prepare",
    "read_graph_json",
    "score_edges",
    "top_edges",
    "write_submission",
]
