"""Edge-level circuits of attention heads and MLPs: the computational graph, the masked
forward, attribution scores (EAP, EAP-IG), Edge Pruning and the hybrid HAP, and evaluation."""

from cltrace.edges.forward import MaskedRun, graph_of, masked_forward
from cltrace.edges.graph import EdgeGraph

__all__ = ["EdgeGraph", "MaskedRun", "graph_of", "masked_forward"]
