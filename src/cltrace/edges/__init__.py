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
from cltrace.edges.pruning import PruneConfig, edge_prune, hap
from cltrace.edges.run import METHODS, EdgeOptions, find_circuit, find_curve
from cltrace.edges.scores import SCORERS, eap, eap_ig_activations, eap_ig_inputs, score_edges

__all__ = [
    "BUDGETS",
    "INTERVENTIONS",
    "METHODS",
    "SCORERS",
    "EdgeContext",
    "EdgeGraph",
    "EdgeOptions",
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
    "graph_of",
    "hap",
    "make_batches",
    "masked_forward",
    "prepare",
    "score_edges",
    "top_edges",
]
