"""Attribution-graph influence as a stage-I score (docs/METHODS.md §4, optional extra).

The clean prompt's attribution graph (docs/METHODS.md §2) is built with one custom logit node, the
logit-difference direction ``W_U[:, answer] - W_U[:, wrong]``; every feature node is scored by
its influence on that node, ``inf = w_logit · (Â + Â² + …)`` with ``Â`` the row-normalised
``|A|`` (docs/METHODS.md §2, :func:`cltrace.graph.influence.node_influence`). Graph feature nodes
are (layer, position, feature) triples, i.e. occurrences active on the clean prompt; occurrences
active only on the corrupted prompt are not in the graph and score 0. Influence is non-negative,
so ranking by |score| is ranking by influence.

Cost per prompt: the graph's forward passes plus ``ceil((n_clean_active + 1) / batch_size)``
backward passes of the attribution (one row per active clean feature and one for the logit).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from cltrace.graph import attribute, logit_difference_direction
from cltrace.graph.influence import node_influence
from cltrace.graph.nodes import NodeIndex
from cltrace.prune.components import PairComponents, occurrence_key
from cltrace.prune.methods import ScoreContext
from cltrace.prune.writes import CPU


def node_values_to_occurrences(
    comps: PairComponents,
    index: NodeIndex,
    values: Float[Tensor, " n_features"],
    d_features: int,
) -> Float[Tensor, " n"]:
    """Place a value per graph feature node on the matching occurrence (0 where none matches)."""
    T = comps.n_pos
    keys = occurrence_key(comps.layer, comps.position, comps.feature, T, d_features)  # ascending
    # graph indices may sit on the model's device; occurrences are CPU bookkeeping
    node_keys = occurrence_key(index.feat_layer, index.feat_pos, index.feat_id, T, d_features).cpu()
    out = torch.zeros(comps.n, device=CPU)
    if comps.n == 0 or node_keys.numel() == 0:
        return out
    at = torch.searchsorted(keys, node_keys).clamp(max=comps.n - 1)
    found = keys[at] == node_keys
    out[at[found]] = values.cpu()[found].float()
    return out


def graph_influence_scores(ctx: ScoreContext) -> Float[Tensor, " units"]:
    """Each unit's summed node influence on the logit-difference node."""
    comps = ctx.comps
    graph = attribute(
        comps.adapter,
        ctx.transcoder,
        comps.tokens,
        direction=logit_difference_direction(comps.adapter, comps.answer, comps.wrong),
    )
    inf = node_influence(graph)[graph.index.features()]
    return ctx.pool(node_values_to_occurrences(comps, graph.index, inf, ctx.transcoder.d_features))
